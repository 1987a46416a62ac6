"""Which replica writes: exactly one of those sharing a Kopf peering, the oldest alive.

Kopf's peering pauses an operator while a live peer has the same or a higher priority. Every
replica with the default priority therefore paused every other, and none served. Here each
replica takes the (negative) time it started as its priority, so the oldest live one is active
and a newcomer waits as a standby: a rolling update never moves the work to a replica that has
not caught up, and no two replicas ever tie.

Kopf pauses what it runs (its watches of policies, the policy workers, the deletion handler).
The operator also writes from outside Kopf: removing what a deleted policy left behind, seen by
its own Deployment watch. `Leadership` applies Kopf's rule to the same peering object, so that
this work follows the same decision; it reads the object once a second (a GET, no watch: a
second's delay is well inside a takeover, and there is no stream to keep alive).

Timing: a replica's record lives `LIFETIME` seconds after its last keep-alive (Kopf sends one
every 5-10 s), so after a SIGKILL the standby takes over within about that long; a replica
that stops gracefully deletes its record, and the standby takes over at once.

Fencing (client-go leader election's renew-deadline rule): the active replica writes only while
it has confirmed its own record is alive for `MARGIN` seconds more. One cut off from the API
server (it can neither read the peering nor renew its record) stops writing `MARGIN` seconds
before its record lapses and a standby may take over, so two replicas never write at once
(for clocks that agree within `MARGIN`: each compares its own record with its own clock).
Kopf renews the record every 5-10 s, and first only once it has discovered its resources, some
seconds after a start: a record about to lapse (or a restarted replica's, left by its former
process) is renewed here, as Kopf does it, so a replica is active as soon as it may be.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from sidecar_operator import metrics

log = structlog.get_logger()

LIFETIME = 15  # seconds a replica's peering record lives without a keep-alive
POLL_SECONDS = 1.0
MARGIN = 3.0  # seconds before its record lapses that an unconfirmed active replica stops
RENEW_WITHIN = 5.0  # a record confirmed for less than this is renewed here


class PeeringSource(Protocol):
    async def get_cluster_peering(self, name: str) -> Mapping[str, Any] | None: ...

    async def touch_cluster_peering(self, name: str, peer: str, record: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Identity:
    """How this replica appears in the peering object."""

    name: str
    priority: int

    @classmethod
    def of_this_process(cls) -> Identity:
        """The pod's name where the manifests set it (`POD_NAME`: a restarted container takes
        over its own record at once instead of waiting for it to expire), else host and process.
        The priority is the start time in microseconds, negated: the older, the higher."""
        name = os.environ.get("POD_NAME") or f"{socket.gethostname()}/{os.getpid()}"
        return cls(name, -(time.time_ns() // 1000))


def is_active(
    peers: Mapping[str, Mapping[str, Any]], identity: Identity, *, now: datetime.datetime
) -> bool:
    """Kopf's rule, from the peering object's status (peer name -> priority, lifetime,
    lastseen): active unless another live peer has the same or a higher priority."""
    for name, peer in peers.items():
        if name == identity.name or not isinstance(peer, Mapping):
            continue
        lastseen = _parse(peer.get("lastseen")) or now
        lifetime = datetime.timedelta(seconds=int(peer.get("lifetime", 60)))
        if lastseen + lifetime > now and int(peer.get("priority", 0)) >= identity.priority:
            return False
    return True


def _parse(stamp: Any) -> datetime.datetime | None:
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


class Leadership:
    """Whether this replica may write. Standalone (no peering name): always.

    `on_change(active)` is called from the loop that runs `run()`, on every change."""

    def __init__(
        self,
        identity: Identity,
        *,
        peering: str | None,
        on_change: Callable[[bool], None] = lambda active: None,
    ) -> None:
        self.identity = identity
        self.peering = peering
        self.on_change = on_change
        self._elected = peering is None
        self._confirmed_until = 0.0  # monotonic time until which its own record is alive
        # What was last said (log, metric, `on_change`); with peering, the first look decides.
        self._reported: bool | None = True if peering is None else None
        self._stopped = False
        metrics.ACTIVE.set(int(self._elected))

    @property
    def active(self) -> bool:
        """Checked before every write: elected, and confirmed in time."""
        if self.peering is None:
            return not self._stopped
        return self._elected and time.monotonic() < self._confirmed_until

    def stop(self) -> None:
        """The operator is exiting: write nothing more, whatever the peers say."""
        self._stopped = True
        self._set(False)

    async def run(self, source: PeeringSource) -> None:
        if self.peering is None:
            return
        unreadable = False
        while not self._stopped:
            try:
                # Bounded: a replica cut off must go on judging its deadline meanwhile. (Not
                # `wait_for`, which on 3.11 can swallow a cancellation: `flags.Flag`.)
                async with asyncio.timeout(POLL_SECONDS * 2):
                    found = await source.get_cluster_peering(self.peering)
            except Exception as error:  # the API server is away, or this replica is cut off
                if not unreadable:
                    log.warning("Peering not readable", peering=self.peering, error=repr(error))
                unreadable = True
            else:
                unreadable = False
                peers = (found or {}).get("status") or {}
                now = datetime.datetime.now(datetime.UTC)
                self._confirm(peers.get(self.identity.name), now)
                self._elected = not self._stopped and is_active(peers, self.identity, now=now)
                if self._elected and self._confirmed_until - time.monotonic() < RENEW_WITHIN:
                    await self._renew(source)
            self._set(self.active)
            await asyncio.sleep(POLL_SECONDS)

    async def _renew(self, source: PeeringSource) -> None:
        """Write its own record, as Kopf's keep-alive does; confirmed once written."""
        now = datetime.datetime.now(datetime.UTC)
        record = {
            "priority": self.identity.priority,
            "lifetime": LIFETIME,
            "lastseen": now.isoformat(),
        }
        assert self.peering is not None
        try:
            async with asyncio.timeout(POLL_SECONDS * 2):
                await source.touch_cluster_peering(self.peering, self.identity.name, record)
        except Exception as error:  # cut off: the deadline stands, and runs out
            log.warning("Peering record not renewed", peering=self.peering, error=repr(error))
        else:
            self._confirm(record, now)

    def _confirm(self, record: Any, now: datetime.datetime) -> None:
        """Its own record, as last renewed (Kopf's keep-alive), lives until when."""
        if not isinstance(record, Mapping) or (seen := _parse(record.get("lastseen"))) is None:
            self._confirmed_until = 0.0
            return
        lifetime = datetime.timedelta(seconds=int(record.get("lifetime", LIFETIME)))
        left = (seen + lifetime - now).total_seconds() - MARGIN
        self._confirmed_until = time.monotonic() + left

    def _set(self, active: bool) -> None:
        if active == self._reported:
            return
        self._reported = active
        metrics.ACTIVE.set(int(active))
        replica = self.identity.name
        log.info("Active" if active else "Standby", peering=self.peering, replica=replica)
        self.on_change(active)
