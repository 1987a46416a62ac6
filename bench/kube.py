"""A bare asyncio client for the local cluster: the benchmark's workload, its watch, its reading
of the apiserver's own request counters, and the "limit" writer (no Kopf, no client library)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sidecar_operator.api.names import REVISION_ANNOTATION_PREFIX
from sidecar_operator.devcluster import Cluster
from sidecar_operator.kube.client import KEEPALIVE_SECONDS

APPLY = "application/apply-patch+yaml"
# An update (a full-object write) is labelled PUT, not UPDATE.
WRITE_VERBS = ("APPLY", "PATCH", "PUT")
# The lines of `apiserver_request_total` in the API server's metrics: its samples, HELP and TYPE.
REQUEST_LINES = (
    "apiserver_request_total{",
    "# HELP apiserver_request_total ",
    "# TYPE apiserver_request_total ",
)


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


class Api:
    """One connection pool to one cluster's apiserver, authenticated as the admin user."""

    def __init__(self, cluster: Cluster) -> None:
        config = json.loads(cluster.kubeconfig.read_text())
        self.base = config["clusters"][0]["cluster"]["server"]
        self.ssl = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
        self.ssl.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        # The operator's keep-alive: neither pays TLS handshakes between phases that the other
        # does not.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                ssl=self.ssl, limit=0, keepalive_timeout=KEEPALIVE_SECONDS
            ),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with Api(...)`")
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> Any:
        data = json.dumps(body) if body is not None else None
        async with self.session.request(
            method,
            self.base + path,
            data=data,
            params=params,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        ) as response:
            text = await response.text()
            if response.status not in ok:
                raise ApiError(response.status, text[:300])
            return json.loads(text) if text.startswith("{") else text

    async def apply(self, path: str, body: Any, *, manager: str, force: bool = False) -> Any:
        params = {"fieldManager": manager}
        if force:
            params["force"] = "true"
        return await self.request("PATCH", path, body, content_type=APPLY, params=params)

    async def write_counts(self) -> dict[str, float]:
        """Write requests the apiserver has served since it started, keyed `VERB resource[/sub]`,
        from its own `apiserver_request_total` counter."""
        return write_counts(await self.request("GET", "/metrics"))


def families(exposition: str, prefix: str | tuple[str, ...]) -> Iterable[Metric]:
    """The metric families named `prefix...` in an exposition. It is megabytes, and parsing all
    of it took half a second or more: only those families' lines go to the parser."""
    lines = "".join(line + "\n" for line in exposition.splitlines() if line.startswith(prefix))
    return text_string_to_metric_families(lines)


def write_counts(exposition: str) -> dict[str, float]:
    """The write counts in a metrics exposition (read twice a phase)."""
    counts: dict[str, float] = {}
    for family in families(exposition, REQUEST_LINES):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("verb") not in WRITE_VERBS:
                continue
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            key = f"{labels['verb']} {resource}"
            counts[key] = counts.get(key, 0.0) + sample.value
    return counts


async def run_bounded(jobs: list[Callable[[], Any]], concurrency: int) -> None:
    """Run the coroutine factories with at most `concurrency` in flight; fail on the first error."""
    queue = iter(jobs)

    async def drain() -> None:
        for job in queue:
            await job()

    await asyncio.gather(*(drain() for _ in range(max(1, concurrency))))


class Tracker:
    """Watches the benchmark's Deployments and notes when every one of them carries a wanted
    value of one annotation (or none): the moment a rollout is done, as a watcher sees it."""

    def __init__(self, api: Api, label_selector: str, annotation: str) -> None:
        self.api = api
        self.selector = label_selector
        self.annotation = annotation
        self.values: dict[str, Any] = {}
        self.unsettled: set[str] = set()
        self.resource_version = ""
        self.wanted: str | None = None
        self.total = 0
        self.matching = 0
        self.done = asyncio.Event()
        self.done_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listing = await self.api.request(
            "GET", "/apis/apps/v1/deployments", params={"labelSelector": self.selector}
        )
        self.resource_version = listing["metadata"]["resourceVersion"]
        for item in listing["items"]:
            self._update("ADDED", item)
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            params = {
                "watch": "true",
                "labelSelector": self.selector,
                "resourceVersion": self.resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": "600",
            }
            async with self.api.session.get(
                self.api.base + "/apis/apps/v1/deployments", params=params
            ) as response:
                async for line in response.content:
                    event = json.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        raise ApiError(obj.get("code", 0), obj.get("message", ""))
                    self.resource_version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._update(event["type"], obj)

    def _value(self, obj: dict[str, Any]) -> Any:
        """What a Deployment carries that a phase waits for."""
        return (obj["metadata"].get("annotations") or {}).get(self.annotation)

    def _wants(self, key: str, value: Any) -> bool:
        return bool(value == self.wanted)

    def _update(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        old = self.values.get(key, _ABSENT)
        if kind == "DELETED":
            self.values.pop(key, None)
            self.unsettled.discard(key)
            if old is not _ABSENT and self._wants(key, old):
                self.matching -= 1
            return
        if _settled(obj):
            self.unsettled.discard(key)
        else:
            self.unsettled.add(key)
        new = self._value(obj)
        self.values[key] = new
        if old == new:
            return
        if self._wants(key, new):
            self.matching += 1
        elif old is not _ABSENT and self._wants(key, old):
            self.matching -= 1
        if self.total and self.matching >= self.total and not self.done.is_set():
            self.done_at = time.monotonic()
            self.done.set()

    def expect(self, wanted: str | None, total: int) -> None:
        """From now on, wait for `total` Deployments carrying `wanted` (None: not carrying it)."""
        self.wanted, self.total = wanted, total
        self._recount()

    def _recount(self) -> None:
        self.matching = sum(1 for key, value in self.values.items() if self._wants(key, value))
        self.done = asyncio.Event()
        if self.matching >= self.total:
            self.done_at = time.monotonic()
            self.done.set()

    async def wait(self, timeout: float) -> float:
        """The monotonic time the last Deployment was seen as wanted."""
        try:
            await asyncio.wait_for(self.done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self.matching}/{self.total} Deployments carry {self.annotation}="
                f"{self.wanted} after {timeout:.0f}s"
            ) from None
        return self.done_at

    async def settled(self, timeout: float) -> None:
        """Until the controllers have finished with every Deployment (as `kubectl rollout status`
        would say), so that one measurement does not run into the last one's tail."""
        deadline = time.monotonic() + timeout
        while self.unsettled:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.unsettled)} Deployments still rolling out")
            await asyncio.sleep(0.1)


class Revisions(Tracker):
    """Every policy's revision annotation at once, against what each Deployment should carry:
    with several policies one annotation's value cannot say that a Deployment is done, and where
    a policy lost a name clash its annotation must not be there at all."""

    def __init__(self, api: Api, label_selector: str) -> None:
        super().__init__(api, label_selector, REVISION_ANNOTATION_PREFIX + "*")
        self.each: dict[str, frozenset[tuple[str, str]]] = {}

    def _value(self, obj: dict[str, Any]) -> frozenset[tuple[str, str]]:
        annotations = obj["metadata"].get("annotations") or {}
        return frozenset(
            (k, v) for k, v in annotations.items() if k.startswith(REVISION_ANNOTATION_PREFIX)
        )

    def _wants(self, key: str, value: Any) -> bool:
        return key in self.each and value == self.each[key]

    def expect_each(self, wanted: Mapping[str, Mapping[str, str]], what: str) -> None:
        """From now on, wait until every Deployment named in `wanted` carries exactly those
        annotations (an empty mapping: none)."""
        self.each = {key: frozenset(annotations.items()) for key, annotations in wanted.items()}
        self.wanted, self.total = what, len(self.each)
        self._recount()


def key_of(obj: Mapping[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _settled(obj: dict[str, Any]) -> bool:
    wanted = obj["spec"].get("replicas", 1)
    status = obj.get("status") or {}
    return bool(
        status.get("observedGeneration", 0) >= obj["metadata"].get("generation", 0)
        and status.get("replicas", 0) == wanted
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
    )


_ABSENT: Any = object()
