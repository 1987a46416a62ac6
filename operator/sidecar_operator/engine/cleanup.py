"""Removing what a policy added when it is gone: on its deletion (holding its finalizer), and
what policies deleted without their finalizer running left behind (orphans).

Orphans on a watched kind are found in the cache, as its workloads change and when this
replica becomes the active one. On the kinds no policy needs, which are not watched, they are
looked for at start-up and at each takeover in a listing of their metadata (which carries the
field managers), so a policy whose finalizer someone removed by hand leaves nothing behind
even if no other policy ever targets its kinds again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import structlog

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core import planner
from sidecar_operator.core.ownership import policies_with_fields
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.engine.reporting import Announcement, Reporter, key_of
from sidecar_operator.engine.tasks import spawn
from sidecar_operator.engine.watches import Listings
from sidecar_operator.engine.writer import Outcome, Writer
from sidecar_operator.kube.client import ApiError, workloads_path
from sidecar_operator.state.cache import Cache

log = structlog.get_logger()

RELEASED = frozenset({Outcome.WRITTEN, Outcome.GONE, Outcome.NOTHING})
SWEEP_PAGE = 500  # workloads' metadata per page
SWEEP_RETRY = 5.0  # seconds between tries of a sweep the API server did not answer


class MetadataSource(Protocol):
    async def list_metadata(
        self, path: str, *, limit: int, token: str | None
    ) -> dict[str, Any]: ...


class Cleanup:
    def __init__(
        self,
        api: MetadataSource,
        cache: Cache,
        writer: Writer,
        reporter: Reporter,
        *,
        leadership: Leadership,
        listings: Listings,
    ) -> None:
        self.api = api
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
            action = planner.removal(orphan, workload)
            if action.body is None:
                self.reporter.removal_blocked(orphan, workload, action.conflict)
                continue
            removal = self.writer.execute(action, workload, self.reporter.announce)
            spawn(removal, f"remove orphan {orphan} from {key_of(workload)}", self._removals)

    def start_sweeps(self) -> None:
        """Once policies are known, in the active replica: look for orphans on the kinds no
        watch holds (in the background)."""
        if self.leadership.active:
            spawn(self.sweep_unwatched(), "sweep unwatched kinds for orphans", self._removals)

    async def sweep_unwatched(self) -> None:
        """Remove what deleted policies left on workloads of the kinds not watched now, from a
        listing of their metadata; retried until it completes (or this replica stands by)."""
        while self.leadership.active:
            try:
                for kind in sorted(set(WorkloadKind) - self.cache.kinds_wanted()):
                    await self._sweep_kind(kind)
                return
            except ConnectionError as error:
                log.warning("Orphan sweep failed", error=str(error), retry_in=SWEEP_RETRY)
            except ApiError as error:
                log.warning("Orphan sweep failed", error=error.message, retry_in=SWEEP_RETRY)
            await asyncio.sleep(SWEEP_RETRY)

    async def _sweep_kind(self, kind: WorkloadKind) -> None:
        token: str | None = None
        while True:
            page = await self.api.list_metadata(workloads_path(kind), limit=SWEEP_PAGE, token=token)
            for item in page.get("items") or []:
                orphans = self.cache.gone(policies_with_fields(item))
                if not orphans or kind in self.cache.kinds_wanted():
                    continue  # a watch of the kind started meanwhile: it finds them
                item["kind"] = kind.value
                for orphan in orphans:
                    action = planner.removal(orphan, item)
                    if action.body is None:
                        self.reporter.removal_blocked(orphan, item, action.conflict)
                        continue
                    await self.writer.execute(action, item, self.reporter.announce, watched=False)
            token = page["metadata"].get("continue")
            if not token:
                return

    def sweep(self) -> None:
        """Remove what deleted policies left on any workload of a kind listed whole (a listing
        still under way removes them as it goes, once policies are known)."""
        for key, workload in self.cache.workloads():
            orphans = self.cache.gone(policies_with_fields(workload))
            if orphans and self.listings.complete((key.kind,)):
                self.remove_orphans(workload, orphans)

    async def remove_everywhere(self, name: str) -> list[str]:
        """Release everything the policy owns on every workload; returns what stays, each
        with why (reported on the workload and the policy too)."""
        removals = [
            (planner.removal(name, workload), workload)
            for _, workload in self.cache.workloads()
            if name in policies_with_fields(workload)
        ]
        failures = []
        for action, workload in removals:
            if action.body is None:
                self.reporter.removal_blocked(name, workload, action.conflict)
                failures.append(f"{key_of(workload)}: {action.conflict}")
        sent = [(action, workload) for action, workload in removals if action.body is not None]
        announced: list[Announcement] = []
        try:
            outcomes = await self.writer.execute_all(sent, announced.append)
        finally:
            for announcement in announced:
                self.reporter.announce(announcement)
            self.reporter.flush(name, now=True)
        rejected = self.reporter.memory(name).rejected
        for (_, workload), outcome in zip(sent, outcomes, strict=True):
            if outcome not in RELEASED:
                key = key_of(workload)
                why = rejected[key].reason if key in rejected else str(outcome)
                failures.append(f"{key}: {why}")
        return failures
