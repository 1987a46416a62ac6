"""Tasks that run beside the workers on the operator's loop: one that fails is a bug, and said."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger()
T = TypeVar("T")


def spawn(
    coroutine: Coroutine[Any, Any, T], name: str, held: set[asyncio.Task[Any]] | None = None
) -> asyncio.Task[T]:
    """`held` keeps the task until it ends: the loop keeps tasks only weakly, so one nobody holds
    can vanish mid-write."""
    task = asyncio.create_task(coroutine, name=name)
    if held is not None:
        held.add(task)
        task.add_done_callback(held.discard)
    task.add_done_callback(_ended)
    return task


def _ended(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Background task failed", task=task.get_name(), error=repr(task.exception()))
