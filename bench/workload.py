"""What the benchmark puts into the cluster: N Deployments over N/20 namespaces, and the policy
that matches all of them (a realistic log shipper: a sidecar, a shared volume and a mount into
the app's container), or many policies whose selectors overlap."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from bench.kube import Api, run_bounded

PART_OF = "app.kubernetes.io/part-of"
SET_LABEL = "bench.sidecars.dev/set"
SHARD_LABEL = "bench.sidecars.dev/shard"
POLICY = "bench"
PER_NAMESPACE = 20
CREATE_CONCURRENCY = 32
MATCHED_BY = 3  # of the many policies, how many select each Deployment
CLASH_EVERY = 25  # policies 0 and 1, 25 and 26, ... add a container of the same name


def deployment(
    namespace: str, name: str, *, replicas: int, set_name: str, shard: int | None = None
) -> dict[str, Any]:
    labels = {PART_OF: "bench", SET_LABEL: set_name, "logging": "enabled"}
    if shard is not None:
        labels[SHARD_LABEL] = str(shard)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    # kwok's Pods have nothing to shut down: with no grace period the API server
                    # deletes a replaced Pod at once, without a terminating state and kwok's
                    # second delete. Six limit phases at N=1000 settled in 164 s, not 190 s.
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/shop/checkout:1.4.2",
                            "ports": [{"containerPort": 8080}],
                            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        }
                    ],
                },
            },
        },
    }


def policy(image_tag: str) -> dict[str, Any]:
    return {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "selector": {"matchLabels": {PART_OF: "bench"}},
            "containers": [
                {
                    "name": "fluent-bit",
                    "image": f"fluent/fluent-bit:{image_tag}",
                    "args": ["-i", "tail", "-p", "path=/var/log/app/*.log", "-o", "stdout"],
                    "resources": {
                        "requests": {"cpu": "20m", "memory": "32Mi"},
                        "limits": {"memory": "64Mi"},
                    },
                    "volumeMounts": [
                        {"name": "app-logs", "mountPath": "/var/log/app", "readOnly": True}
                    ],
                }
            ],
            "volumes": [{"name": "app-logs", "emptyDir": {"sizeLimit": "512Mi"}}],
            "volumeMounts": [{"name": "app-logs", "mountPath": "/var/log/app"}],
            "updateStrategy": {"maxConcurrent": "100%"},
        },
    }


# A sidecar with every optional Container field at the value the API server drops or defaults
# (empty lists and maps, false, "", zero), its mount and volume likewise: each of these alone once
# made the operator write on every event.
EVERY_DEFAULT: dict[str, Any] = {
    "containers": [
        {
            "name": "shipper",
            "image": "fluent/fluent-bit:3.1.9",
            "args": [],
            "command": [],
            "env": [{"name": "LEVEL", "value": ""}],
            "envFrom": [],
            "ports": [{"containerPort": 2020, "protocol": "", "hostIP": ""}],
            "workingDir": "",
            "stdin": False,
            "stdinOnce": False,
            "tty": False,
            "imagePullPolicy": "",
            "terminationMessagePath": "",
            "terminationMessagePolicy": "",
            "resources": {"limits": {"cpu": "0.5"}, "requests": {}},
            "securityContext": {},
            "lifecycle": {},
            "resizePolicy": [],
            "livenessProbe": {
                "httpGet": {"port": 2020, "path": "", "scheme": ""},
                "timeoutSeconds": 0,
                "periodSeconds": 0,
            },
            "volumeMounts": [
                {"name": "logs", "mountPath": "/logs", "readOnly": False, "subPath": ""}
            ],
        }
    ],
    "volumes": [{"name": "logs", "emptyDir": {"medium": ""}}],
    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app", "readOnly": False}],
}


def every_default_policy() -> dict[str, Any]:
    return {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "selector": {"matchLabels": {PART_OF: "bench"}},
            **EVERY_DEFAULT,
            "updateStrategy": {"maxConcurrent": "100%"},
        },
    }


def clashes(index: int, count: int) -> bool:
    """Whether policy `index` of `count` is one of a pair adding a container of the same name."""
    first = index - index % CLASH_EVERY
    return index - first < 2 and first + 1 < count


def shard_policy(index: int, count: int, image_tag: str) -> dict[str, Any]:
    """Policy `index` of `count` selects shards index, index+1 and index+2 (of `count`, around),
    so every Deployment is matched by MATCHED_BY policies and neighbours share two shards. Where
    two neighbours clash (`clashes`), the second has the higher priority: on their two shared
    shards the first skips the Deployments and reports the conflict."""
    name = f"many-{index:03d}"
    shards = sorted({str((index + step) % count) for step in range(MATCHED_BY)}, key=int)
    clash = clashes(index, count)
    container = {
        "name": "proxy" if clash else f"agent-{index:03d}",
        "image": f"registry.example/agents/{name}:{image_tag}",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "volumeMounts": [{"name": f"{name}-run", "mountPath": "/run/agent"}],
    }
    spec: dict[str, Any] = {
        "selector": {
            "matchLabels": {PART_OF: "bench"},
            "matchExpressions": [{"key": SHARD_LABEL, "operator": "In", "values": shards}],
        },
        "containers": [container],
        "volumes": [{"name": f"{name}-run", "emptyDir": {}}],
        "volumeMounts": [{"name": f"{name}-run", "mountPath": f"/var/run/sidecars/{name}"}],
        "updateStrategy": {"maxConcurrent": "100%"},
    }
    if clash:
        spec["priority"] = 10 * (index % CLASH_EVERY)
    return {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def as_policy_object(body: dict[str, Any], generation: int) -> dict[str, Any]:
    """The policy as the API server would return it, for planning the limit's bodies."""
    obj = copy.deepcopy(body)
    obj["metadata"].update(generation=generation, creationTimestamp="2026-01-01T00:00:00Z")
    return obj


@dataclass(frozen=True)
class Workload:
    """One set of Deployments, named by `set_name` (a label the watch selects on); with
    `shards`, each also labelled with its number modulo `shards`, so that the shards are the same
    size and each policy over some of them selects as many Deployments."""

    set_name: str
    count: int
    replicas: int
    shards: int = 0

    @property
    def namespaces(self) -> list[str]:
        return [f"{self.set_name}-{i}" for i in range(max(1, -(-self.count // PER_NAMESPACE)))]

    @property
    def selector(self) -> str:
        return f"{SET_LABEL}={self.set_name}"

    def keys(self) -> list[tuple[str, str]]:
        namespaces = self.namespaces
        return [(namespaces[i // PER_NAMESPACE], f"app-{i}") for i in range(self.count)]

    def body(self, key: tuple[str, str]) -> dict[str, Any]:
        shard = int(key[1].removeprefix("app-")) % self.shards if self.shards else None
        return deployment(*key, replicas=self.replicas, set_name=self.set_name, shard=shard)

    async def create_namespaces(self, api: Api) -> None:
        for namespace in self.namespaces:
            await api.request(
                "POST", "/api/v1/namespaces", {"metadata": {"name": namespace}}, ok=(201, 409)
            )

    async def create(self, api: Api) -> None:
        await self.create_namespaces(api)

        def job(key: tuple[str, str]) -> Any:
            return lambda: api.request(
                "POST", f"/apis/apps/v1/namespaces/{key[0]}/deployments", self.body(key)
            )

        await run_bounded([job(key) for key in self.keys()], CREATE_CONCURRENCY)

    async def delete(self, api: Api) -> None:
        for namespace in self.namespaces:
            await api.request("DELETE", f"/api/v1/namespaces/{namespace}", ok=(200, 202, 404))
