"""The heap is frozen again only once enough workloads' snapshots were replaced since the last
freeze, and then holds only what is alive."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from sidecar_operator.engine import heap
from sidecar_operator.engine.heap import Heap
from sidecar_operator.state.cache import Cache


class Node:
    next: Node | None = None


def workload(index: int, version: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"web-{index}",
            "namespace": "shop",
            "uid": f"u{index}",
            "resourceVersion": str(version),
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }


def test_frozen_again_once_enough_snapshots_were_replaced(monkeypatch: Any) -> None:
    monkeypatch.setattr(heap, "REPLACED_MIN", 20)
    cache = Cache()
    for index in range(40):
        cache.put_workload(workload(index, 1))
    held = Heap(cache)
    try:
        held.freeze()
        assert not held.stale() and gc.get_freeze_count() > 0
        for index in range(19):
            cache.put_workload(workload(index, 2))
        assert not held.stale()  # 19 of 40 replaced
        cache.put_workload(workload(19, 2))
        assert held.stale()
        garbage = Node()
        garbage.next = garbage  # a cycle nothing refers to: collected, not frozen for good
        gone = weakref.ref(garbage)
        del garbage
        held.freeze()
        assert not held.stale()
        assert gone() is None
    finally:
        gc.unfreeze()
