"""When a policy's workloads change without an event announcing it: one still rolling out misses
its progress deadline, one whose writes keep failing is due another try, a step's pause ends. A
pass counts those that came due since the policy's last pass; the runtime sleeps until the next."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator, Mapping

from sidecar_operator.core.tally import Tally
from sidecar_operator.core.types import Key
from sidecar_operator.engine.reporting import Reporter


class Deadlines:
    def __init__(self, tallies: Mapping[str, Tally], reporter: Reporter) -> None:
        self._tallies = tallies  # the passes' own, per policy, as its last pass left it
        self._reporter = reporter
        self._checked: dict[str, float] = {}  # per policy, when its last pass began (wall clock)

    def due_in(self, policy: str, resume_at: datetime.datetime | None) -> float | None:
        """Seconds until a pass would find something changed that no event announces, since
        its last pass: a step's pause ending (`resume_at`), or a workload's (`_due`)."""
        checked = self._checked.get(policy, 0.0)
        due = [moment for _, moment in self._due(policy)]
        if resume_at is not None:
            now = datetime.datetime.now(datetime.UTC)
            due.append(time.time() + (resume_at - now).total_seconds())
        later = [moment for moment in due if moment > checked]
        return max(0.0, min(later) - time.time()) if later else None

    def come_due(self, policy: str) -> set[Key]:
        """The workloads that changed without an event since the policy's last pass (this one
        begins now)."""
        checked, self._checked[policy] = self._checked.get(policy, 0.0), time.time()
        return {key for key, moment in self._due(policy) if checked < moment <= time.time()}

    def forget(self, policy: str) -> None:
        self._checked.pop(policy, None)

    def _due(self, policy: str) -> Iterator[tuple[Key, float]]:
        """Workloads that change without an event, and when (wall clock, seconds)."""
        if (sums := self._tallies.get(policy)) is not None:
            for key, moment in sums.fails_at.items():
                yield key, moment.timestamp()
        offset = time.time() - time.monotonic()
        for key, failing in self._reporter.memory(policy).failing.items():
            yield key, failing.retry_at + offset
