#!/usr/bin/env bash
# `make demo`: the local cluster, the CRD, the operator in the background and the samples.
# `hack/demo.sh down` stops the operator and the cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=.venv/bin
cluster_dir="${SIDECAR_OPERATOR_CACHE:-$HOME/.cache/sidecar-operator}/clusters/dev"
pid_file="$cluster_dir/operator.pid"
log_file="$cluster_dir/operator.log"

operator_running() { [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

if [[ "${1:-up}" == "down" ]]; then
  if operator_running; then kill "$(cat "$pid_file")"; echo "demo: operator stopped"; fi
  rm -f "$pid_file"
  "$bin/sidecar-operator" dev down
  exit 0
fi

eval "$("$bin/sidecar-operator" dev up)"
kubectl=("$bin/kubectl")
"${kubectl[@]}" apply --server-side --force-conflicts -k crds/ >/dev/null
# `kubectl wait` fails outright while a new CRD has no conditions yet: retry it.
for _ in $(seq 30); do
  "${kubectl[@]}" wait --for=condition=Established crd/sidecarpolicies.sidecars.dev --timeout=30s \
    >/dev/null 2>&1 && break
  sleep 1
done
# Admission: the API server calls the operator on this host at https://localhost:9443.
"$bin/sidecar-operator" dev webhook --port 9443 2>/dev/null | "${kubectl[@]}" apply -f - >/dev/null
if operator_running; then
  echo "demo: the operator is already running (pid $(cat "$pid_file"))"
else
  nohup "$bin/sidecar-operator" run --webhook-port 9443 --webhook-certs "$cluster_dir/webhook-certs" \
    >"$log_file" 2>&1 &
  echo $! >"$pid_file"
  echo "demo: operator started (pid $!, log $log_file)"
fi
samples() {  # samples policies|workloads FILE...: those documents of the files, as one stream
  "$bin/python" - "$@" <<'EOF_PY'
import sys, yaml
want, files = sys.argv[1], sys.argv[2:]
docs = [doc for name in files for doc in yaml.safe_load_all(open(name)) if doc]
print(yaml.safe_dump_all([d for d in docs if (d["kind"] == "SidecarPolicy") == (want == "policies")]))
EOF_PY
}
policies=(log-shipper statsd-exporter config-sync postgres-exporter vault-proxy)
"${kubectl[@]}" apply -f manifests/samples/00-namespace.yaml
# One workload predates its policy: the controller adds its sidecars, a second rollout.
samples workloads manifests/samples/log-shipping.yaml | "${kubectl[@]}" apply -f -
# The policies before the other workloads: once the operator has seen them, admission stores
# each new workload with its sidecars, so its first pods run with them (one ReplicaSet).
samples policies manifests/samples/*.yaml | "${kubectl[@]}" apply -f -
"${kubectl[@]}" wait --for=jsonpath='{.status.observedGeneration}'=1 \
  "${policies[@]/#/sidecarpolicy/}" --timeout=180s >/dev/null
others=(); for file in manifests/samples/*.yaml; do
  [[ "$file" == */00-namespace.yaml || "$file" == */log-shipping.yaml ]] || others+=("$file")
done
samples workloads "${others[@]}" | "${kubectl[@]}" apply -f -
echo "demo: waiting for the policies to report Ready ..."
"${kubectl[@]}" wait --for=condition=Ready "${policies[@]/#/sidecarpolicy/}" --timeout=180s >/dev/null

echo
"${kubectl[@]}" get sidecarpolicies "${policies[@]}" -o wide
echo
"${kubectl[@]}" get deployments,statefulsets -n demo-shop -o custom-columns='WORKLOAD:.metadata.name,INIT CONTAINERS:.spec.template.spec.initContainers[*].name,CONTAINERS:.spec.template.spec.containers[*].name,VOLUMES:.spec.template.spec.volumes[*].name'
"${kubectl[@]}" get cronjobs -n demo-shop -o custom-columns='CRONJOB:.metadata.name,INIT CONTAINERS:.spec.jobTemplate.spec.template.spec.initContainers[*].name,CONTAINERS:.spec.jobTemplate.spec.template.spec.containers[*].name'
echo
# checkout predates its policy: two ReplicaSets, its first pods without the sidecar. The others
# were admitted with theirs: one each.
"${kubectl[@]}" get replicasets -n demo-shop -o custom-columns='REPLICASET:.metadata.name,CONTAINERS:.spec.template.spec.containers[*].name'
cat <<EOT

Look further:
  export KUBECONFIG=$KUBECONFIG
  $bin/kubectl describe sidecarpolicy log-shipper
  $bin/kubectl get deployment checkout -n demo-shop -o yaml
  $bin/kubectl get events -n demo-shop
  tail -f $log_file
Try it:
  $bin/kubectl delete sidecarpolicy statsd-exporter   # the exporter comes back out
Stop everything:
  make down
EOT
