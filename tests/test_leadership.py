"""Which replica writes, and fencing: an active replica that cannot confirm its record stops
writing before its record lapses and a standby may take over."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from sidecar_operator.engine import leadership
from sidecar_operator.engine.leadership import Identity, Leadership

ME = Identity("me", -100)
OTHER = Identity("other", -200)  # younger: a lower priority


def record(identity: Identity, seconds_ago: float) -> dict[str, Any]:
    seen = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return {
        "priority": identity.priority,
        "lifetime": leadership.LIFETIME,
        "lastseen": seen.isoformat(),
    }


class Peering:
    """A peering object that can be made unreadable (the replica cut off from the API server),
    or refuse the replica's own renewals."""

    def __init__(self, peers: Mapping[str, Any], *, renewable: bool = True) -> None:
        self.peers = dict(peers)
        self.cut = False
        self.renewable = renewable
        self.renewed = 0

    async def get_cluster_peering(self, name: str) -> Mapping[str, Any] | None:
        if self.cut:
            await asyncio.sleep(3600)  # a request that never comes back
        return {"status": self.peers}

    async def touch_cluster_peering(self, name: str, peer: str, record: dict[str, Any]) -> None:
        if self.cut:
            await asyncio.sleep(3600)
        if not self.renewable:
            raise ConnectionError("refused")
        self.peers[peer] = record
        self.renewed += 1


async def run_for(seconds: float, replica: Leadership, source: Peering) -> None:
    task = asyncio.ensure_future(replica.run(source))
    await asyncio.sleep(seconds)
    task.cancel()


async def test_the_oldest_live_replica_is_active_once_its_own_record_is_seen() -> None:
    me = Leadership(ME, peering="p")
    assert not me.active  # undecided until it has looked
    await run_for(0.2, me, Peering({"me": record(ME, 1), "other": record(OTHER, 1)}))
    assert me.active
    younger = Leadership(OTHER, peering="p")
    await run_for(0.2, younger, Peering({"me": record(ME, 1), "other": record(OTHER, 1)}))
    assert not younger.active


async def test_a_replica_renews_its_own_record_and_without_it_alive_does_not_write() -> None:
    """A restarted replica finds its former process's record, stale: it renews it itself
    rather than wait for Kopf's first keep-alive, some seconds later."""
    stale = leadership.LIFETIME - leadership.MARGIN + 1  # renewed too long ago
    peering = Peering({"me": record(ME, stale)})
    me = Leadership(ME, peering="p")
    await run_for(0.2, me, peering)
    assert me.active and peering.renewed == 1
    refusing = Leadership(ME, peering="p")
    await run_for(0.2, refusing, Peering({"me": record(ME, stale)}, renewable=False))
    assert not refusing.active


async def test_a_replica_cut_off_stops_writing_before_its_record_lapses() -> None:
    changes: list[bool] = []
    me = Leadership(ME, peering="p", on_change=changes.append)
    # Its record was renewed long enough ago that the margin runs out in half a second (and
    # this replica's own renewals do not get through either).
    almost = leadership.LIFETIME - leadership.MARGIN - 0.5
    peering = Peering({"me": record(ME, almost)}, renewable=False)
    task = asyncio.ensure_future(me.run(peering))
    await asyncio.sleep(0.2)
    assert me.active
    peering.cut = True  # no read answers any more: it keeps what it knew, until the deadline
    await asyncio.sleep(0.6)
    assert not me.active  # before the record lapses (MARGIN seconds later) and others take over
    await asyncio.sleep(leadership.POLL_SECONDS * 2.5)
    assert changes == [True, False]  # said: in the log, the metric and to the runtime
    task.cancel()


def test_standalone_is_always_active_until_stopped() -> None:
    alone = Leadership(ME, peering=None)
    assert alone.active
    alone.stop()
    assert not alone.active
