"""Status conditions from counts."""

from __future__ import annotations

from sidecar_operator.core import status
from sidecar_operator.core.status import Counts


def by_type(conditions: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in conditions}


def test_complete_rollout_is_ready() -> None:
    conditions = by_type(status.conditions(Counts(3, 3, 3, 0), paused=False))
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "Complete"
    assert conditions["Degraded"]["status"] == "False"


def test_rolling_out_says_how_far() -> None:
    conditions = by_type(status.conditions(Counts(12, 9, 8, 0), paused=False))
    assert conditions["Ready"]["reason"] == "RollingOut"
    assert conditions["Ready"]["message"] == "8/12 workloads ready, 9/12 updated"
    assert conditions["Progressing"]["status"] == "True"


def test_conflicts_degrade_but_do_not_block_ready() -> None:
    conditions = by_type(
        status.conditions(Counts(3, 2, 2, 1), paused=False, conflict_examples=["shop/web: clash"])
    )
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "True"
    assert "shop/web: clash" in conditions["Degraded"]["message"]


def test_paused_is_not_progressing() -> None:
    conditions = by_type(status.conditions(Counts(4, 1, 1, 0), paused=True))
    assert conditions["Progressing"] == {
        **conditions["Progressing"],
        "status": "False",
        "reason": "Paused",
    }


def test_transition_time_is_kept_while_status_holds() -> None:
    first = status.merge_conditions(
        [],
        status.conditions(Counts(1, 1, 1, 0), paused=False),
        now="2026-01-01T00:00:00Z",
        generation=1,
    )
    again = status.merge_conditions(
        first,
        status.conditions(Counts(1, 1, 1, 0), paused=False),
        now="2026-01-02T00:00:00Z",
        generation=1,
    )
    assert again == first
    flipped = status.merge_conditions(
        first,
        status.conditions(Counts(2, 1, 1, 0), paused=False),
        now="2026-01-03T00:00:00Z",
        generation=2,
    )
    assert by_type(flipped)["Ready"]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_counts_moving_and_workloads_coming_keep_to_a_pace_and_the_rest_is_at_once() -> None:
    """Under churn a rollout at rest goes from complete to rolling out and back with every new
    workload: written at once, a status write per created workload."""

    def of(counts: Counts, **fields: object) -> dict[str, object]:
        base = {"observedGeneration": 1, "revision": "r1", "currentRevision": "r1"}
        return base | fields | {"conditions": status.conditions(counts, paused=False)}

    complete = of(Counts(10, 10, 10, 0))
    a_new_workload = of(Counts(11, 10, 10, 0))
    assert status.rolling_on(complete, a_new_workload)
    assert status.rolling_on(a_new_workload, of(Counts(11, 11, 11, 0)))
    assert not status.rolling_on({}, complete)  # a first status
    assert not status.rolling_on(complete, of(Counts(10, 10, 10, 0), observedGeneration=2))
    assert not status.rolling_on(complete, of(Counts(10, 10, 10, 0), currentRevision="r2"))
    assert not status.rolling_on(complete, of(Counts(11, 10, 10, 1)))  # a conflict
    paused = complete | {"conditions": status.conditions(Counts(11, 10, 10, 0), paused=True)}
    assert not status.rolling_on(complete, paused)
