"""Kyverno's mutate-existing, as a peer: its background controller (built from its Go module by
`hack/build-peers.sh`) runs against the local cluster out of cluster, as the only Kyverno process
mutate-existing needs (it creates the UpdateRequests of `mutateExistingOnPolicyUpdate` itself and
carries them out). A ClusterPolicy adds the same sidecar, volume and app mount as the bench's
SidecarPolicy, by a strategic merge patch of each matched Deployment.
"""

from __future__ import annotations

import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import cluster
from bench.kube import Api
from bench.process import free_port
from bench.workload import PART_OF, policy

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "build-peers.sh"
NAMESPACE = "kyverno"
POLICY = "/apis/kyverno.io/v1/clusterpolicies/bench"
# The Helm chart's environment and its default `updateRequestThreshold` (without the ConfigMap
# the threshold is 0 and no UpdateRequest is created).
ENV = {
    "KYVERNO_NAMESPACE": NAMESPACE,
    "KYVERNO_POD_NAME": "kyverno-background-controller-bench",
    "KYVERNO_DEPLOYMENT": "kyverno-background-controller",
    "KYVERNO_SERVICEACCOUNT_NAME": "kyverno-background-controller",
    "INIT_CONFIG": "kyverno",
    "METRICS_CONFIG": "kyverno-metrics",
}
UPDATE_REQUEST_THRESHOLD = "1000"


def build() -> Path:
    """The directory with `background-controller` and `crds/`, built first if needed."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(result.stdout.strip().splitlines()[-1])


def command(built: Path, flags: list[str]) -> Callable[[Path], list[str]]:
    def argv(kubeconfig: Path) -> list[str]:
        return [
            str(built / "background-controller"),
            "-kubeconfig",
            str(kubeconfig),
            "-metricsPort",
            str(free_port()),
            "-loggingFormat",
            "json",
            *flags,
        ]

    return argv


def prepare(built: Path) -> Callable[[Path, Api], Awaitable[None]]:
    async def install(kubeconfig: Path, api: Api) -> None:
        """Kyverno's CRDs, namespace and ConfigMap; again before each round, as a no-op."""
        cluster.kubectl(kubeconfig, "apply", "--server-side", "-R", "-f", str(built / "crds"))
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        await api.apply(f"/api/v1/namespaces/{NAMESPACE}", namespace, manager="bench")
        config = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ENV["INIT_CONFIG"], "namespace": NAMESPACE},
            "data": {"updateRequestThreshold": UPDATE_REQUEST_THRESHOLD},
        }
        path = f"/api/v1/namespaces/{NAMESPACE}/configmaps/{ENV['INIT_CONFIG']}"
        await api.apply(path, config, manager="bench")
        cluster.kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd/clusterpolicies.kyverno.io",
            "crd/updaterequests.kyverno.io",
            "--timeout=60s",
        )

    return install


def cluster_policy(tag: str) -> dict[str, Any]:
    """The bench's SidecarPolicy as a mutate-existing ClusterPolicy."""
    spec = policy(tag)["spec"]
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "bench"},
        "spec": {
            "mutateExistingOnPolicyUpdate": True,
            "rules": [
                {
                    "name": "add-sidecar",
                    "match": {
                        "any": [
                            {
                                "resources": {
                                    "kinds": ["Deployment"],
                                    "selector": {"matchLabels": {PART_OF: "bench"}},
                                }
                            }
                        ]
                    },
                    "mutate": {
                        "targets": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "namespace": "{{ request.object.metadata.namespace }}",
                                "name": "{{ request.object.metadata.name }}",
                            }
                        ],
                        "patchStrategicMerge": {
                            "spec": {
                                "template": {
                                    "spec": {
                                        "containers": [
                                            {"(name)": "app", "volumeMounts": spec["volumeMounts"]},
                                            *spec["containers"],
                                        ],
                                        "volumes": spec["volumes"],
                                    }
                                }
                            }
                        },
                    },
                }
            ],
        },
    }
