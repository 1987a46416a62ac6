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
