"""Events: what the operator tells people about a Deployment or a policy, posted in the
background so that a write never waits for its Event."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any, Protocol

import structlog

from sidecar_operator.kube.client import ApiError

log = structlog.get_logger()

POSTERS = 8  # Events in flight at once: enough that latency never holds them below the rate
# Events a second, the lowest of the operator's traffic. Posted as fast as 8 posters went, the
# 1000 Events that follow a batch of writes kept a watcher from seeing the batch's last writes
# for a second on a busy API server (bench, N=1000, 2 cores: 0.9-1.2 s from the last write to
# the watch seeing it, 0.0-0.4 s with no Events). The kubelet posts its own at 50/s.
EVENT_RATE = 100.0
# Faster when more wait: whatever is queued goes out within about this many seconds, at any
# size. At 100/s alone, 5000 Events took 50 s, each landing up to that late, and on one N=5000
# cluster (alternated, 4 rounds) cost the operator 8-15 CPU s more per round than unpaced, with
# phases settling 2-10 s later on average and no phase any faster.
EVENT_DRAIN_SECONDS = 10.0


class Poster(Protocol):
    async def post_event(self, body: dict[str, Any]) -> None: ...


def event(ref: dict[str, Any], *, type: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about `ref`. Cluster-scoped objects get theirs in `default` with no
    namespace in the reference, which is where `kubectl describe` looks for them."""
    metadata = ref["metadata"]
    involved = {
        "apiVersion": ref["apiVersion"],
        "kind": ref["kind"],
        "name": metadata["name"],
        "uid": metadata.get("uid"),
    }
    if metadata.get("namespace"):
        involved["namespace"] = metadata["namespace"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {
            "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
            "namespace": metadata.get("namespace") or "default",
        },
        "involvedObject": involved,
        "type": type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "sidecar-operator"},
        "reportingComponent": "sidecars.dev/sidecar-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventPoster:
    """Posts Events POSTERS at a time, at EVENT_RATE a second or as fast as drains the queue in
    EVENT_DRAIN_SECONDS: a write never waits for its Event, a rollout's Events do not crowd out
    its writes, and none lags its change by much more than the drain. A plain queue, not a task
    per Event: a rollout over thousands of Deployments queues thousands of Events at once, and a
    task per Event would cost a kilobyte or more each.

    Made on the running loop, where its posters run until `close`."""

    def __init__(
        self, api: Poster, *, rate: float = EVENT_RATE, drain: float = EVENT_DRAIN_SECONDS
    ) -> None:
        self._api = api
        self._rate = rate
        self._drain = drain
        self._next_slot = 0.0  # loop time from which the next Event may go
        # What each Event is about: its body is made when it goes, not held while thousands wait.
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue()
        self._posters = [asyncio.create_task(self._run()) for _ in range(POSTERS)]

    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self._queue.put_nowait((ref, type, reason, message))

    async def close(self) -> None:
        for poster in self._posters:
            poster.cancel()
        await asyncio.gather(*self._posters, return_exceptions=True)

    async def _slot(self) -> None:
        """Wait for this Event's turn: a lone Event goes at once, a flood at the rate, a large
        one faster (this Event and those still queued, spread over the drain)."""
        now = asyncio.get_running_loop().time()
        start = max(now, self._next_slot)
        waiting = self._queue.qsize() + 1
        self._next_slot = start + 1 / max(self._rate, waiting / self._drain)
        if start > now:
            await asyncio.sleep(start - now)

    async def _run(self) -> None:
        while True:
            ref, type, reason, message = await self._queue.get()
            await self._slot()
            try:
                await self._api.post_event(event(ref, type=type, reason=reason, message=message))
            except Exception as error:  # the poster must outlive any failure
                failure = error.message if isinstance(error, ApiError) else repr(error)
                log.warning("Event not posted", reason=reason, error=failure)
