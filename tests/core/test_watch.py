"""The Deployment watch's bookkeeping, against a scripted API: pages, resumption, expiry."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from sidecar_operator.core.types import Key
from sidecar_operator.kube.watch import PAGE, DeploymentWatch, Expired


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": rv}}


class Scripted:
    def __init__(self, pages: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.events = events
        self.tokens: list[str | None] = []
        self.watched_from: list[str] = []

    def list_deployments(self, *, limit: int, token: str | None) -> dict[str, Any]:
        assert limit == PAGE
        self.tokens.append(token)
        return self.pages[len(self.tokens) - 1]

    def watch_deployments(self, version: str, *, timeout: int) -> Iterator[dict[str, Any]]:
        self.watched_from.append(version)
        yield from self.events


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []
        self.listed: list[list[Key]] = []

    def deployment_changed(self, deployment: dict[str, Any], *, deleted: bool) -> None:
        self.changes.append((deployment["metadata"]["name"], deleted))

    def deployments_listed(self, keys: Iterable[Key]) -> None:
        self.listed.append(list(keys))


def test_a_listing_follows_every_page_and_reports_the_complete_set() -> None:
    source = Scripted(
        [
            {"items": [obj("a", "1")], "metadata": {"continue": "next"}},
            {"items": [obj("b", "2")], "metadata": {"resourceVersion": "9"}},
        ],
        [],
    )
    sink = Recorder()
    assert DeploymentWatch(source, sink, after=threading.Event()).list() == "9"
    assert source.tokens == [None, "next"]
    assert sink.changes == [("a", False), ("b", False)]
    assert sink.listed == [[("shop", "a"), ("shop", "b")]]


def test_a_watch_resumes_after_its_last_event_or_bookmark() -> None:
    events = [
        {"type": "MODIFIED", "object": obj("a", "10")},
        {"type": "DELETED", "object": obj("b", "11")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}},
    ]
    sink = Recorder()
    assert DeploymentWatch(Scripted([], events), sink, after=threading.Event()).watch("9") == "15"
    assert sink.changes == [("a", False), ("b", True)]


def test_an_expired_watch_asks_for_a_new_listing() -> None:
    events = [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}]
    with pytest.raises(Expired):
        DeploymentWatch(Scripted([], events), Recorder(), after=threading.Event()).watch("9")
