"""Each policy's rollout (`core.waves.Rollout`): its update and stable contents, its step and
the percent order's cuts, derived from what the cache holds (the policy, its status, its
revision history and the workloads it matches) and kept while that holds. The planner and
admission read it for every workload, in every replica. Pure.

The stable content is the revision the last rollout (the status's `updateRevision`) reached, if
every matched workload carries it and the status does not say so yet; else the status's
`currentRevision` (its ControllerRevision's content, or the spec's if that is it), else the
revision labelled stable, else the one the matched workloads
carry (all of them, or most; a policy whose workloads carry nothing has nothing as stable). A
stable revision whose content is gone is unknown: workloads not covered are held as they are.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar_operator.api.models import Content, Policy
from sidecar_operator.core import stepping, waves
from sidecar_operator.core.ownership import revision_annotation
from sidecar_operator.core.selection import workload_matches
from sidecar_operator.core.types import Key
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.history import Histories

STATUS_FIELDS = ("currentRevision", "updateRevision", "currentStep", "stepsHash", "stepDoneTime")


class Rollouts:
    def __init__(self, cache: Cache, histories: Histories, *, operator_namespace: str | None):
        self.cache = cache
        self.histories = histories
        self.operator_namespace = operator_namespace
        self._held: dict[str, _Held] = {}
        # Moves whenever any policy's rollout changes the targets it decides (`decides`): what
        # another policy's counts may depend on. A rollout completing moves it not.
        self.version = 0

    def of(self, name: str) -> waves.Rollout | None:
        entry = self.cache.policy(name)
        if entry is None:
            self._held.pop(name, None)
            return None
        # The planner asks for every policy concerning each workload it plans: the cache's
        # entry of the policy (replaced on every change of it or its status) is compared
        # first, the status fields only when that was replaced.
        around = (self.histories.version, self.cache.epoch, self.cache.concern_count(name))
        held = self._held.get(name)
        if held is not None and held.entry is entry and held.around == around:
            return held.rollout
        policy, extra = entry
        status = extra.get("status") or {}
        inputs = (policy, tuple(status.get(key) for key in STATUS_FIELDS), around)
        if held is not None and held.inputs == inputs:
            rollout = held.rollout
        else:
            rollout = self._derive(policy, status, held.rollout if held is not None else None)
            if held is not None and held.rollout == rollout:
                rollout = held.rollout  # the same object: what compares with it does at once
            elif held is None or held.rollout.decides != rollout.decides:
                self.version += 1
        self._held[name] = _Held(entry, around, inputs, rollout)
        return rollout

    def every(self) -> dict[str, waves.Rollout]:
        found = {}
        for name in self.cache.policies():
            rollout = self.of(name)
            if rollout is not None:
                found[name] = rollout
        return found

    def forget(self, name: str) -> None:
        self._held.pop(name, None)

    def _derive(
        self, policy: Policy, status: Mapping[str, Any], before: waves.Rollout | None
    ) -> waves.Rollout:
        steps = waves.steps_of(policy)
        position = stepping.Position.of(policy, status)
        rollout = waves.Rollout(
            update=policy.spec,
            stable=self.stable(policy, status),
            steps=steps,
            step=position.step,
            seed=policy.uid,
            aborted=bool(policy.abort) and policy.abort == policy.spec.revision,
        )
        if not rollout.stepped or not any(step.percent for step in steps[:-1]):
            return rollout
        # Its ranks are kept from the rollout before (a workload created mid-rollout derives it
        # again): only newcomers are hashed.
        known = before.ranks if before is not None and before.seed == policy.uid else None
        ranks = waves.ranks(policy.uid, (key for key, _ in self.matched(policy)), known)
        return dataclasses.replace(rollout, cuts=waves.cuts(steps, ranks.values()), ranks=ranks)

    def matched(self, policy: Policy) -> list[tuple[Key, Mapping[str, Any]]]:
        """The workloads the policy selects (not those it only still has fields on)."""
        return [
            (key, workload)
            for key, workload in self.cache.concerning(policy.name)
            if workload_matches(
                policy.spec,
                workload,
                self.cache.namespace_labels(key.namespace),
                operator_namespace=self.operator_namespace,
            )
        ]

    def stable(self, policy: Policy, status: Mapping[str, Any]) -> waves.Target:
        history = self.histories.of(policy.name)
        known: dict[str, Content] = {r.revision: r.content for r in history.values()}
        known[policy.spec.revision] = policy.spec
        current = status.get("currentRevision")
        previous = status.get("updateRevision")
        if previous and previous not in (current, policy.spec.revision):
            key = revision_annotation(policy.name)
            reached = {
                (workload["metadata"].get("annotations") or {}).get(key)
                for _, workload in self.matched(policy)
            }
            if reached <= {previous}:
                # The policy changed after its last rollout reached every workload but before
                # a pass recorded that: what they all carry is the stable revision, not what
                # the status still says (a new policy's nothing would strip them all).
                return known.get(previous, waves.HOLD)
        if current == "":
            return None  # a new policy's: nothing, until its first revision is everywhere
        if current is not None:
            return known.get(current, waves.HOLD)
        labelled = next((r for r in history.values() if r.stable), None)
        if labelled is not None:
            return labelled.content
        key = revision_annotation(policy.name)
        carried = collections.Counter(
            (workload["metadata"].get("annotations") or {}).get(key, "")
            for _, workload in self.matched(policy)
        )
        return waves.bootstrap_stable(waves.Carried(carried), known)


@dataclass(frozen=True, slots=True)
class _Held:
    """A policy's rollout, and what it was derived from."""

    entry: tuple[Policy, Mapping[str, Any]]  # the cache's, as it was last asked with
    around: tuple[int, int, int]  # history's version, the cache's epoch, how many it concerns
    inputs: tuple[Any, ...]
    rollout: waves.Rollout
