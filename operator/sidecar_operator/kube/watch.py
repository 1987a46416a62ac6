"""Every object of one resource in the cluster, listed and then watched, as a task on the
operator's loop: one per workload kind some policy targets, and one each for SidecarPolicies
and Namespaces.

Not through Kopf. For workloads: Kopf gives every watched object an asyncio worker holding its
last full body, and with an index on a resource it wakes every listed object's worker again for
each one listed (quadratic: 190 CPU seconds and 240 MB to start up among 5000 Deployments). Here
each object is parsed, handed on (the runtime keeps a compact snapshot) and dropped, one at a
time. For policies and Namespaces: Kopf pauses its watches in a replica that stands by, and a
standby answers admission too, so what it decides from must stay current (Kopf still watches
policies for their workers and finalizer, in the active replica).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from sidecar_operator.kube.client import ApiError

log = structlog.get_logger()

PAGE = 250  # objects per listing page: bounds the full bodies held at once
WATCH_SECONDS = 300  # the server ends each watch after this; the next resumes where it ended
MAX_BACKOFF = 10.0  # after an API server outage, the watch is back within this of its return

Identity = tuple[str, str]  # an object's namespace ("" for cluster-scoped ones) and name


class Source(Protocol):
    async def list_page(
        self, path: str, *, limit: int, token: str | None, label_selector: str | None = None
    ) -> dict[str, Any]: ...

    def watch_events(
        self, path: str, version: str, *, timeout: int, label_selector: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]: ...


@dataclass(frozen=True)
class Resource:
    """What one watch lists and watches, and where what it sees goes."""

    name: str  # for logs and /healthz: `deployments`, `sidecarpolicies`
    path: str  # the collection's URL path
    changed: Callable[[dict[str, Any], bool], None]  # (object, deleted)
    listed: Callable[[list[Identity]], None]  # every object a complete listing held
    kind: str | None = None  # set on every object (a list's items name no kind)
    label_selector: str | None = None


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list everything again."""


class Watch:
    def __init__(self, source: Source, resource: Resource, *, after: asyncio.Event) -> None:
        self.source = source
        self.resource = resource
        self.after = after  # set once it may start (workloads: once policies are known)
        self.state = "waiting for policies"  # what /healthz reports

    async def run(self) -> None:
        """List, then watch until the history expires or the connection fails; list again."""
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
                log.info("Watch expired; listing again", resource=self.resource.name)
            except ApiError as error:
                if error.status == 410:
                    log.info("Watch expired; listing again", resource=self.resource.name)
                    continue
                backoff = await self._failed(error, backoff)
            except (OSError, ValueError) as error:  # ConnectionError, or a garbled stream
                backoff = await self._failed(error, backoff)

    async def _failed(self, error: Exception, backoff: float) -> float:
        backoff = min(MAX_BACKOFF, max(1.0, backoff * 2))
        log.warning("Watch failed", resource=self.resource.name, error=str(error), retry_in=backoff)
        self.state = f"reconnecting: {error}"
        await asyncio.sleep(backoff)
        return backoff

    def _seen(self, obj: dict[str, Any], *, deleted: bool) -> None:
        if self.resource.kind is not None:
            obj["kind"] = self.resource.kind
        self.resource.changed(obj, deleted)

    async def list(self) -> str:
        """Hand every object on, then the complete set of their identities (so what was deleted
        while no watch ran is forgotten); returns the listing's resourceVersion."""
        seen: list[Identity] = []
        token: str | None = None
        while True:
            page = await self.source.list_page(
                self.resource.path,
                limit=PAGE,
                token=token,
                label_selector=self.resource.label_selector,
            )
            for item in page.get("items") or []:
                self._seen(item, deleted=False)
                metadata = item["metadata"]
                seen.append((metadata.get("namespace") or "", metadata["name"]))
            token = page["metadata"].get("continue")
            if not token:
                break
        self.resource.listed(seen)
        return str(page["metadata"]["resourceVersion"])

    async def watch(self, version: str) -> str:
        """Hand each event on; returns the version to resume from."""
        # Closed as soon as this returns or raises, not when collected: it holds a connection.
        stream = self.source.watch_events(
            self.resource.path,
            version,
            timeout=WATCH_SECONDS,
            label_selector=self.resource.label_selector,
        )
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired
                    raise ApiError(int(obj.get("code") or 0), str(obj.get("message") or obj))
                version = obj["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self._seen(obj, deleted=kind == "DELETED")
        return version
