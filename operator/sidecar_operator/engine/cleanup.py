"""Removing what a policy added when it is gone: on its deletion (holding its finalizer), and
what policies deleted without their finalizer running left behind (orphans)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from sidecar_operator.core import planner
from sidecar_operator.core.ownership import policies_with_fields
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.engine.reporting import Announcement, Reporter, key_of
from sidecar_operator.engine.tasks import spawn
from sidecar_operator.engine.watches import Listings
from sidecar_operator.engine.writer import Outcome, Writer
from sidecar_operator.state.cache import Cache

RELEASED = frozenset({Outcome.WRITTEN, Outcome.GONE, Outcome.NOTHING})


class Cleanup:
    def __init__(
        self,
        cache: Cache,
        writer: Writer,
        reporter: Reporter,
        *,
        leadership: Leadership,
        listings: Listings,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.reporter = reporter
        self.leadership = leadership
        self.listings = listings
        self._removals: set[asyncio.Task[Outcome]] = set()  # held: the loop keeps tasks weakly

    def remove_orphans(self, workload: Mapping[str, Any], orphans: Iterable[str]) -> None:
        """Policies gone without their finalizer running: their field managers still name them.
        Only the active replica writes; it sweeps every workload when it becomes active."""
        if not self.leadership.active:
            return
        for orphan in sorted(orphans):
            removal = self.writer.execute(
                planner.removal(orphan, workload), workload, self.reporter.announce
            )
            spawn(removal, f"remove orphan {orphan} from {key_of(workload)}", self._removals)

    def sweep(self) -> None:
        """Remove what deleted policies left on any workload of a kind listed whole (a listing
        still under way removes them as it goes, once policies are known)."""
        known = set(self.cache.policies())
        for key, workload in self.cache.workloads():
            orphans = policies_with_fields(workload) - known
            if orphans and self.listings.complete((key.kind,)):
                self.remove_orphans(workload, orphans)

    async def remove_everywhere(self, name: str) -> list[str]:
        """Release everything the policy owns on every workload; returns the failures."""
        carrying = [
            deployment
            for _, deployment in self.cache.workloads()
            if name in policies_with_fields(deployment)
        ]
        announced: list[Announcement] = []
        try:
            outcomes = await self.writer.execute_all(
                [(planner.removal(name, d), d) for d in carrying], announced.append
            )
        finally:
            for announcement in announced:
                self.reporter.announce(announcement)
            self.reporter.flush(name, now=True)
        return [
            f"{key_of(deployment)}: {outcome}"
            for deployment, outcome in zip(carrying, outcomes, strict=True)
            if outcome not in RELEASED
        ]
