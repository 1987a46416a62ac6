"""The operator's HTTP path, against servers that misbehave (the real API server serves every
other test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client

from sidecar_operator.kube.client import EventPoster, KubeApi, LoopThread, _resource
from tests.kube import eventually


def test_a_write_the_server_drops_is_sent_once_more_then_is_a_connection_error(
    monkeypatch: Any,
) -> None:
    """aiohttp retries only idempotent methods, not PATCH; and its ServerDisconnectedError is no
    OSError, which the Deployment watch retries on."""
    accepted: list[int] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's head, then no answer
        accepted.append(1)
        writer.close()

    server = LoopThread("test-server")
    listening = server.run(_listen(drop))
    port = listening.sockets[0].getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    monkeypatch.setattr(client.Configuration, "get_default_copy", lambda: configuration)
    kube = KubeApi()
    try:
        with pytest.raises(ConnectionError, match="Server disconnected"):
            kube.loop.run(kube.patch_policy_status("logs", {"observedGeneration": 1}))
    finally:
        kube.close()
        server.call(listening.close)
    assert len(accepted) == 2


async def _listen(handler: Any) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0)


class Recorder:
    """Stands in for KubeApi: notes when each Event would have been posted."""

    def __init__(self, name: str) -> None:
        self.loop = LoopThread(name)
        self.posted: list[float] = []

    async def post_event(self, ref: dict[str, Any], **_: Any) -> None:
        self.posted.append(asyncio.get_running_loop().time())

    def wait_for(self, count: int, what: str) -> None:
        """Until `count` Events went out; then the posters stop, else, collected while waiting,
        they log errors into later tests."""
        eventually(lambda: len(self.posted) == count, timeout=10, interval=0.01, what=what)
        self.loop.run(_stop_others())


REF = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}}


def test_events_go_out_at_once_alone_and_at_the_rate_in_a_flood() -> None:
    """A rollout's thousands of Events must not crowd out its writes; a lone Event (a conflict,
    a halt) must not wait behind a pace it did not cause."""
    recorder = Recorder("test-events")
    poster = EventPoster(recorder, rate=5)  # type: ignore[arg-type]

    sent = recorder.loop.run(_now())
    poster(REF, type="Normal", reason="SidecarsInjected", message="one")
    eventually(lambda: len(recorder.posted) == 1, timeout=5, interval=0.01, what="the lone Event")
    assert recorder.posted[0] - sent < 0.1  # no wait for a slot: nothing went before it

    for index in range(5):
        poster(REF, type="Normal", reason="SidecarsInjected", message=str(index))
    recorder.wait_for(6, "the flood")
    # 5 a second, whatever 8 posters could do
    assert recorder.posted[-1] - recorder.posted[1] >= 4 * 0.2 - 0.1


def test_a_large_flood_of_events_goes_faster_than_the_rate_but_still_paced() -> None:
    """5000 Events at 100 a second took 50 s: each waited up to that long after its change.
    A backlog drains in about the drain time instead (here 40 Events, 1 s), not all at once."""
    recorder = Recorder("test-events-drain")
    poster = EventPoster(recorder, rate=5, drain=1)  # type: ignore[arg-type]

    def flood() -> None:
        for index in range(40):
            poster(REF, type="Normal", reason="SidecarsInjected", message=str(index))

    recorder.loop.call(flood)  # on the loop: all queued before the first poster looks
    recorder.wait_for(40, "the flood")
    took = recorder.posted[-1] - recorder.posted[0]
    # At 5 a second alone: 7.8 s. Draining (40/s, falling to 5/s for the last 5): about 3 s.
    assert 1.0 < took < 5.0, took


async def _stop_others() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


async def _now() -> float:
    return asyncio.get_running_loop().time()


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
