"""One policy's worker: what wakes it, and how long it waits after a failure."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from sidecar_operator.core.types import Key
from sidecar_operator.engine.flags import Flag

RETRY_FIRST = 1.0  # after a failed pass or write, try again this soon, doubling up to RETRY_MAX
RETRY_MAX = 10.0


@dataclass
class Worker:
    """One policy's triggers and status pacing."""

    name: str
    wake: Flag = field(default_factory=Flag)
    urgent: Flag = field(default_factory=Flag)  # plan without waiting: the policy itself changed
    dirty: set[Key] = field(default_factory=set)  # workloads whose events the next pass plans
    full: bool = True  # the next pass plans every workload (`passes.Passes.prepare`)
    resume_at: datetime.datetime | None = None  # when the current step's pause ends
    asked: tuple[int, str, str] = (0, "", "")  # `Policy.asked`, as the last pass saw it
    status_written: float = 0.0
    status_due: bool = False  # a changed status waits for STATUS_INTERVAL to pass
    # What the last pass that found the status unchanged found, and that status (`passes._status`).
    status_found: tuple[Any, Any] = ((), None)
    retry: float = 0.0  # seconds before trying a failed pass again; 0 when the last one went well
    told_selector: bool = False  # warned that an empty selector selects every workload
    progress: tuple[Any, ...] = ()  # what the rollout last stood at (`exporting.export`)
    exported: tuple[Any, ...] = ()  # what its metrics last said (`exporting.export`)

    def poke(self) -> None:
        self.wake.set()

    def changed(self, key: Key) -> None:
        """A workload the policy concerns (or did) changed."""
        self.dirty.add(key)
        self.wake.set()

    def recount(self) -> None:
        """Something that may change every workload's plan changed (or this replica took over:
        its metrics were cleared while it stood by)."""
        self.full = True
        self.exported = ()
        self.wake.set()

    def failed(self) -> float:
        self.retry = min(RETRY_MAX, max(RETRY_FIRST, 2 * self.retry))
        return self.retry
