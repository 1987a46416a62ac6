#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd,
# kwok) from the Go modules pinned in hack/controlplane/go.mod and hack/kwok/go.mod, into a cache
# outside the repository keyed by those pins and the Go version. A second run with the same pins
# does nothing. The last line printed on stdout is the directory holding the binaries; progress
# goes to stderr so callers can capture that line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${SIDECAR_OPERATOR_CACHE:-$HOME/.cache/sidecar-operator}

command -v go >/dev/null || { echo "build-control-plane: the Go toolchain (go) is not on PATH" >&2; exit 1; }

k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/controlplane/go.mod")
key=$( { go version; cat "$here"/controlplane/go.mod "$here"/controlplane/go.sum \
          "$here"/controlplane/cmd/*/main.go "$here"/kwok/go.mod "$here"/kwok/go.sum "$0"; } \
        | sha256sum | cut -c1-12)
out="$cache_root/$k8s_version-$key"
bin="$out/bin"

if [[ -f "$out/.complete" ]]; then
  echo "$bin"
  exit 0
fi

export GOMODCACHE="$cache_root/go/mod" GOCACHE="$cache_root/go/build" CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
mkdir -p "$bin"
start=$SECONDS

build() {  # build <label> <module dir> <output> <package> [ldflags]
  local label=$1 dir=$2 output=$3 package=$4 ldflags=${5:-} t0=$SECONDS log
  echo "build-control-plane: building $label ..." >&2
  log=$(mktemp)
  if ! (cd "$dir" && go build -trimpath -ldflags="-s -w $ldflags" -o "$output" "$package") >"$log" 2>&1; then
    echo "build-control-plane: building $label FAILED after $((SECONDS - t0))s:" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "build-control-plane: built $label in $((SECONDS - t0))s (total $((SECONDS - start))s)" >&2
}

echo "build-control-plane: Kubernetes $k8s_version into $out (a cold build takes about 10 minutes on 2 cores)" >&2
# The version the API server reports (`kubectl version`, Helm's kubeVersion check), as
# Kubernetes' own release build sets it; left out, it is v0.0.0-master.
minor=${k8s_version#v1.}; minor=${minor%%.*}
version_flags="-X k8s.io/component-base/version.gitVersion=$k8s_version"
version_flags+=" -X k8s.io/component-base/version.gitMajor=1"
version_flags+=" -X k8s.io/component-base/version.gitMinor=$minor"
version_flags+=" -X k8s.io/component-base/version.gitTreeState=clean"
build "kube-apiserver, kube-controller-manager, kube-scheduler ($k8s_version, one multi-call binary)" \
  "$here/controlplane" "$bin/kube" ./cmd/kube "$version_flags"
for component in kube-apiserver kube-controller-manager kube-scheduler; do
  ln -sf kube "$bin/$component"
done
build "etcd $(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$here/controlplane/go.mod")" \
  "$here/controlplane" "$bin/etcd" ./cmd/etcd
kwok_version=$(awk '$1 == "sigs.k8s.io/kwok" {print $2; exit}' "$here/kwok/go.mod")
build "kwok $kwok_version" "$here/kwok" "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok

# kwok's own stages: Nodes turn Ready and keep their heartbeat (so the node-lifecycle controller
# lifts the not-ready taint), Pods turn Running and Ready, deleted Pods go away.
kwok_dir=$(cd "$here/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
for stage in "$kwok_dir"/kustomize/stage/node/fast/node-initialize.yaml \
             "$kwok_dir"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             "$kwok_dir"/kustomize/stage/pod/fast/pod-*.yaml; do
  echo "---"
  cat "$stage"
done >"$out/kwok-stages.yaml"

# The release's own OpenAPI document: the CRD embeds its core/v1 Container, Volume and VolumeMount.
mkdir -p "$out/openapi"
cp "$(cd "$here/controlplane" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/api/openapi-spec/v3/api__v1_openapi.json" \
  "$out/openapi/"
chmod u+w "$out/openapi/api__v1_openapi.json"

printf 'kubernetes=%s\nkwok=%s\n' "$k8s_version" "$kwok_version" >"$out/versions"
touch "$out/.complete"
echo "build-control-plane: done in $((SECONDS - start))s" >&2
echo "$bin"
