"""A workload watch's bookkeeping, against a scripted API: pages, resumption, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import pytest

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core.types import Key
from sidecar_operator.engine.watches import workload_resource
from sidecar_operator.kube.client import workloads_path
from sidecar_operator.kube.watch import PAGE, Expired, Watch

KIND = WorkloadKind.STATEFUL_SET  # any kind: the watch lists and watches the one it is given


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": rv}}


class Scripted:
    def __init__(self, pages: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.events = events
        self.tokens: list[str | None] = []
        self.watched_from: list[str] = []
        self.closed = 0

    async def list_page(
        self, path: str, *, limit: int, token: str | None, label_selector: str | None = None
    ) -> dict[str, Any]:
        assert limit == PAGE and path == workloads_path(KIND)
        self.tokens.append(token)
        return self.pages[len(self.tokens) - 1]

    async def watch_events(
        self, path: str, version: str, *, timeout: int, label_selector: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        assert path == workloads_path(KIND)
        self.watched_from.append(version)
        await asyncio.sleep(0.01)  # a connection's round trip: the loop goes on meanwhile
        try:
            for event in self.events:
                yield event
        finally:
            self.closed += 1


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []
        self.listed: list[tuple[WorkloadKind, list[Key]]] = []

    def workload_changed(self, workload: dict[str, Any], *, deleted: bool) -> None:
        assert workload["kind"] == KIND.value  # a listing's items name no kind: the watch sets it
        self.changes.append((workload["metadata"]["name"], deleted))

    def workloads_listed(self, kind: WorkloadKind, keys: Iterable[Key]) -> None:
        self.listed.append((kind, list(keys)))


def watch(source: Scripted, sink: Recorder, after: asyncio.Event | None = None) -> Watch:
    return Watch(source, workload_resource(KIND, sink), after=after or asyncio.Event())


async def test_a_listing_follows_every_page_and_reports_the_complete_set() -> None:
    source = Scripted(
        [
            {"items": [obj("a", "1")], "metadata": {"continue": "next"}},
            {"items": [obj("b", "2")], "metadata": {"resourceVersion": "9"}},
        ],
        [],
    )
    sink = Recorder()
    assert await watch(source, sink).list() == "9"
    assert source.tokens == [None, "next"]
    assert sink.changes == [("a", False), ("b", False)]
    assert sink.listed == [(KIND, [Key("shop", "a", KIND), Key("shop", "b", KIND)])]


async def test_a_watch_resumes_after_its_last_event_or_bookmark() -> None:
    events = [
        {"type": "MODIFIED", "object": obj("a", "10")},
        {"type": "DELETED", "object": obj("b", "11")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
    ]
    sink = Recorder()
    assert await watch(Scripted([], events), sink).watch("9") == "15"
    assert sink.changes == [("a", False), ("b", True)]


async def test_an_expired_watch_asks_for_a_new_listing_and_lets_go_of_its_stream() -> None:
    events = [
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}},
        {"type": "MODIFIED", "object": obj("a", "10")},
    ]
    source = Scripted([], events)
    with pytest.raises(Expired):
        await watch(source, Recorder()).watch("9")
    assert source.closed == 1  # at once, not when collected: the stream holds a connection


async def test_the_watch_waits_for_policies_then_lists_and_watches_on_the_loop() -> None:
    """Listing before policies are known would remove a policy's fields as an orphan's."""
    source = Scripted([{"items": [obj("a", "1")], "metadata": {"resourceVersion": "9"}}], [])
    sink, ready = Recorder(), asyncio.Event()
    workloads = watch(source, sink, ready)
    task = asyncio.ensure_future(workloads.run())
    await asyncio.sleep(0.05)
    assert workloads.state == "waiting for policies" and source.tokens == []
    ready.set()
    for _ in range(100):
        if source.watched_from:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert sink.changes == [("a", False)] and source.watched_from[0] == "9"
