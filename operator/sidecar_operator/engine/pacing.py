"""Full passes' share of the loop, across every policy's worker.

A full pass plans every workload its policy concerns: back to back, such passes took most of a
core while the controllers rolled out thousands of Pods. So a full pass starts no sooner than
PASS_REST times the CPU time of the full pass before it, whichever policy's it was: they keep to
about a tenth of the loop whether one policy is rolling out or a hundred are, and the policies
take them in turn (first come, first served). A pass that plans only the workloads whose events
woke it is per-event work and does not wait: held behind a full pass's rest, new workloads
waited seconds for their sidecars (churn p95 3.7 s at N=1000, `make bench --churn`). The writes
are not paced here; they have their own bound (`writer.WRITERS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from sidecar_operator.engine.flags import Flag

PASS_REST = 10  # after a pass, the next waits this many times its CPU time, at most MAX_REST s
MAX_REST = 5.0


class Pacer:
    def __init__(self) -> None:
        self._turns = asyncio.Lock()  # hands out turns in the order they were asked for
        self._free_at = 0.0  # monotonic time when the next pass may start

    @contextlib.asynccontextmanager
    async def turn(self, urgent: Flag, *, full: bool) -> AsyncIterator[None]:
        """Plan inside it, and say what a full pass cost with `spent`. An edit of the policy
        (`urgent`) does not wait: it is rare, and a user waits on it."""
        if urgent.is_set() or not full:
            yield
            return
        async with self._turns:
            await urgent.wait_at_most(max(0.0, self._free_at - time.monotonic()))
            yield

    def spent(self, cpu: float) -> None:
        """A pass's planning took `cpu` seconds of the loop's CPU."""
        self._free_at = time.monotonic() + min(MAX_REST, PASS_REST * cpu)
