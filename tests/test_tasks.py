"""Tasks beside the workers: held until they end, and a failure is said, not lost."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from sidecar_operator.engine import tasks
from sidecar_operator.engine.tasks import spawn


class Log:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **values: Any) -> None:
        self.errors.append((event, values))


async def test_a_held_task_is_let_go_when_it_ends_and_its_failure_is_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = Log()
    monkeypatch.setattr(tasks, "log", log)

    async def write() -> None:
        raise RuntimeError("no answer")

    held: set[asyncio.Task[object]] = set()
    task = spawn(write(), "remove orphan logs from shop/web", held)
    assert held == {task}
    with contextlib.suppress(RuntimeError):
        await task
    await asyncio.sleep(0)  # the done callbacks run
    assert held == set()
    assert log.errors == [
        (
            "Background task failed",
            {"task": "remove orphan logs from shop/web", "error": "RuntimeError('no answer')"},
        )
    ]


async def test_a_cancelled_task_is_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    log = Log()
    monkeypatch.setattr(tasks, "log", log)
    task = spawn(asyncio.sleep(3600), "watch")
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert log.errors == []
