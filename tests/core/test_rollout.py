"""Pacing decisions, from cluster state alone."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from sidecar_operator.api.models import Content
from sidecar_operator.core import tally, waves
from sidecar_operator.core.rollout import Item, Step, budget
from sidecar_operator.core.types import Action, Change, Key, Kind

POLICY_CREATED = "2026-01-01T00:00:00Z"
# A Deployment fails by its own condition: the deadline for the other kinds is never reached.
TIMING: dict[str, Any] = {
    "progress_deadline_seconds": 600,
    "now": datetime.datetime(2026, 3, 1, 10, 0, 1, tzinfo=datetime.UTC),
}
BODY = {"apiVersion": "apps/v1"}
SPEC: dict[str, Any] = {"f:spec": {"f:template": {}}}


def deployment(
    *,
    rolled_out: bool = True,
    failed: bool = False,
    available: int = 1,
    created: str = "2025-12-01T00:00:00Z",
    carries: str | None = None,
    policy_wrote: str = "2026-03-01T10:00:00Z",
    owner_wrote: str = "2026-03-01T09:00:00Z",
) -> dict[str, Any]:
    """`carries`: the policy's revision annotation, written by its manager at `policy_wrote`;
    the owner last changed the spec at `owner_wrote`."""
    conditions = [{"type": "Available", "status": "True" if rolled_out else "False"}]
    if failed:
        conditions.append(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        )
    managed = [
        {"manager": "kubectl", "operation": "Update", "time": owner_wrote, "fieldsV1": SPEC},
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "time": "2027-01-01T00:00:00Z",
            "fieldsV1": {"f:metadata": {}},
        },
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "time": "2027-01-01T00:00:00Z",
            "fieldsV1": {"f:status": {}},
        },
    ]
    annotations = {}
    if carries:
        annotations["policy.sidecars.dev/logs"] = carries
        managed.append(
            {
                "manager": "sidecars.dev/logs",
                "operation": "Apply",
                "time": policy_wrote,
                "fieldsV1": {"f:metadata": {}, "f:spec": {}},
            }
        )
    return {
        "metadata": {
            "generation": 2,
            "creationTimestamp": created,
            "annotations": annotations,
            "managedFields": managed,
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2 if rolled_out else 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": available,
            "conditions": conditions,
        },
    }


def item(name: str, kind: Kind, change: str = "", **state: Any) -> Item:
    body = BODY if kind in (Kind.APPLY, Kind.REMOVE) else None
    action = Action("logs", kind, body, change=Change(change) if change else None)
    return Item(Key("shop", name), deployment(**state), action)


def step(
    items: list[Item],
    *,
    max_concurrent: int | str,
    paused: bool,
    policy_created: str,
    progress_deadline_seconds: int,
    now: datetime.datetime,
) -> Step:
    """What a tally of these items lets the rollout write now."""
    content = Content.model_validate({"containers": [{"name": "fluent-bit", "image": "fb:3"}]})
    context = tally.Context(
        policy="logs",
        revision="",
        policy_created=policy_created,
        paused=paused,
        max_concurrent=max_concurrent,
        deadline_seconds=progress_deadline_seconds,
        rollout=waves.Rollout(content, None, (waves.EVERYWHERE,), 0, "u-logs"),
        step=0,
    )
    return tally.of_items(items, context, now).step()


def written(items: list[Item], **options: Any) -> list[str]:
    settings = {"max_concurrent": 2, "paused": False, "policy_created": POLICY_CREATED, **TIMING}
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
    result = step(items, max_concurrent=5, paused=False, policy_created=POLICY_CREATED, **TIMING)
    assert [i.key[1] for i in result.writes] == ["gone"]
    assert result.failing == [Key("shop", "broken")] and result.waiting == 1


def test_deployments_with_nothing_to_disrupt_do_not_wait() -> None:
    items = [
        item("busy", Kind.IN_SYNC, rolled_out=False),
        item("fresh", Kind.APPLY, "inject", created="2026-02-01T00:00:00Z"),
        item("scaled-to-zero", Kind.APPLY, "inject", available=0),
        item("running", Kind.APPLY, "inject"),
    ]
    assert written(items, max_concurrent=1) == ["fresh", "scaled-to-zero"]


def test_a_status_older_than_the_spec_does_not_make_a_workload_idle() -> None:
    """The cache can hold a workload as its creation's first event left it (no pods available
    yet, per a status about no generation): it may be running by now, so it waits its turn."""
    unseen = item("unseen", Kind.APPLY, "inject", available=0)
    unseen.deployment["status"]["observedGeneration"] = 1  # the spec is at generation 2
    assert written([item("busy", Kind.IN_SYNC, rolled_out=False), unseen], max_concurrent=1) == []


def test_paused_touches_nothing_further_but_removes_and_repairs() -> None:
    items = [
        item("new", Kind.APPLY, "inject", available=0),
        item("next", Kind.APPLY, "update"),
        item("edited", Kind.APPLY, "repair"),
        item("unmatched", Kind.REMOVE, "remove"),
    ]
    assert sorted(written(items, paused=True)) == ["edited", "unmatched"]


def test_deployments_still_rolling_an_older_revision_count_against_the_budget() -> None:
    """An edit during a rollout: those the policy patched with the previous revision are still
    rolling it, and take slots until done."""
    rolling_old = [
        item(name, Kind.APPLY, "update", rolled_out=False, carries="old") for name in ("a", "b")
    ]
    waiting = [item(name, Kind.APPLY, "update", carries="old") for name in ("c", "d", "e")]
    result = step(
        rolling_old + waiting,
        max_concurrent=3,
        paused=False,
        policy_created=POLICY_CREATED,
        **TIMING,
    )
    assert result.in_flight == 2  # a and b
    # a and b move on to the new revision without a further slot; one newcomer gets the last.
    assert sorted(i.key[1] for i in result.writes) == ["a", "b", "c"]
    assert result.waiting == 2


def test_an_owner_rollout_after_the_policy_wrote_is_not_the_policy_s() -> None:
    """The app's own deploy of a Deployment that carries an old revision takes no slot."""
    owners = item(
        "deploying",
        Kind.APPLY,
        "update",
        rolled_out=False,
        carries="old",
        policy_wrote="2026-03-01T10:00:00Z",
        owner_wrote="2026-03-01T10:05:00Z",
    )
    nexts = [item(name, Kind.APPLY, "update", carries="old") for name in ("x", "y")]
    result = step(
        [owners, *nexts], max_concurrent=2, paused=False, policy_created=POLICY_CREATED, **TIMING
    )
    assert result.in_flight == 0
    assert [i.key[1] for i in result.writes] == ["deploying", "x"]


def test_a_halted_rollout_moves_nothing_further_onto_the_current_revision() -> None:
    items = [
        item("broken", Kind.IN_SYNC, rolled_out=False, failed=True, carries="new"),
        item("rolling-old", Kind.APPLY, "update", rolled_out=False, carries="old"),
    ]
    result = step(items, max_concurrent=5, paused=False, policy_created=POLICY_CREATED, **TIMING)
    assert result.writes == [] and result.waiting == 1
    assert result.in_flight == 2  # broken and rolling-old


def paused_by_owner(name: str, kind: Kind, change: str = "") -> Item:
    held = item(name, kind, change, rolled_out=False, carries="new")
    held.deployment["spec"]["paused"] = True  # `kubectl rollout pause`
    return held


def test_a_deployment_its_owner_paused_is_written_but_holds_no_place_in_the_budget() -> None:
    """Paused, it would never roll out: holding a slot, it stopped a `maxConcurrent: 1`
    rollout for good."""
    items = [
        paused_by_owner("paused", Kind.IN_SYNC),
        paused_by_owner("paused-too", Kind.APPLY, "update"),
        item("next", Kind.APPLY, "update"),
        item("after", Kind.APPLY, "update"),
    ]
    result = step(items, max_concurrent=1, paused=False, policy_created=POLICY_CREATED, **TIMING)
    assert result.in_flight == 0
    assert [i.key[1] for i in result.writes] == ["paused-too", "after"]
    assert result.owner_paused == [Key("shop", "paused")]
