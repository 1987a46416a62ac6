"""Pacing a policy's change across the cluster. Pure.

Everything is derived from the cluster as it is: a Deployment is rolling out this policy's change
from the moment it carries the current revision until its rollout finished. So an operator that
was killed mid-rollout and started again counts the same Deployments in flight and keeps to the
budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar_operator.render import Action, Kind
from sidecar_operator.status import rolled_out

Key = tuple[str, str]


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


def budget(max_concurrent: int | str, matched: int) -> int:
    """`maxConcurrent` as a number of Deployments: a percentage rounds up, and at least 1."""
    if isinstance(max_concurrent, str):
        return max(1, math.ceil(matched * int(max_concurrent.rstrip("%")) / 100))
    return max(1, max_concurrent)


def nothing_to_disrupt(deployment: Mapping[str, Any], *, policy_created: str) -> bool:
    """A Deployment born while the policy existed should have had its sidecars from the start,
    and one with no available pods has nothing running to disrupt: neither waits its turn."""
    created = deployment["metadata"].get("creationTimestamp") or ""
    available = (deployment.get("status") or {}).get("availableReplicas") or 0
    return available == 0 or (bool(policy_created) and created > policy_created)


def failed(deployment: Mapping[str, Any]) -> bool:
    conditions = (deployment.get("status") or {}).get("conditions") or []
    return any(
        c.get("type") == "Progressing"
        and c.get("status") == "False"
        and c.get("reason") == "ProgressDeadlineExceeded"
        for c in conditions
    )


def _paced(item: Item, policy_created: str) -> bool:
    """Injecting into or updating a running Deployment restarts its pods: that is paced.
    Removal, repairs and injection into Deployments with nothing to disrupt are not."""
    if item.action.kind is not Kind.APPLY or item.action.reason not in ("inject", "update"):
        return False
    return item.action.reason == "update" or not nothing_to_disrupt(
        item.deployment, policy_created=policy_created
    )


def step(
    items: Sequence[Item], *, max_concurrent: int | str, paused: bool, policy_created: str
) -> Step:
    matched = [item for item in items if item.action.kind is not Kind.REMOVE]
    current = [item for item in matched if item.action.kind is Kind.IN_SYNC]
    in_flight = sorted(item.key for item in current if not rolled_out(item.deployment))
    failing = sorted(item.key for item in current if failed(item.deployment))
    allowed = budget(max_concurrent, len(matched))
    pending = [item for item in items if item.action.body is not None]
    if paused:  # touch no further Deployment: only removals and repairs go ahead
        pending = [
            item
            for item in pending
            if item.action.kind is not Kind.APPLY or item.action.reason == "repair"
        ]
    paced = sorted(
        (item for item in pending if _paced(item, policy_created)), key=lambda item: item.key
    )
    unpaced = [item for item in pending if not _paced(item, policy_created)]
    slots = 0 if paused or failing else max(0, allowed - len(in_flight))
    return Step(
        writes=unpaced + paced[:slots],
        budget=allowed,
        in_flight=in_flight,
        failing=failing,
        waiting=max(0, len(paced) - slots),
    )
