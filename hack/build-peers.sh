#!/usr/bin/env bash
# Builds the peers `python -m bench --peers` measures (Kyverno's background controller, the
# process behind mutate-existing policies) from the Go module pinned in hack/peers/kyverno/go.mod,
# into a cache outside the repository keyed by that pin and the Go version, with the CRDs of the
# same module under crds/. A second run does nothing. Never run by `make test`. The last line
# printed on stdout is the directory; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${SIDECAR_OPERATOR_CACHE:-$HOME/.cache/sidecar-operator}
module="$here/peers/kyverno"

command -v go >/dev/null || { echo "build-peers: the Go toolchain (go) is not on PATH" >&2; exit 1; }

version=$(awk '$1 == "github.com/kyverno/kyverno" {print $2; exit}' "$module/go.mod")
key=$( { go version; cat "$module/go.mod" "$module/go.sum" "$0"; } | sha256sum | cut -c1-12)
out="$cache_root/peers/kyverno-$version-$key"

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

export GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
mkdir -p "$out"
echo "build-peers: building Kyverno $version's background controller into $out (about 5 minutes on 2 cores)" >&2
start=$SECONDS
log=$(mktemp)
if ! (cd "$module" && go build -trimpath -ldflags="-s -w" -o "$out/background-controller" \
        github.com/kyverno/kyverno/cmd/background-controller) >"$log" 2>&1; then
  echo "build-peers: building Kyverno FAILED after $((SECONDS - start))s:" >&2
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
source_dir=$(cd "$module" && go list -m -f '{{.Dir}}' github.com/kyverno/kyverno)
rm -rf "$out/crds"
cp -r "$source_dir/config/crds" "$out/crds"
chmod -R u+w "$out/crds"
touch "$out/.complete"
echo "build-peers: built in $((SECONDS - start))s" >&2
echo "$out"
