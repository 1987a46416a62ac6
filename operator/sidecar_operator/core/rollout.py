"""Pacing a policy's change across the cluster. Pure.

Everything is derived from the cluster as it is: a Deployment is rolling out this policy's change
from the moment the policy wrote its revision (any revision: an edit during a rollout does not
forget the Deployments still rolling the one before) until its rollout finished. So an operator
that was killed mid-rollout and started again counts the same Deployments in flight and keeps to
the budget.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar_operator.core import workloads
from sidecar_operator.core.ownership import revision_annotation, wrote_last
from sidecar_operator.core.types import Action, Change, Key, Kind


@dataclass(frozen=True)
class Item:
    key: Key
    deployment: Mapping[str, Any]
    action: Action  # this policy's action for the Deployment


@dataclass(frozen=True)
class Step:
    """What one pass may write, and why the rest waits."""

    writes: list[Item]
    budget: int
    in_flight: list[Key]
    failing: list[Key]  # carry the current revision and missed their progress deadline
    waiting: int  # paced writes held back this pass
    owner_paused: list[Key]  # carry the current revision, waiting for their owners to resume


def budget(max_concurrent: int | str, matched: int) -> int:
    """`maxConcurrent` as a number of Deployments: a percentage rounds up, and at least 1."""
    if isinstance(max_concurrent, str):
        return max(1, math.ceil(matched * int(max_concurrent.rstrip("%")) / 100))
    return max(1, max_concurrent)


def nothing_to_disrupt(workload: Mapping[str, Any], *, policy_created: str) -> bool:
    """A workload born while the policy existed should have had its sidecars from the start,
    and one with no available pods has nothing running to disrupt: neither waits its turn."""
    created = workload["metadata"].get("creationTimestamp") or ""
    return workloads.running(workload) == 0 or (bool(policy_created) and created > policy_created)


def _paced(item: Item, policy_created: str) -> bool:
    """Injecting into or updating a running workload restarts its pods: that is paced.
    Removal, repairs, CronJobs, workloads their owners paused (their pods change when resumed)
    and injection into workloads with nothing to disrupt are not."""
    if item.action.kind is not Kind.APPLY or not workloads.disruptible(item.deployment):
        return False
    if workloads.owner_paused(item.deployment):
        return False
    if item.action.change is Change.UPDATE:
        return True
    return item.action.change is Change.INJECT and not nothing_to_disrupt(
        item.deployment, policy_created=policy_created
    )


def _rolling(item: Item) -> bool:
    """Rolling out a revision of this policy: it carries the current one, or an older one that
    the policy wrote after the owners' last change, and its rollout has not finished. A paused
    Deployment rolls out nothing, so it holds no place in the budget while it stays paused."""
    if workloads.rolled_out(item.deployment) or workloads.owner_paused(item.deployment):
        return False
    if item.action.kind is Kind.IN_SYNC:
        return True
    annotations = item.deployment.get("metadata", {}).get("annotations") or {}
    return revision_annotation(item.action.policy) in annotations and wrote_last(
        item.deployment, item.action.policy
    )


def step(
    items: Sequence[Item],
    *,
    max_concurrent: int | str,
    paused: bool,
    policy_created: str,
    progress_deadline_seconds: int,
    now: datetime.datetime,
) -> Step:
    matched = [item for item in items if item.action.kind is not Kind.REMOVE]
    in_flight = sorted(item.key for item in matched if _rolling(item))
    failing = sorted(
        item.key
        for item in matched
        if item.action.kind is Kind.IN_SYNC
        and workloads.failed(
            item.deployment,
            item.action.policy,
            deadline_seconds=progress_deadline_seconds,
            now=now,
        )
    )
    allowed = budget(max_concurrent, len(matched))
    pending = [item for item in items if item.action.body is not None]
    if paused:  # touch no further Deployment: only removals and repairs go ahead
        pending = [
            item
            for item in pending
            if item.action.kind is not Kind.APPLY or item.action.change is Change.REPAIR
        ]
    paced = [item for item in pending if _paced(item, policy_created)]
    unpaced = [item for item in pending if not _paced(item, policy_created)]
    # A Deployment still rolling an older revision is counted already: moving it on to the
    # current one takes no further slot (and is how a rollout stuck on it gets going again).
    # Halted, nothing more gets the current revision.
    held = paused or bool(failing)
    rolling = set(in_flight)
    moving_on = [] if held else [item for item in paced if item.key in rolling]
    newcomers = sorted((item for item in paced if item.key not in rolling), key=lambda i: i.key)
    slots = 0 if held else max(0, allowed - len(in_flight))
    started = newcomers[:slots]
    owner_paused = sorted(
        item.key
        for item in matched
        if item.action.kind is Kind.IN_SYNC
        and workloads.owner_paused(item.deployment)
        and not workloads.rolled_out(item.deployment)
    )
    return Step(
        writes=unpaced + moving_on + started,
        budget=allowed,
        in_flight=in_flight,
        failing=failing,
        waiting=len(paced) - len(moving_on) - len(started),
        owner_paused=owner_paused,
    )
