"""Waves: a rollout in steps, each widening the set of workloads that get the update revision,
while the others keep the stable one. Pure: from a policy, what its status and history say and
the workloads it matches, which content each workload is to carry and where the rollout stands.

- Coverage is cumulative: step k covers every workload of steps 0..k. A `selector` or
  `namespaceSelector` step adds the matched workloads it selects; a `percent` step raises the
  coverage to that share of the matched workloads, taken in the order of a hash seeded by the
  policy's uid (stable: adding a workload reshuffles no other; spread across namespaces as a
  hash spreads). The last step covers every workload. A workload already carrying the update
  revision stays covered: within one rollout coverage only grows.
- A covered workload's target is the update content; any other's the stable content, which may
  be nothing (a new policy's first rollout) or not known (a policy from before history was
  kept, whose workloads carry a revision whose content is gone): then it is held, untouched.
- An aborted rollout, or one whose update content is the stable content (an undo), covers
  nothing and everything respectively: back to stable, under `maxConcurrent` alone.

When a step is done and the rollout moves on is `stepping`'s.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sidecar_operator.api.models import Content, Policy, Step
from sidecar_operator.core.ownership import revision_annotation
from sidecar_operator.core.selection import selector_matches
from sidecar_operator.core.types import Key


class Hold(Enum):
    """The stable content is not known: a workload not covered is left as it is."""

    HOLD = "hold"


HOLD = Hold.HOLD
# What a workload is to carry of a policy: a content, nothing (None), or as it is (HOLD).
Target = Content | Hold | None

EVERYWHERE = Step(percent=100)  # a rollout without steps is one step covering every workload


def steps_of(policy: Policy) -> tuple[Step, ...]:
    """The steps a rollout takes: the policy's, or one covering every workload."""
    return tuple(policy.spec.update_strategy.steps) or (EVERYWHERE,)


def rank(seed: str, key: Key) -> int:
    """A workload's place in a policy's percent order."""
    text = f"{seed}/{key.kind}/{key.namespace}/{key.name}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def ranks(seed: str, keys: Iterable[Key], known: Mapping[Key, int] | None = None) -> dict[Key, int]:
    """The workloads' places in a policy's percent order; `known`: ranks already computed with
    the same seed, taken instead of hashing again."""
    known = known or {}
    return {key: known[key] if key in known else rank(seed, key) for key in keys}


def cuts(steps: Sequence[Step], ranks: Iterable[int]) -> tuple[int, ...]:
    """Per step, the rank below which its percent (or a step's before it) covers a workload:
    the first ceil(p% of the matched) of them in the policy's order."""
    ordered = sorted(ranks)
    found: list[int] = []
    percent = 0
    for step in steps:
        percent = max(percent, step.percent or 0)
        count = math.ceil(len(ordered) * percent / 100)
        found.append(ordered[count - 1] + 1 if count else 0)
    return tuple(found)


@dataclass(frozen=True)
class Rollout:
    """Where one policy's rollout stands: what the planner (and admission) decide each
    workload's target from."""

    update: Content
    stable: Target  # a content, nothing (None), or unknown (HOLD)
    steps: tuple[Step, ...]
    step: int
    seed: str  # the policy's uid: the percent order's
    cuts: tuple[int, ...] = ()  # see `cuts`; empty: nothing covered by percent yet
    aborted: bool = False
    # The matched workloads' ranks the cuts were taken from: a pass asks every workload's
    # twice (its target, its step), and hashing it each time was 8% of the first pass after
    # an edit over 1000 workloads.
    ranks: Mapping[Key, int] = field(default_factory=dict, compare=False, repr=False)

    def rank(self, key: Key) -> int:
        """The workload's place in the percent order."""
        found = self.ranks.get(key)
        return rank(self.seed, key) if found is None else found

    @functools.cached_property  # read for every workload planned or counted
    def stepped(self) -> bool:
        """Whether steps decide the targets (not when rolling back to the stable content)."""
        stable = self.stable
        same = isinstance(stable, Content) and stable.revision == self.update.revision
        return not self.aborted and not same

    @functools.cached_property  # read for every policy concerning each workload planned
    def decides(self) -> tuple[Any, ...]:
        """What `target` reads of it: two rollouts alike in this give every workload the same
        target, so a plan made under one holds under the other. A policy's rollout completing
        (its stable content going from nothing to the update's) changes no target; with a
        hundred policies completing one by one, their workloads were all planned again."""
        if not self.stepped:
            return (target_identity(self.stable if self.aborted else self.update),)
        if self.step >= len(self.steps) - 1:
            return (target_identity(self.update),)  # the last step covers every workload
        return (
            target_identity(self.update),
            target_identity(self.stable),
            self.steps,
            self.step,
            self.seed,
            self.cuts,
        )

    def covered(
        self, key: Key, workload: Mapping[str, Any], namespace_labels: Mapping[str, str]
    ) -> bool:
        """Whether the steps up to the current one cover the workload (its carrying the
        update revision aside: see `target`)."""
        last = len(self.steps) - 1
        if self.step >= last:
            return True
        if self.cuts and self.rank(key) < self.cuts[self.step]:
            return True
        labels = workload.get("metadata", {}).get("labels") or {}
        return any(_selects(step, labels, namespace_labels) for step in self._selecting)

    @functools.cached_property
    def _selecting(self) -> tuple[Step, ...]:
        """The steps up to the current one that cover by selector, not by percent."""
        return tuple(
            step
            for step in self.steps[: self.step + 1]
            if step.selector is not None or step.namespace_selector is not None
        )

    def target(
        self,
        key: Key,
        workload: Mapping[str, Any],
        namespace_labels: Mapping[str, str],
        carried: str | None,
    ) -> Target:
        if not self.stepped:
            return self.stable if self.aborted else self.update
        if carried == self.update.revision or self.covered(key, workload, namespace_labels):
            return self.update
        return self.stable


def target_identity(target: Target) -> object:
    """A content by its revision (the hash of what it adds), nothing and unknown as they are."""
    return target.revision if isinstance(target, Content) else target


def _selects(step: Step, labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
    if step.selector is None and step.namespace_selector is None:
        return False
    return (step.selector is None or selector_matches(step.selector, labels)) and (
        step.namespace_selector is None
        or selector_matches(step.namespace_selector, namespace_labels)
    )


def first_step(
    steps: Sequence[Step],
    step_cuts: Sequence[int],
    order: int,
    workload: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
) -> int:
    """The first step that covers the workload, whose rank in the percent order is `order`."""
    labels = workload.get("metadata", {}).get("labels") or {}
    for index, step in enumerate(steps):
        if (step_cuts and order < step_cuts[index]) or _selects(step, labels, namespace_labels):
            return index
    return len(steps) - 1


def place(
    rollout: Rollout,
    step: int,
    policy: str,
    key: Key,
    workload: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    rolled: bool,
) -> tuple[int, bool, bool]:
    """A matched, non-conflicting workload's share of the steps' counts, at the rollout's
    current `step`: the first step covering it (no later than the current one if it carries the
    update revision: coverage only grows), whether it carries that revision, and whether it is
    rolled out."""
    annotations = workload.get("metadata", {}).get("annotations") or {}
    carries = annotations.get(revision_annotation(policy)) == rollout.update.revision
    steps = rollout.steps if rollout.stepped else (EVERYWHERE,)
    order = rollout.rank(key) if rollout.cuts else 0
    first = first_step(steps, rollout.cuts, order, workload, namespace_labels)
    if carries and rollout.stepped:
        first = min(first, step)
    return (first, carries, rolled)


@dataclass(frozen=True)
class Carried:
    """Which revisions a policy's matched workloads carry ("" for none), for a stable revision
    not yet known (a policy rolled out before history was kept)."""

    counts: Mapping[str, int] = field(default_factory=dict)

    def most(self) -> str | None:
        if not self.counts:
            return None
        return max(sorted(self.counts), key=lambda revision: self.counts[revision])


def bootstrap_stable(carried: Carried, known: Mapping[str, Content]) -> Target:
    """The stable content of a policy whose history has none: nothing if no workload carries
    the policy, else the revision they all (or most) carry, if its content is known; else
    unknown (the workloads keep what they carry)."""
    revision = carried.most()
    if not revision:  # none, or most carry nothing
        return None
    return known.get(revision, HOLD)
