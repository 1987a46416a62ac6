"""Which kinds of workload are listed and watched, and whether each has been listed whole.

A kind costs nothing until a policy needs it (`Cache.kinds_wanted`): a cluster with 5000
StatefulSets and only Deployment policies never lists them. A kind no policy needs any more is
let go: its watch stops and its snapshots are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.engine.flags import Flag
from sidecar_operator.engine.tasks import spawn
from sidecar_operator.kube.watch import Sink, Source, WorkloadWatch

log = structlog.get_logger()


class Listings:
    """Per kind, whether its watch has listed every workload of it since it started: until
    then the cache lacks some, and no pass counts on it."""

    def __init__(self) -> None:
        self._flags: dict[WorkloadKind, Flag] = {}

    def _flag(self, kind: WorkloadKind) -> Flag:
        return self._flags.setdefault(kind, Flag())

    def listed(self, kind: WorkloadKind) -> None:
        self._flag(kind).set()

    def unlisted(self, kind: WorkloadKind) -> None:
        self._flag(kind).clear()

    def complete(self, kinds: Iterable[WorkloadKind]) -> bool:
        return all(self._flag(kind).is_set() for kind in kinds)

    async def wait(self, kinds: Iterable[WorkloadKind], seconds: float | None = None) -> bool:
        """True once every one of these kinds is listed; False if `seconds` passed first."""
        waits = [self._flag(kind).wait_at_most(seconds) for kind in kinds]
        return all(await asyncio.gather(*waits))


class Watches:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        *,
        after: asyncio.Event,
        dropped: Callable[[WorkloadKind], None],
    ) -> None:
        self.source = source
        self.sink = sink
        self.after = after  # set once policies and namespaces are known
        self.dropped = dropped  # a kind let go: forget what the cache holds of it
        self._running: dict[WorkloadKind, tuple[WorkloadWatch, asyncio.Task[None]]] = {}

    def want(self, kinds: Iterable[WorkloadKind]) -> None:
        """Watch exactly these kinds from now on."""
        wanted = set(kinds)
        for kind in wanted - self._running.keys():
            watch = WorkloadWatch(self.source, self.sink, kind, after=self.after)
            self._running[kind] = (watch, spawn(watch.run(), f"watch {kind.plural}"))
            log.info("Watching", kind=kind.value)
        for kind in self._running.keys() - wanted:
            _, task = self._running.pop(kind)
            task.cancel()
            self.dropped(kind)
            log.info("Stopped watching", kind=kind.value)

    @property
    def state(self) -> str:
        """What /healthz reports: each watched kind's state."""
        if not self._running:
            return "no policy targets a kind yet"
        return ", ".join(
            f"{kind.plural}: {watch.state}" for kind, (watch, _) in sorted(self._running.items())
        )

    async def stop(self) -> None:
        tasks = [task for _, task in self._running.values()]
        self._running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
