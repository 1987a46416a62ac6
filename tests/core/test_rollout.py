"""Pacing decisions, from cluster state alone."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar_operator.render import Action, Kind
from sidecar_operator.rollout import Item, budget, step

POLICY_CREATED = "2026-01-01T00:00:00Z"
BODY = {"apiVersion": "apps/v1"}


def deployment(
    *,
    rolled_out: bool = True,
    failed: bool = False,
    available: int = 1,
    created: str = "2025-12-01T00:00:00Z",
) -> dict[str, Any]:
    conditions = [{"type": "Available", "status": "True" if rolled_out else "False"}]
    if failed:
        conditions.append(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        )
    return {
        "metadata": {"generation": 2, "creationTimestamp": created},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2 if rolled_out else 1,
            "updatedReplicas": 1,
            "availableReplicas": available,
            "conditions": conditions,
        },
    }


def item(name: str, kind: Kind, reason: str = "", **state: Any) -> Item:
    body = BODY if kind in (Kind.APPLY, Kind.REMOVE) else None
    return Item(("shop", name), deployment(**state), Action("logs", kind, body, reason=reason))


def written(items: list[Item], **options: Any) -> list[str]:
    settings = {"max_concurrent": 2, "paused": False, "policy_created": POLICY_CREATED}
    return [i.key[1] for i in step(items, **{**settings, **options}).writes]


@pytest.mark.parametrize(
    "value, matched, expected",
    [(3, 12, 3), ("25%", 12, 3), ("25%", 13, 4), ("1%", 5, 1), ("100%", 7, 7), ("25%", 0, 1)],
)
def test_budget(value: int | str, matched: int, expected: int) -> None:
    assert budget(value, matched) == expected


def test_at_most_the_budget_is_in_flight() -> None:
    items = [item("a", Kind.IN_SYNC, rolled_out=False)] + [
        item(name, Kind.APPLY, "update") for name in ("d", "b", "c")
    ]
    assert written(items) == ["b"]  # one slot left, taken in name order
    assert written(items, max_concurrent=1) == []


def test_a_failed_rollout_halts_paced_writes_but_not_removal() -> None:
    items = [
        item("broken", Kind.IN_SYNC, rolled_out=False, failed=True),
        item("next", Kind.APPLY, "update"),
        item("gone", Kind.REMOVE, "remove"),
    ]
    result = step(items, max_concurrent=5, paused=False, policy_created=POLICY_CREATED)
    assert [i.key[1] for i in result.writes] == ["gone"]
    assert result.failing == [("shop", "broken")] and result.waiting == 1


def test_deployments_with_nothing_to_disrupt_do_not_wait() -> None:
    items = [
        item("busy", Kind.IN_SYNC, rolled_out=False),
        item("fresh", Kind.APPLY, "inject", created="2026-02-01T00:00:00Z"),
        item("scaled-to-zero", Kind.APPLY, "inject", available=0),
        item("running", Kind.APPLY, "inject"),
    ]
    assert written(items, max_concurrent=1) == ["fresh", "scaled-to-zero"]


def test_paused_touches_nothing_further_but_removes_and_repairs() -> None:
    items = [
        item("new", Kind.APPLY, "inject", available=0),
        item("next", Kind.APPLY, "update"),
        item("edited", Kind.APPLY, "repair"),
        item("unmatched", Kind.REMOVE, "remove"),
    ]
    assert sorted(written(items, paused=True)) == ["edited", "unmatched"]
