"""The watched state the operator keeps in memory: fed by the watches, read by the policy workers,
all on the operator's one event loop (so no locks). Pure (no API calls).

Every workload of a watched kind is in it, as a compact snapshot. `epoch` moves whenever
something that changes some workload's plan changes (a policy's spec or deletion, a namespace's
labels), and `changed_at` says at which epoch what the planner reads of a given policy or
namespace last changed, so a workload's plan is kept until one of those it was planned from
changes. Which policies concern
which workload (`concerns`) is kept up to date with every change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner
from sidecar_operator.core.types import Key
from sidecar_operator.state import snapshot
from sidecar_operator.state.concerns import Concerns


class Cache:
    def __init__(self, *, operator_namespace: str | None = None) -> None:
        self._concerns = Concerns(operator_namespace=operator_namespace)
        self._workloads: dict[Key, dict[str, Any]] = {}
        self._namespaces: dict[str, dict[str, str]] = {}
        self._policies: dict[str, tuple[Policy, dict[str, Any]]] = {}
        # Policies another operator serves (`--shard`): only their names, so that
        # what they added is never taken for a deleted policy's leftovers.
        self._foreign: set[str] = set()
        self._shared = snapshot.Shared()
        # When the watch delivered each workload as held, and each policy last changed: a
        # write then reacts to the one that changed last (`reacting_to`).
        self._arrived: dict[Key, float] = {}
        self._policy_changed: dict[str, float] = {}
        self.epoch = 0
        # The epoch at which each policy's content and each namespace's labels last changed.
        self._changed_at: dict[tuple[Changed, str], int] = {}
        self._policy_puts = 0  # a policy stored or dropped, its status changes included
        # The workload annotations the policies' placeholders name: snapshots keep them. It only
        # grows: one more key needs every workload listed again (`Runtime.policy_seen`), one
        # fewer costs a few bytes per workload until a restart.
        self.annotation_keys: frozenset[str] = frozenset()
        self.stored = 0  # snapshots stored since the start (`engine.heap`)

    # -- writers (the watch handlers) ------------------------------------------------------

    def put_workload(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store the compact snapshot of a watched workload unless a newer one is held (our
        own write's response can arrive before the watch event of an older version)."""
        record = snapshot.compact(body, self._shared, self.annotation_keys)
        key = Key.of(record)
        held = self._workloads.get(key)
        if held is None or _rv(held) <= _rv(record) or _uid(held) != _uid(record):
            self._store(key, record)
            self._arrived[key] = time.monotonic()
            held = record
        if self._shared.due:
            self._shared.sweep(self._workloads.values())
        return held

    def refresh_workload(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Store our own write's answer, newer than the watch's copy, but only over that copy:
        a workload the watch dropped while the write was in flight was deleted, and its
        answer must not bring it back (it would be counted, and cleaned up, forever after).
        Returns what is held, or None when the workload is gone."""
        record = snapshot.compact(body, self._shared, self.annotation_keys)
        key = Key.of(record)
        held = self._workloads.get(key)
        if held is None or _uid(held) != _uid(record):
            return None
        if _rv(held) <= _rv(record):
            self._store(key, record)
            held = record
        return held

    def _store(self, key: Key, record: dict[str, Any]) -> None:
        self._workloads[key] = record
        self.stored += 1
        self._concerns.workload(key, record, self.namespace_labels(key[0]), self._specs())

    def drop_workload(self, key: Key) -> None:
        self._workloads.pop(key, None)
        self._arrived.pop(key, None)
        self._concerns.drop(key)

    def retain_workloads(self, kind: WorkloadKind, keys: Iterable[Key]) -> list[Key]:
        """Drop every workload of this kind not in `keys`; returns the dropped."""
        kept = set(keys)
        dropped = [key for key in self._workloads if key.kind is kind and key not in kept]
        for key in dropped:
            self.drop_workload(key)
        return dropped

    def put_namespace(self, name: str, labels: Mapping[str, str]) -> bool:
        """Returns whether a plan may change: its labels changed and it holds workloads. A new
        namespace's first labels change none: under churn, namespaces created for new
        workloads made every policy plan every workload again."""
        if self._namespaces.get(name) == labels:
            return False
        self._namespaces[name] = dict(labels)
        return self._relabelled(name, labels)

    def drop_namespace(self, name: str) -> bool:
        if self._namespaces.pop(name, None) is None:
            return False
        return self._relabelled(name, {})

    def _relabelled(self, name: str, labels: Mapping[str, str]) -> bool:
        if not any(key.namespace == name for key in self._workloads):
            return False
        self._moved(Changed.NAMESPACE, name)
        self._concerns.namespace(name, labels, self._workloads.items(), self._specs())
        return True

    def put_policy(self, body: Mapping[str, Any]) -> Policy:
        policy = Policy.from_object(body)
        self._foreign.discard(policy.name)
        extra = {
            "metadata": dict(body.get("metadata") or {}),
            "status": dict(body.get("status") or {}),
        }
        held = self._policies.get(policy.name)
        if held is not None and held[0] == policy:
            # Its status changed, not the policy: keep the object, so that what was derived
            # from it (rollouts, contexts, plans) finds it the same at once. Compared field by
            # field instead, a hundred policies' resync passes spent half their time in it.
            policy = held[0]
        self._policies[policy.name] = (policy, extra)
        self._policy_puts += 1
        self.annotation_keys |= policy.spec.annotation_keys
        # A promotion or an abort changes no plan by itself: the rollout it moves does
        # (`Rollouts.version`), once a pass has moved it.
        if held is None or (
            held[0] is not policy
            and held[0].model_copy(update=_ASKED) != policy.model_copy(update=_ASKED)
        ):
            if held is None or planner.reads(held[0]) != planner.reads(policy):
                self._moved(Changed.POLICY, policy.name)
            else:
                self.epoch += 1  # its content alone: plans whose target stays are kept
            self._policy_changed[policy.name] = time.monotonic()
            self._concerns.policy(policy, self._workloads.items(), self._namespaces)
        return policy

    def put_foreign(self, name: str) -> bool:
        """A policy this operator does not serve; True if it served it until now."""
        served = name in self._policies
        if served:  # moved to another operator; another's status writes change nothing here
            self.drop_policy(name)
        self._foreign.add(name)
        return served

    def drop_policy(self, name: str) -> None:
        self._foreign.discard(name)
        self._policy_changed.pop(name, None)
        self._policy_puts += 1
        if self._policies.pop(name, None) is not None:
            self._moved(Changed.POLICY, name)
            self._concerns.policy_gone(name)

    def _moved(self, what: Changed, name: str) -> None:
        self.epoch += 1
        self._changed_at[what, name] = self.epoch

    @property
    def moved(self) -> tuple[int, int, int]:
        """Moves whenever what a plan or a rollout is made from may have changed, the workload
        itself aside: a policy (its status too), a namespace's labels, which workloads a
        policy concerns. While it holds, every plan and rollout holds."""
        return (self.epoch, self._policy_puts, self._concerns.changes)

    def changed_at(self, what: Changed, name: str) -> int:
        """The epoch at which what the planner reads of this policy besides its content
        (`planner.reads`), or its deletion, or this namespace's labels last changed: 0 if
        never since the start. A change of content alone moves only `epoch`: the rollout
        gives each workload its content (`Plans` stamps the target's revision)."""
        return self._changed_at.get((what, name), 0)

    # -- readers (the workers) -------------------------------------------------------------

    def workloads(self) -> list[tuple[Key, dict[str, Any]]]:
        """Every snapshot, as a list: a pass yields to the loop while it walks them, and the
        watch goes on changing the cache meanwhile."""
        return list(self._workloads.items())

    def workload(self, key: Key) -> dict[str, Any] | None:
        return self._workloads.get(key)

    def reacting_to(self, key: Key, policy: str) -> float | None:
        """When the watch delivered the workload as held, if after the policy last changed:
        a write of the policy's then answers the workload's change, not the policy's."""
        arrived = self._arrived.get(key)
        changed = self._policy_changed.get(policy, 0.0)
        return arrived if arrived is not None and arrived > changed else None

    def concerning(self, policy: str) -> list[tuple[Key, dict[str, Any]]]:
        """The workloads the policy selects or owns fields on, as a list (see `workloads`)."""
        return [(key, self._workloads[key]) for key in self._concerns.workloads(policy)]

    def concerning_keys(self, policy: str) -> list[Key]:
        return self._concerns.workloads(policy)

    def concern_count(self, policy: str) -> int:
        return self._concerns.count(policy)

    def concerned(self, key: Key) -> frozenset[str]:
        """The policies that select the workload or own fields on it (deleted ones too)."""
        return self._concerns.policies(key)

    def namespaces(self) -> set[str]:
        return set(self._namespaces)

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self._namespaces.get(name, {})

    def policies(self) -> dict[str, tuple[Policy, dict[str, Any]]]:
        return dict(self._policies)

    def policy(self, name: str) -> tuple[Policy, dict[str, Any]] | None:
        return self._policies.get(name)

    def policy_names(self) -> set[str]:
        """Every policy there is, served or not."""
        return self._policies.keys() | self._foreign

    def gone(self, names: Iterable[str]) -> list[str]:
        """Those of these policies that no longer exist, served or not: what they added on
        workloads is left over (`engine.cleanup`)."""
        return sorted(
            name for name in names if name not in self._policies and name not in self._foreign
        )

    def kinds_of(self, name: str) -> frozenset[WorkloadKind]:
        """The kinds the policy targets, and those its status says it still has workloads of
        (a kind dropped from `spec.kinds` keeps being watched until its sidecars are removed,
        across restarts too)."""
        entry = self._policies.get(name)
        if entry is None:
            return frozenset()
        policy, extra = entry
        reported = extra["status"].get("workloadKinds") or []
        known = {kind.value for kind in WorkloadKind}
        return frozenset(policy.spec.kinds) | {WorkloadKind(k) for k in reported if k in known}

    def kinds_wanted(self) -> frozenset[WorkloadKind]:
        """The kinds to list and watch: those some policy needs (`kinds_of`)."""
        return frozenset().union(*(self.kinds_of(name) for name in self._policies))

    def _specs(self) -> Iterator[Policy]:
        """Lazily: a workload whose labels did not change is not matched against them."""
        return (policy for policy, _ in self._policies.values())


class Changed(StrEnum):
    """What `Cache.changed_at` is asked about."""

    POLICY = "policy"
    NAMESPACE = "namespace"


_ASKED = {"promote": "", "abort": "", "change_cause": ""}  # a policy's asks, not its content


def _rv(record: Mapping[str, Any]) -> int:
    try:
        return int(record["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def _uid(record: Mapping[str, Any]) -> str:
    return str(record["metadata"].get("uid") or "")
