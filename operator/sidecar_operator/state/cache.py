"""The watched state the operator keeps in memory: fed by the watches, read by the policy workers,
all on the operator's one event loop (so no locks). Pure (no API calls).

Every Deployment in the cluster is watched, so it holds each as a compact snapshot. `epoch`
moves whenever something that changes every Deployment's plan changes (a policy's spec or
deletion, a namespace's labels), so per-Deployment plans can be cached between passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sidecar_operator.api.models import Policy
from sidecar_operator.core.types import Key
from sidecar_operator.state import snapshot


class Cache:
    def __init__(self) -> None:
        self._deployments: dict[Key, dict[str, Any]] = {}
        self._namespaces: dict[str, dict[str, str]] = {}
        self._policies: dict[str, tuple[Policy, dict[str, Any]]] = {}
        self._shared = snapshot.Shared()
        self.epoch = 0

    # -- writers (the watch handlers) ------------------------------------------------------

    def put_deployment(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store the compact snapshot of a watched Deployment unless a newer one is held (our
        own write's response can arrive before the watch event of an older version)."""
        record = snapshot.compact(body, self._shared)
        key = (record["metadata"]["namespace"], record["metadata"]["name"])
        held = self._deployments.get(key)
        if held is None or _rv(held) <= _rv(record) or _uid(held) != _uid(record):
            self._deployments[key] = record
            held = record
        if self._shared.due:
            self._shared.sweep(self._deployments.values())
        return held

    def refresh_deployment(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Store our own write's answer, newer than the watch's copy, but only over that copy:
        a Deployment the watch dropped while the write was in flight was deleted, and its
        answer must not bring it back (it would be counted, and cleaned up, forever after).
        Returns what is held, or None when the Deployment is gone."""
        record = snapshot.compact(body, self._shared)
        key = (record["metadata"]["namespace"], record["metadata"]["name"])
        held = self._deployments.get(key)
        if held is None or _uid(held) != _uid(record):
            return None
        if _rv(held) <= _rv(record):
            self._deployments[key] = held = record
        return held

    def drop_deployment(self, key: Key) -> None:
        self._deployments.pop(key, None)

    def retain_deployments(self, keys: Iterable[Key]) -> list[Key]:
        """Drop every Deployment not in `keys`; returns the dropped."""
        kept = set(keys)
        dropped = [key for key in self._deployments if key not in kept]
        for key in dropped:
            del self._deployments[key]
        return dropped

    def put_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        if self._namespaces.get(name) != labels:
            self._namespaces[name] = dict(labels)
            self.epoch += 1

    def drop_namespace(self, name: str) -> None:
        if self._namespaces.pop(name, None) is not None:
            self.epoch += 1

    def put_policy(self, body: Mapping[str, Any]) -> Policy:
        policy = Policy.from_object(body)
        extra = {
            "metadata": dict(body.get("metadata") or {}),
            "status": dict(body.get("status") or {}),
        }
        held = self._policies.get(policy.name)
        if held is None or held[0] != policy:
            self.epoch += 1
        self._policies[policy.name] = (policy, extra)
        return policy

    def drop_policy(self, name: str) -> None:
        if self._policies.pop(name, None) is not None:
            self.epoch += 1

    # -- readers (the workers) -------------------------------------------------------------

    def deployments(self) -> list[tuple[Key, dict[str, Any]]]:
        """Every snapshot, as a list: a pass yields to the loop while it walks them, and the
        watch goes on changing the cache meanwhile."""
        return list(self._deployments.items())

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self._namespaces.get(name, {})

    def policies(self) -> dict[str, tuple[Policy, dict[str, Any]]]:
        return dict(self._policies)

    def policy(self, name: str) -> tuple[Policy, dict[str, Any]] | None:
        return self._policies.get(name)


def _rv(record: Mapping[str, Any]) -> int:
    try:
        return int(record["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _uid(record: Mapping[str, Any]) -> str:
    return str(record["metadata"].get("uid") or "")
