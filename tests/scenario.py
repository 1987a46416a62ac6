"""Building blocks for tests that drive the operator: sample sidecars, Deployment manifests,
policies scoped to one test's namespace, and reads of the cluster's state."""

from __future__ import annotations

import uuid
from typing import Any

import yaml

from tests.kube import Kubectl, eventually

FLUENT_BIT = {
    "name": "fluent-bit",
    "image": "fluent/fluent-bit:3.1.9",
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    "volumeMounts": [{"name": "app-logs", "mountPath": "/var/log/app", "readOnly": True}],
}
LOG_VOLUME = {"name": "app-logs", "emptyDir": {}}
LOG_MOUNT = {"name": "app-logs", "mountPath": "/var/log/app"}
# An app with its own init container, volume and mount: what a policy must leave as it is.
APP_WITH_INIT_AND_DATA = {
    "initContainers": [{"name": "migrate", "image": "busybox:1.36"}],
    "containers": [
        {
            "name": "app",
            "image": "nginx:1.27",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        }
    ],
    "volumes": [{"name": "data", "emptyDir": {}}],
}
# An app that already runs its own container named like FLUENT_BIT: a name clash.
APP_WITH_OWN_FLUENT_BIT = {
    "containers": [
        {"name": "app", "image": "nginx:1.27"},
        {"name": "fluent-bit", "image": "mine:1"},
    ]
}
GIT_SYNC = {
    "name": "config-sync",
    "image": "registry.k8s.io/git-sync/git-sync:v4.2.4",
    "restartPolicy": "Always",
}


def deployment(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    pod: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    replicas: int = 0,
) -> str:
    """A Deployment's manifest. No replicas unless a test needs pods: its template, ownership
    and status are the same without them, and every replica rolled out costs the one control
    plane about three times a Deployment's own writes (docs/local-control-plane.md). Pods matter
    to the budget: an injection into a workload with nothing running is not paced."""
    metadata: dict[str, Any] = {"name": name, "labels": labels or {"sidecar-test": "yes"}}
    if annotations:
        metadata["annotations"] = annotations
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": pod or {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                },
            },
        }
    )


class Policies:
    """Creates uniquely named policies that select only this test's namespace."""

    def __init__(self, admin: Kubectl, namespace: str) -> None:
        self.admin = admin
        self.namespace = namespace
        self.created: list[str] = []
        self.labels: dict[str, str] = {}  # on every policy (`own_operator` serves them)

    def apply(self, name: str | None = None, **spec: Any) -> str:
        name = name or f"p-{uuid.uuid4().hex[:8]}"
        self.apply_all({name: spec})
        return name

    def apply_all(self, specs: dict[str, dict[str, Any]], *, server_side: bool = False) -> None:
        """Several policies in one `kubectl apply` (server-side for those over the 256 KiB
        that client-side apply's annotation holds)."""
        documents = [self.document(name, **spec) for name, spec in specs.items()]
        self.admin.apply(yaml.safe_dump_all(documents), *(["--server-side"] if server_side else []))
        self.created.extend(name for name in specs if name not in self.created)

    def document(self, name: str, **spec: Any) -> dict[str, Any]:
        """The policy as `apply` sends it: selecting only this test's namespace."""
        return {
            "apiVersion": "sidecars.dev/v1alpha1",
            "kind": "SidecarPolicy",
            "metadata": {"name": name, **({"labels": self.labels} if self.labels else {})},
            "spec": {
                "selector": {"matchLabels": {"sidecar-test": "yes"}},
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": self.namespace}
                },
                **spec,
            },
        }

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.admin.json("sidecarpolicy", name).get("status") or {})

    def delete(self, name: str) -> None:
        self.admin("delete", "sidecarpolicy", name, "--timeout=60s")

    def delete_all(self) -> None:
        """Every policy this test made, waiting until each is gone: while the operator that
        serves them still runs, to release their finalizers."""
        for name in self.created:
            self.admin.api.delete("sidecarpolicies", name)
        eventually(
            lambda: all(self.admin.find("sidecarpolicy", name) is None for name in self.created),
            timeout=60,
            what="the test's policies deleted",
        )


def pod_spec(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict(kubectl.json("deployment", name)["spec"]["template"]["spec"])


def names(pod: dict[str, Any], pod_list: str) -> list[str]:
    return [item["name"] for item in pod.get(pod_list) or []]


def has_container(kubectl: Kubectl, deployment_name: str, container: str) -> bool:
    return container in names(pod_spec(kubectl, deployment_name), "containers")


def events(
    kubectl: Kubectl, kind: str, name: str, reason: str | None = None
) -> list[dict[str, Any]]:
    """The object's Events (of this reason, if given)."""
    selector = f"involvedObject.kind={kind},involvedObject.name={name}"
    if reason is not None:
        selector += f",reason={reason}"
    return list(kubectl.json("events", f"--field-selector={selector}")["items"])


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def ready(policies: Policies, name: str, matched: int) -> dict[str, Any] | None:
    """The policy's status once it says every matched workload is ready, for the policy's
    current generation (right after an edit, the status is still the last one's)."""
    policy = policies.admin.json("sidecarpolicy", name)
    status = dict(policy.get("status") or {})
    done = (
        status.get("observedGeneration") == policy["metadata"].get("generation")
        and status.get("matchedWorkloads") == matched
        and status.get("readyWorkloads") == matched
        and condition(status, "Ready").get("status") == "True"
    )
    return status if done else None


def halted(policies: Policies, name: str) -> dict[str, Any] | None:
    """The policy's status once its rollout is halted."""
    status = policies.status(name)
    return status if condition(status, "Progressing").get("reason") == "RolloutHalted" else None


def policy_events(kubectl: Kubectl, name: str, reason: str) -> list[dict[str, Any]]:
    """A cluster-scoped policy's Events live in `default`."""
    return events(kubectl.in_namespace("default"), "SidecarPolicy", name, reason=reason)
