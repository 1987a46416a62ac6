"""`stored.difference` keeps the results of recent comparisons by the identity of the pair."""

from __future__ import annotations

import copy

from sidecar_operator.core import stored


def test_a_kept_comparison_answers_only_for_the_very_same_objects() -> None:
    wanted = {"name": "logs", "image": "fluent-bit:3.2"}
    live = {"name": "logs", "image": "fluent-bit:3.2"}
    assert stored.difference(live, wanted, "Container") == ""
    other = copy.deepcopy(live)
    other["image"] = "fluent-bit:3.1"
    # equal keys by value, another object: compared, not taken from what was kept
    assert stored.difference(other, wanted, "Container") == "image"
    assert stored.difference(live, wanted, "Container") == ""


def test_what_is_used_often_outlives_what_passes_through() -> None:
    kept = stored._Kept(2)
    kept.put("often", 1)
    kept.put("a", 2)
    kept.put("b", 3)  # the first generation is full: it becomes the older one
    assert kept.get("often") == 1  # found in the older: moved into the newer
    kept.put("c", 4)
    kept.put("d", 5)  # the older generation ("a") goes
    assert kept.get("a") is None
    assert kept.get("often") == 1
