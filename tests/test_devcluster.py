"""The local control plane behaves like a real cluster, driven with kubectl as a user would."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

from tests.conftest import TEST_CLUSTER
from tests.kube import Kubectl, dev, kubeconfig_from

DEPLOYMENT = textwrap.dedent("""
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: web
    spec:
      replicas: 3
      selector:
        matchLabels: {app: web}
      template:
        metadata:
          labels: {app: web}
        spec:
          containers:
            - name: web
              image: nginx:1.27
""")


def _pid_files(kubeconfig: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text()) for path in kubeconfig.parent.glob("*.pid")}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_nodes_are_kwok_nodes_and_ready(kubectl_admin: Kubectl) -> None:
    nodes = kubectl_admin.json("nodes", "-l", "type=kwok")["items"]
    ready = [
        node["metadata"]["name"]
        for node in nodes
        for condition in node["status"]["conditions"]
        if condition["type"] == "Ready" and condition["status"] == "True"
    ]
    assert len(ready) >= 3, ready


def test_deployment_rolls_out_to_ready_pods_on_kwok_nodes(kubectl: Kubectl) -> None:
    kubectl.apply(DEPLOYMENT)
    kubectl("rollout", "status", "deployment/web", "--timeout=120s")

    deployment = kubectl.json("deployment", "web")
    available = {c["type"]: c["status"] for c in deployment["status"]["conditions"]}
    assert available["Available"] == "True"
    assert deployment["status"]["readyReplicas"] == 3
    pods = kubectl.json("pods", "-l", "app=web")["items"]
    running = [pod for pod in pods if pod["status"]["phase"] == "Running"]
    assert len(running) == 3
    assert all(pod["spec"]["nodeName"].startswith("kwok-node-") for pod in running)
    assert all(pod["status"]["podIP"] for pod in running)


def test_server_side_apply_records_the_field_manager(kubectl: Kubectl) -> None:
    config_map = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {level: debug}\n"
    )
    kubectl.apply(config_map, "--server-side", "--field-manager=smoke-test")

    managed = kubectl.json("configmap", "settings", "--show-managed-fields")["metadata"][
        "managedFields"
    ]
    entry = next(field for field in managed if field["manager"] == "smoke-test")
    assert entry["operation"] == "Apply"
    assert "f:level" in entry["fieldsV1"]["f:data"]


def test_crd_validation_rule_rejects_a_bad_object(kubectl_admin: Kubectl, kubectl: Kubectl) -> None:
    group = f"g{uuid.uuid4().hex[:8]}.smoke.test"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "replicas": {"type": "integer"},
                                        "maxReplicas": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.replicas <= self.maxReplicas",
                                            "message": "replicas must not exceed maxReplicas",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kubectl_admin.apply(json.dumps(crd))
    try:
        kubectl_admin(
            "wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s"
        )

        def widget(name: str, replicas: int) -> str:
            return json.dumps(
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Widget",
                    "metadata": {"name": name},
                    "spec": {"replicas": replicas, "maxReplicas": 3},
                }
            )

        kubectl.apply(widget("fine", 2))
        rejected = kubectl.apply(widget("too-many", 5), check=False)
        assert rejected.returncode != 0
        assert "replicas must not exceed maxReplicas" in rejected.stderr
        assert kubectl("get", f"widgets.{group}", "too-many", check=False).returncode != 0
    finally:
        kubectl_admin("delete", "crd", f"widgets.{group}", "--wait=false")


def test_dev_up_twice_reuses_the_running_cluster(kubectl_admin: Kubectl) -> None:
    before = _pid_files(kubectl_admin.kubeconfig)
    again = dev("up", "--name", TEST_CLUSTER)

    assert kubeconfig_from(again.stdout.strip().splitlines()[-1]) == kubectl_admin.kubeconfig
    assert "reusing" in again.stderr
    assert _pid_files(kubectl_admin.kubeconfig) == before
    assert dev("env", "--name", TEST_CLUSTER).stdout.strip() == again.stdout.strip()


def test_dev_down_stops_every_process_it_started(kubectl_admin: Kubectl) -> None:
    # A second, separately named cluster, so the session's cluster keeps serving other tests.
    name = f"down-{uuid.uuid4().hex[:6]}"
    started = dev("up", "--name", name, "--nodes", "1")
    kubeconfig = kubeconfig_from(started.stdout.strip().splitlines()[-1])
    pids = _pid_files(kubeconfig)
    assert set(pids) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    assert all(_alive(pid) for pid in pids.values())
    assert Kubectl(kubeconfig)("get", "nodes").returncode == 0

    dev("down", "--name", name)
    # `down` keeps a cluster's lock file (another process may hold it); a name used once goes.
    (kubeconfig.parent.parent / f"{name}.lock").unlink()

    assert [component for component, pid in pids.items() if _alive(pid)] == []
    assert not kubeconfig.parent.exists()
    assert dev("env", "--name", name, check=False).returncode != 0
