"""The core's plan for each Deployment, kept while what it was planned from holds.

A pass walks every Deployment the policy concerns, and a rollout changes each one's status many
times a second: re-planning on each cost a core. A plan is reused while neither the Deployment's
spec and metadata, nor its namespace's labels, nor the policies that concern it, nor the target
their rollouts give it (`Rollout.target`) have changed. Only those: with a hundred
policies over 5000 workloads, a stamp of every policy's made each policy's rollout completing
plan the other ninety-nine's workloads again, and the completions, one by one, planned 14,600
workloads in what should have been a minute at rest (5.9 CPU s). Those are looked at only
once something they come from moved anywhere (`Cache.moved`, the history's version): a resync
at rest finds each plan valid by comparing two tuples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from sidecar_operator.core import planner, waves
from sidecar_operator.core.ownership import revision_annotation
from sidecar_operator.core.types import Action, Key
from sidecar_operator.state.cache import Cache, Changed
from sidecar_operator.state.rollouts import Rollouts


def plan_inputs(deployment: Mapping[str, Any]) -> tuple[Any, ...]:
    """What `render.plan` reads of a Deployment: its metadata, and its pod template, which the
    generation stands for (bumped on every spec change). Empty, so never reused, for an object
    the API server has not versioned."""
    metadata = deployment["metadata"]
    if not metadata.get("resourceVersion") or "generation" not in metadata:
        return ()
    return (
        metadata.get("uid"),
        metadata["generation"],
        metadata.get("labels"),
        metadata.get("annotations"),
        metadata.get("managedFields"),
    )


class Plans:
    def __init__(self, cache: Cache, rollouts: Rollouts, *, operator_namespace: str | None) -> None:
        self.cache = cache
        self.rollouts = rollouts
        self.operator_namespace = operator_namespace
        self._plans: dict[Key, _Plan] = {}

    def plan(self, deployment: Mapping[str, Any]) -> list[Action]:
        key = Key.of(deployment)
        inputs = plan_inputs(deployment)
        cached = self._plans.get(key)
        if not inputs or cached is None or cached.inputs != inputs:
            cached = None
        # Nothing moved anywhere since the plan was checked last: a resync pass at rest asks
        # this of every workload, and building the stamp each time was a third of its cost.
        moved = (self.cache.moved, self.rollouts.histories.version)
        if cached is not None and cached.moved == moved:
            return cached.actions
        concerned = self.cache.concerned(key)
        rollouts = {name: r for name in concerned if (r := self.rollouts.of(name)) is not None}
        labels = self.cache.namespace_labels(key.namespace)
        annotations = deployment["metadata"].get("annotations") or {}
        stamp = (
            self.cache.changed_at(Changed.NAMESPACE, key.namespace),
            tuple(
                (
                    name,
                    self.cache.changed_at(Changed.POLICY, name),
                    # What the planner reads of the rollout: this workload's target. A step
                    # moving on plans again the workloads it covers anew, not all of them.
                    waves.target_identity(
                        rollouts[name].target(
                            key, deployment, labels, annotations.get(revision_annotation(name))
                        )
                    )
                    if name in rollouts
                    else None,
                )
                for name in sorted(concerned)
            ),
        )
        if cached is not None and cached.stamp == stamp:
            self._plans[key] = cached._replace(moved=moved)
            return cached.actions
        # Only the policies that select it or own fields on it get an action (the cache keeps
        # them indexed): with a hundred policies, matching the others again was a tenth of the
        # operator's CPU while it injected.
        policies = [
            entry[0] for name in concerned if (entry := self.cache.policy(name)) is not None
        ]
        actions = planner.plan(
            deployment,
            labels,
            policies,
            operator_namespace=self.operator_namespace,
            rollouts=rollouts,
        )
        self._plans[key] = _Plan(inputs, stamp, moved, actions)
        return actions

    def forget(self, key: Key) -> None:
        self._plans.pop(key, None)


class _Plan(NamedTuple):
    """A workload's plan, and what it was made from."""

    inputs: tuple[Any, ...]  # the workload's (`plan_inputs`)
    stamp: tuple[Any, ...]  # its namespace's, its policies' and their rollouts'
    moved: tuple[Any, ...]  # `Cache.moved` and the history's version when last found valid
    actions: list[Action]
