"""Every workload of one kind in the cluster, listed and then watched, as a task on the
operator's loop (one per kind some policy targets).

Not through Kopf: Kopf gives every watched object an asyncio worker holding its last full body,
and with an index on a resource it wakes every listed object's worker again for each one listed
(quadratic: 190 CPU seconds and 240 MB to start up among 5000 Deployments). Here each object is
parsed, handed to the runtime (which keeps a compact snapshot) and dropped, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import Any, Protocol

import structlog

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core.types import Key
from sidecar_operator.kube.client import ApiError

log = structlog.get_logger()

PAGE = 250  # workloads per listing page: bounds the full bodies held at once
WATCH_SECONDS = 300  # the server ends each watch after this; the next resumes where it ended
MAX_BACKOFF = 10.0  # after an API server outage, the watch is back within this of its return


class Source(Protocol):
    async def list_workloads(
        self, kind: WorkloadKind, *, limit: int, token: str | None
    ) -> dict[str, Any]: ...

    def watch_workloads(
        self, kind: WorkloadKind, version: str, *, timeout: int
    ) -> AsyncGenerator[dict[str, Any], None]: ...


class Sink(Protocol):
    def workload_changed(self, workload: dict[str, Any], *, deleted: bool) -> None: ...

    def workloads_listed(self, kind: WorkloadKind, keys: Iterable[Key]) -> None: ...


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list everything again."""


class WorkloadWatch:
    def __init__(
        self, source: Source, sink: Sink, kind: WorkloadKind, *, after: asyncio.Event
    ) -> None:
        self.source = source
        self.sink = sink
        self.kind = kind
        self.after = after  # set once policies and namespaces are known
        self.state = "waiting for policies"  # what /healthz reports

    async def run(self) -> None:
        """List, then watch until the history expires or the connection fails; list again.
        Not before policies are known: a workload naming an unknown one gets it removed."""
        await self.after.wait()
        backoff = 0.0
        while True:
            try:
                self.state = "listing"
                version = await self.list()
                backoff = 0.0
                self.state = "watching"
                while True:
                    version = await self.watch(version)
            except Expired:
                log.info("Watch expired; listing again", kind=self.kind)
            except ApiError as error:
                if error.status == 410:
                    log.info("Watch expired; listing again", kind=self.kind)
                    continue
                backoff = await self._failed(error, backoff)
            except (OSError, ValueError) as error:  # ConnectionError, or a garbled stream
                backoff = await self._failed(error, backoff)

    async def _failed(self, error: Exception, backoff: float) -> float:
        backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
        log.warning("Watch failed", kind=self.kind, error=str(error), retry_in=backoff)
        self.state = f"reconnecting: {error}"
        await asyncio.sleep(backoff)
        return backoff

    async def list(self) -> str:
        """Hand every workload to the sink, then the complete set of keys (so it can forget
        the ones deleted while no watch ran); returns the listing's resourceVersion."""
        keys: list[Key] = []
        token: str | None = None
        while True:
            page = await self.source.list_workloads(self.kind, limit=PAGE, token=token)
            for item in page.get("items") or []:
                self.sink.workload_changed(item, deleted=False)
                metadata = item["metadata"]
                keys.append(Key(metadata["namespace"], metadata["name"], self.kind))
            token = page["metadata"].get("continue")
            if not token:
                break
        self.sink.workloads_listed(self.kind, keys)
        return str(page["metadata"]["resourceVersion"])

    async def watch(self, version: str) -> str:
        """Hand each event to the sink; returns the version to resume from."""
        # Closed as soon as this returns or raises, not when collected: it holds a connection.
        stream = self.source.watch_workloads(self.kind, version, timeout=WATCH_SECONDS)
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired
                    raise ApiError(int(obj.get("code") or 0), str(obj.get("message") or obj))
                version = obj["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self.sink.workload_changed(obj, deleted=kind == "DELETED")
        return version
