"""Which policies concern which workload: those that select it and those that still own fields
on it, the ones the planner returns an action for. Pure (no API calls).

Every Deployment in the cluster is watched, and a policy selects a few of them: with a hundred
policies over 5000 Deployments, a pass that walked them all to find its own 150 cost 30 ms, and
a round of every policy's pass 2.9 CPU s. Kept up to date from the watches instead, a pass walks
only its own, and an event wakes only its own policies without matching every selector again.

Two things decide a Deployment's concerns, kept apart because they change at different rates:
which policies select it (its labels and opt-out annotation, matched against every policy) and
which policies own fields on it (its field managers, which every policy write changes). A write
re-reads the managers without matching the selectors again, and a rollout's status events
change neither, so they cost a comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from sidecar_operator.api.models import Policy
from sidecar_operator.api.names import INJECT_KEY
from sidecar_operator.core.ownership import policies_with_fields
from sidecar_operator.core.selection import workload_matches
from sidecar_operator.core.types import Key

NO_POLICIES: frozenset[str] = frozenset()
# Distinct sets of policy names kept as one object each (`Concerns._one`); past this many the
# table starts again (the sets already held stay valid, only shared less until met again).
SHARED_SETS_MAX = 4096


class _Basis(NamedTuple):
    """What a workload's concerns came from."""

    matched_on: tuple[Any, ...]  # what selection read: its labels and opt-out annotation
    selected: frozenset[str]  # the policies that select it
    carrying: frozenset[str]  # the policies whose field managers own something on it


class Concerns:
    def __init__(self, *, operator_namespace: str | None) -> None:
        self.operator_namespace = operator_namespace
        self._of_workload: dict[Key, frozenset[str]] = {}
        self._of_policy: dict[str, set[Key]] = {}
        self._basis: dict[Key, _Basis] = {}
        self._shared: dict[frozenset[str], frozenset[str]] = {}
        self.changes = 0  # moves whenever a workload's policies change

    # -- readers ----------------------------------------------------------------------------

    def policies(self, key: Key) -> frozenset[str]:
        return self._of_workload.get(key, NO_POLICIES)

    def count(self, policy: str) -> int:
        return len(self._of_policy.get(policy, ()))

    def workloads(self, policy: str) -> list[Key]:
        """Sorted, so a pass meets them in the same order whatever the events' order was."""
        return sorted(self._of_policy.get(policy, ()))

    # -- updates ----------------------------------------------------------------------------

    def workload(
        self,
        key: Key,
        record: Mapping[str, Any],
        namespace_labels: Mapping[str, str],
        policies: Iterable[Policy],
    ) -> None:
        """A workload was stored: match it again only if what selection reads has changed."""
        metadata = record["metadata"]
        matched_on = (
            metadata.get("labels"),
            (metadata.get("annotations") or {}).get(INJECT_KEY),
        )
        carrying = policies_with_fields(record)
        held = self._basis.get(key)
        if held is not None and held.matched_on == matched_on:
            if held.carrying != carrying:
                self._update(key, held._replace(carrying=carrying))
            return
        selected = frozenset(
            policy.name for policy in policies if self._matches(policy, record, namespace_labels)
        )
        self._update(key, _Basis(matched_on, selected, carrying))

    def namespace(
        self,
        namespace: str,
        labels: Mapping[str, str],
        deployments: Iterable[tuple[Key, Mapping[str, Any]]],
        policies: Iterable[Policy],
    ) -> None:
        """A Namespace's labels changed: match its workloads again."""
        policies = list(policies)
        for key, record in deployments:
            if key[0] == namespace:
                self._basis.pop(key, None)
                self.workload(key, record, labels, policies)

    def policy(
        self,
        policy: Policy,
        deployments: Iterable[tuple[Key, Mapping[str, Any]]],
        namespace_labels: Mapping[str, Mapping[str, str]],
    ) -> None:
        """A policy is new or its spec changed: match every workload against it."""
        for key, record in deployments:
            held = self._basis[key]
            selects = self._matches(policy, record, namespace_labels.get(key[0], {}))
            if selects != (policy.name in held.selected):
                selected = (
                    held.selected | {policy.name} if selects else held.selected - {policy.name}
                )
                self._update(key, held._replace(selected=selected))

    def policy_gone(self, name: str) -> None:
        """A workload that still carries a deleted policy's fields stays its concern (as an
        orphan, for cleanup) until they are removed."""
        for key in self.workloads(name):
            held = self._basis[key]
            self._update(key, held._replace(selected=held.selected - {name}))

    def drop(self, key: Key) -> None:
        self._basis.pop(key, None)
        self._set(key, NO_POLICIES)

    # -- internals --------------------------------------------------------------------------

    def _matches(
        self, policy: Policy, record: Mapping[str, Any], namespace_labels: Mapping[str, str]
    ) -> bool:
        # A deleting policy selects nothing new (as in the planner); its fields keep it involved.
        return not policy.deleting and workload_matches(
            policy.spec, record, namespace_labels, operator_namespace=self.operator_namespace
        )

    def _update(self, key: Key, basis: _Basis) -> None:
        selected, carrying = self._one(basis.selected), self._one(basis.carrying)
        self._basis[key] = basis._replace(selected=selected, carrying=carrying)
        self._set(key, self._one(selected | carrying))

    def _one(self, names: frozenset[str]) -> frozenset[str]:
        """The one object for this set of names. A frozenset takes 216 bytes even for one name,
        and each workload holds three (selected, carrying, their union), nearly always the same
        one or two policies': about 0.6 KB per workload (tracemalloc over `bench.heap`'s fill)."""
        if len(self._shared) >= SHARED_SETS_MAX:
            self._shared.clear()
        return self._shared.setdefault(names, names)

    def _set(self, key: Key, policies: frozenset[str]) -> None:
        held = self._of_workload.get(key, NO_POLICIES)
        if held == policies:
            return
        self.changes += 1
        for name in held - policies:
            keys = self._of_policy[name]
            keys.discard(key)
            if not keys:
                del self._of_policy[name]
        for name in policies - held:
            self._of_policy.setdefault(name, set()).add(key)
        if policies:
            self._of_workload[key] = policies
        else:
            self._of_workload.pop(key, None)
