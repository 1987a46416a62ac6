#!/usr/bin/env bash
# Builds the tools the tests use besides the control plane: helm (hack/helm/go.mod) and promtool
# (hack/promtool/go.mod), from their pinned Go modules, into a cache outside the repository keyed
# by those pins and the Go version. A second run with the same pins does nothing. The last line
# printed on stdout is the directory holding the binaries; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${SIDECAR_OPERATOR_CACHE:-$HOME/.cache/sidecar-operator}

command -v go >/dev/null || { echo "build-tools: the Go toolchain (go) is not on PATH" >&2; exit 1; }

pin() {  # pin <go.mod> <module>: the version it requires
  awk -v m="$2" '$1 == m {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1"
}
helm_version=$(pin "$here/helm/go.mod" helm.sh/helm/v4)
prometheus_version=$(pin "$here/promtool/go.mod" github.com/prometheus/prometheus)
key=$( { go version; cat "$here"/helm/go.mod "$here"/helm/go.sum "$here"/promtool/go.mod \
          "$here"/promtool/go.sum "$0"; } | sha256sum | cut -c1-12)
out="$cache_root/tools/helm-$helm_version-promtool-$prometheus_version-$key"
bin="$out/bin"

if [[ -f "$out/.complete" ]]; then
  echo "$bin"
  exit 0
fi

export GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
mkdir -p "$bin"
start=$SECONDS

build() {  # build <label> <module dir> <output> <package> [ldflags] [tags]
  local label=$1 dir=$2 output=$3 package=$4 ldflags=${5:-} tags=${6:-} t0=$SECONDS log
  echo "build-tools: building $label ..." >&2
  log=$(mktemp)
  if ! (cd "$dir" && go build -trimpath -tags="$tags" -ldflags="-s -w $ldflags" -o "$output" "$package") >"$log" 2>&1; then
    echo "build-tools: building $label FAILED after $((SECONDS - t0))s:" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "build-tools: built $label in $((SECONDS - t0))s (total $((SECONDS - start))s)" >&2
}

echo "build-tools: helm $helm_version and promtool $prometheus_version into $out (a cold build takes a few minutes on 2 cores)" >&2
# Helm prints its version from these variables; without them `helm version` says v4-unreleased.
build "helm $helm_version" "$here/helm" "$bin/helm" helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$helm_version"
# Without the service-discovery plugins (Prometheus' own build tag): the tests check and unit-test
# rules only, and the cloud SDKs those plugins bring are a third of the binary and more of the
# build (cold on 2 cores: 420 s with them, modules downloaded too; 204 s without, compiling only).
build "promtool $prometheus_version" "$here/promtool" "$bin/promtool" \
  github.com/prometheus/prometheus/cmd/promtool "" remove_all_sd

printf 'helm=%s\nprometheus=%s\n' "$helm_version" "$prometheus_version" >"$out/versions"
touch "$out/.complete"
echo "build-tools: done in $((SECONDS - start))s" >&2
echo "$bin"
