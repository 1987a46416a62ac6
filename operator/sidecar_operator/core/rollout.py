"""Pacing a policy's change across the cluster. Pure.

Everything is derived from the cluster as it is: a Deployment is rolling out this policy's change
from the moment the policy wrote its revision (any revision: an edit during a rollout does not
forget the Deployments still rolling the one before) until its rollout finished. So an operator
that was killed mid-rollout and started again counts the same Deployments in flight and keeps to
the budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
    """What the rollout may write now, and why the rest waits (`tally.Tally.step`)."""

    writes: list[Item]
    budget: int
    in_flight: int  # workloads holding a place in the budget
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
    return workloads.idle(workload) or (bool(policy_created) and created > policy_created)


def paced(item: Item, policy_created: str) -> bool:
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


def rolling(item: Item, rolled: bool) -> bool:
    """Rolling out a revision of this policy: it carries the current one, or an older one that
    the policy wrote after the owners' last change, and its rollout has not finished (`rolled`:
    `workloads.rolled_out`). A paused Deployment rolls out nothing, so it holds no place in the
    budget while it stays paused."""
    if rolled or workloads.owner_paused(item.deployment):
        return False
    if item.action.kind is Kind.IN_SYNC:
        return True
    annotations = item.deployment.get("metadata", {}).get("annotations") or {}
    return revision_annotation(item.action.policy) in annotations and wrote_last(
        item.deployment, item.action.policy
    )
