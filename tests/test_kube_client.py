"""The operator's HTTP path, against servers that misbehave (the real API server serves every
other test)."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import pytest

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.kube.client import KubeApi, _resource, workloads_path
from sidecar_operator.kube.connection import Connection
from sidecar_operator.kube.events import EventPoster, event


async def test_a_write_the_server_drops_is_sent_once_more_then_is_a_connection_error() -> None:
    """aiohttp retries only idempotent methods, not PATCH; and its ServerDisconnectedError is no
    OSError, which the Deployment watch retries on."""
    accepted: list[int] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's head, then no answer
        accepted.append(1)
        writer.close()

    listening = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    kube = KubeApi(Connection(f"http://127.0.0.1:{port}", ssl.create_default_context()))
    try:
        with pytest.raises(ConnectionError, match="Server disconnected"):
            await kube.patch_policy_status("logs", {"observedGeneration": 1})
    finally:
        await kube.close()
        listening.close()
    assert len(accepted) == 2


async def test_a_watch_reads_events_larger_than_a_line_buffer_and_stops_at_the_servers_end() -> (
    None
):
    """aiohttp refuses a line over 128 KiB; a Deployment's JSON may be over a megabyte."""
    big = {"metadata": {"name": "web", "resourceVersion": "7", "annotations": {"a": "x" * 300_000}}}
    lines = [
        json.dumps({"type": "ADDED", "object": big}).encode(),
        json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "8"}}}).encode(),
    ]

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        for line in lines:
            for start in range(0, len(line) + 1, 50_000):  # split mid-line, as TCP may
                part = (line + b"\n")[start : start + 50_000]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                await writer.drain()
        writer.write(b"0\r\n\r\n")  # the server ends the watch (its timeoutSeconds)
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(stream, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    kube = KubeApi(Connection(f"http://127.0.0.1:{port}", ssl.create_default_context()))
    try:
        watched = kube.watch_events(workloads_path(WorkloadKind.DEPLOYMENT), "5", timeout=300)
        events = [event async for event in watched]
    finally:
        await kube.close()
        listening.close()
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[0]["object"] == big


class Recorder:
    """Stands in for KubeApi: notes when each Event would have been posted."""

    def __init__(self) -> None:
        self.posted: list[float] = []

    async def post_event(self, body: dict[str, Any]) -> None:
        self.posted.append(asyncio.get_running_loop().time())

    async def wait_for(self, count: int) -> None:
        for _ in range(1000):
            if len(self.posted) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.posted)} Events posted, not {count}")


REF = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}}


async def test_events_go_out_at_once_alone_and_at_the_rate_in_a_flood() -> None:
    """A rollout's thousands of Events must not crowd out its writes; a lone Event (a conflict,
    a halt) must not wait behind a pace it did not cause."""
    recorder = Recorder()
    poster = EventPoster(recorder, rate=5)
    try:
        sent = asyncio.get_running_loop().time()
        poster(REF, type="Normal", reason="SidecarsInjected", message="one")
        await recorder.wait_for(1)
        assert recorder.posted[0] - sent < 0.1  # no wait for a slot: nothing went before it

        for index in range(5):
            poster(REF, type="Normal", reason="SidecarsInjected", message=str(index))
        await recorder.wait_for(6)
    finally:
        await poster.close()
    # 5 a second, whatever 8 posters could do
    assert recorder.posted[-1] - recorder.posted[1] >= 4 * 0.2 - 0.1


async def test_a_large_flood_of_events_goes_faster_than_the_rate_but_still_paced() -> None:
    """5000 Events at 100 a second took 50 s: each waited up to that long after its change.
    A backlog drains in about the drain time instead (here 40 Events, 1 s), not all at once."""
    recorder = Recorder()
    poster = EventPoster(recorder, rate=5, drain=1)
    try:
        for index in range(40):  # all queued before the first poster looks
            poster(REF, type="Normal", reason="SidecarsInjected", message=str(index))
        await recorder.wait_for(40)
    finally:
        await poster.close()
    took = recorder.posted[-1] - recorder.posted[0]
    # At 5 a second alone: 7.8 s. Draining (40/s, falling to 5/s for the last 5): about 3 s.
    assert 1.0 < took < 5.0, took


def test_an_event_about_a_cluster_scoped_object_goes_where_kubectl_describe_looks() -> None:
    policy = {"apiVersion": "sidecars.dev/v1alpha1", "kind": "SidecarPolicy"}
    body = event({**policy, "metadata": {"name": "logs", "uid": "u1"}}, **WARNING)
    assert body["metadata"]["namespace"] == "default"
    assert "namespace" not in body["involvedObject"]
    on_app = event({**REF, "metadata": {"name": "app", "namespace": "shop"}}, **WARNING)
    assert on_app["metadata"]["namespace"] == on_app["involvedObject"]["namespace"] == "shop"
    assert len(event(REF, type="Warning", reason="X", message="m" * 5000)["message"]) == 1024


WARNING = {"type": "Warning", "reason": "SidecarConflict", "message": "skipped"}


@pytest.mark.parametrize(
    "path, resource",
    [
        ("/apis/apps/v1/namespaces/shop/deployments/web", "deployments"),
        ("/apis/apps/v1/deployments", "deployments"),
        ("/apis/sidecars.dev/v1alpha1/sidecarpolicies/logs/status", "sidecarpolicies/status"),
        ("/api/v1/namespaces/default/events", "events"),
        ("/api/v1/namespaces", "namespaces"),
        ("/apis/kopf.dev/v1/clusterkopfpeerings/sidecar-operator", "clusterkopfpeerings"),
    ],
)
def test_requests_are_counted_by_resource_not_by_object(path: str, resource: str) -> None:
    assert _resource(path) == resource
