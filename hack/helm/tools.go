//go:build tools

// Pins Helm's command in this module's go.mod, so `go build helm.sh/helm/v4/cmd/helm` builds
// the pinned release.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
