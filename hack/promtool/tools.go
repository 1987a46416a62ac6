//go:build tools

// Pins promtool in this module's go.mod, so `go build .../cmd/promtool` builds the pinned
// release.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
