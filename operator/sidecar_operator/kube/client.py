"""The few API calls the operator makes. Requests go over one aiohttp session on an asyncio loop
in a thread of its own (`LoopThread`): the write path and the Event posters run on that loop
directly, everything else (Kopf's sync handlers and daemons, the Deployment watch) waits for it
from its thread. The official `kubernetes` client loads the configuration (kubeconfig or
in-cluster, token refresh) and streams the Deployment watch."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import concurrent.futures
import datetime
import json
import ssl
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sidecar_operator import metrics
from sidecar_operator.api import names
from sidecar_operator.core.ownership import field_manager

T = TypeVar("T")
log = structlog.get_logger()
# asyncio gives every TLS connection a zero-filled 256 KiB receive buffer, all of it resident:
# 16 MB for 64 connections (the writers then), which brought the operator to 150 MB at 5000
# Deployments. Responses are a few KiB (a page of a list, a few hundred); smaller buffers only
# mean more reads of a large one.
TLS_BUFFER = 32 * 1024
# aiohttp closes a connection idle for 15 s, so every rollout opened its writers' connections
# anew (a TLS handshake each, on both ends). The API server keeps idle connections for 90 s;
# one it closed first is sent on again (`_arequest`).
KEEPALIVE_SECONDS = 60.0


@dataclass
class ApiError(Exception):
    status: int
    message: str

    @classmethod
    def from_response(cls, status: int, data: bytes) -> ApiError:
        try:
            message = str(json.loads(data).get("message") or "")
        except (TypeError, ValueError, AttributeError):
            message = ""
        return cls(status, message or data[:200].decode(errors="replace"))


def load_config() -> None:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


ALL_DEPLOYMENTS = "/apis/apps/v1/deployments"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
POLICY_STATUS = f"/apis/{names.GROUP}/{names.VERSION}/{names.PLURAL}/{{name}}/status"
CLUSTER_PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"


def _resource(path: str) -> str:
    """The resource a request path names, for the request metric: `deployments`, `events`,
    `sidecarpolicies/status`... (namespaces and object names left out: bounded label values)."""
    parts = path.strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]  # /api/v1/... or /apis/group/v1/...
    if parts[0] == "namespaces" and len(parts) > 2:
        parts = parts[2:]
    resource = parts[0] if parts else ""
    return f"{resource}/{parts[2]}" if len(parts) > 2 else resource


class LoopThread:
    """An asyncio loop running in a daemon thread; other threads hand it coroutines. Never call
    `run` from the loop's own thread: it would wait for itself."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name=name, daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result."""
        return self.submit(coroutine).result()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coroutine` on the loop; cancelling the future cancels it."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and await it from another loop; cancelling the awaiting
        task cancels the coroutine too."""
        return await asyncio.wrap_future(self.submit(coroutine))

    def spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        """Run `coroutine` on the loop without waiting; a failure is logged."""
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).add_done_callback(_log_failure)

    def call(self, function: Callable[..., object], *args: Any) -> None:
        """Call `function` on the loop's thread, soon; safe from any thread."""
        self.loop.call_soon_threadsafe(function, *args)


def _log_failure(future: concurrent.futures.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        error = future.exception()
        log.error("Background request failed", error=getattr(error, "message", None) or repr(error))


def _ssl_context(configuration: client.Configuration) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class KubeApi:
    """Raw JSON on the configured host, CA, client certificate, bearer token, proxy and TLS
    server name. Not the generated `CoreV1Api` & co.: loading their modules and models costs
    ~90 MB of memory, and the operator needs a handful of paths and plain dicts. Not the
    client's synchronous transport for requests either: 1000 server-side applies from 64
    threads cost its process 0.85-0.91 CPU s (urllib3 and http.client in Python), from 64
    coroutines on aiohttp 0.26-0.32 s, and that CPU is taken from the API server on a busy
    machine."""

    def __init__(self, *, connections: int = 16) -> None:
        self._configuration = client.Configuration.get_default_copy()
        self._client = client.ApiClient(self._configuration)
        self._ssl = _ssl_context(self._configuration)
        asyncio.sslproto.SSLProtocol.max_size = TLS_BUFFER  # no public setting: see TLS_BUFFER
        self._connections = connections
        self._http: aiohttp.ClientSession | None = None
        self.loop = LoopThread("http")

    def close(self) -> None:
        """Close the session's connections; aiohttp reports a session left open at exit."""
        self.loop.run(self.aclose())

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        """Made on the loop, at its first request: a session belongs to the loop it starts on."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self._ssl, limit=self._connections, keepalive_timeout=KEEPALIVE_SECONDS
                ),
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
            )
        return self._http

    async def _arequest(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Raises ApiError for any status but 2xx, ConnectionError if there was no answer. A
        request on a connection the server dropped while idle is sent once more, PATCH and POST
        too (aiohttp does so only for idempotent methods; urllib3 did for the kubernetes
        client)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        # JSON is valid YAML for +yaml types. UTF-8 as it is: the API server reads an apply
        # body as YAML, which refuses the \uXXXX surrogate pairs json.dumps makes of an emoji.
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        url = self._configuration.host + path
        try:
            try:
                status, payload = await self._send(method, url, query, data, headers)
            except aiohttp.ServerDisconnectedError:
                status, payload = await self._send(method, url, query, data, headers)
        except (aiohttp.ClientError, TimeoutError) as error:
            # Not all of aiohttp's are OSErrors, which callers (the watch) take for a failed
            # connection and retry.
            raise ConnectionError(f"{method} {path}: {error!r}") from error
        finally:
            metrics.REQUESTS.labels(method=method, resource=_resource(path)).inc()
        if not 200 <= status < 300:
            raise ApiError.from_response(status, payload)
        return dict(json.loads(payload))

    async def _send(
        self,
        method: str,
        url: str,
        query: dict[str, str] | None,
        data: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        async with self._session().request(
            method,
            url,
            params=query,
            data=data,
            headers=headers,
            proxy=self._configuration.proxy,  # a kubeconfig's proxy-url
            server_hostname=self._configuration.tls_server_name,  # and tls-server-name
        ) as response:
            return response.status, await response.read()

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """`_arequest` for a caller in another thread than the loop's."""
        return self.loop.run(
            self._arequest(method, path, body, query=query, content_type=content_type)
        )

    async def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        """Server-side apply `body` to a Deployment with the policy's own field manager."""
        query = {"fieldManager": field_manager(policy)}
        if force:
            query["force"] = "true"
        return await self._arequest(
            "PATCH",
            DEPLOYMENTS.format(**body["metadata"]),
            body,
            query=query,
            content_type="application/apply-patch+yaml",
        )

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._arequest("GET", DEPLOYMENTS.format(namespace=namespace, name=name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def list_all(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Deployments, Namespaces and SidecarPolicies, read once (for `preview`). Without the
        CRD installed there are simply no policies yet."""
        deployments = self._request("GET", ALL_DEPLOYMENTS)
        namespaces = self._request("GET", "/api/v1/namespaces")
        try:
            policies = self._request("GET", f"/apis/{names.GROUP}/{names.VERSION}/{names.PLURAL}")
        except ApiError as error:
            if error.status != 404:
                raise
            policies = {}
        return (
            list(deployments.get("items") or []),
            list(namespaces.get("items") or []),
            list(policies.get("items") or []),
        )

    def list_deployments(self, *, limit: int, token: str | None) -> dict[str, Any]:
        """One page of every Deployment in the cluster."""
        query = {"limit": str(limit)}
        if token:
            query["continue"] = token
        return self._request("GET", ALL_DEPLOYMENTS, query=query)

    def watch_deployments(self, version: str, *, timeout: int) -> Iterator[dict[str, Any]]:
        """Every Deployment's watch events from `version` on, one parsed event at a time, until
        the server ends the watch after `timeout` seconds. On the client's own pool: a stream
        read in its thread, not a request."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        method, url, headers, _, _ = self._client.param_serialize(
            "GET",
            ALL_DEPLOYMENTS,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                method, url, headers, _request_timeout=(10, timeout + 30)
            )
        except ApiException as error:
            raise ApiError(int(error.status or 0), str(error.reason)) from None
        if not 200 <= response.status < 300:
            raise ApiError.from_response(response.status, response.read())  # type: ignore[no-untyped-call]
        stream = response.response
        try:
            pending = b""
            for chunk in stream.stream(64 * 1024):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            stream.release_conn()

    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            await self._arequest(
                "PATCH",
                POLICY_STATUS.format(name=name),
                {"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as error:
            if error.status != 404:
                raise

    async def ensure_cluster_peering(self, name: str) -> None:
        """Kopf only patches its peering object: without one, replicas cannot see each other."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            await self._arequest("POST", CLUSTER_PEERINGS, body)
        except ApiError as error:
            if error.status != 409:
                raise

    async def get_cluster_peering(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._arequest("GET", f"{CLUSTER_PEERINGS}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def post_event(
        self, ref: dict[str, Any], *, type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `ref`. Cluster-scoped objects get theirs in `default` with no
        namespace in the reference, which is where `kubectl describe` looks for them."""
        metadata = ref["metadata"]
        namespace = metadata.get("namespace") or "default"
        involved = {
            "apiVersion": ref["apiVersion"],
            "kind": ref["kind"],
            "name": metadata["name"],
            "uid": metadata.get("uid"),
        }
        if metadata.get("namespace"):
            involved["namespace"] = metadata["namespace"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {
                "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
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
        await self._arequest("POST", f"/api/v1/namespaces/{namespace}/events", body)


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


class EventPoster:
    """Posts Events from the HTTP loop, POSTERS at a time, at EVENT_RATE a second or as fast as
    drains the queue in EVENT_DRAIN_SECONDS: a write never waits for its Event, a rollout's
    Events do not crowd out its writes, and none lags its change by much more than the drain.
    A plain queue, not a task per Event: a rollout over thousands of Deployments queues
    thousands of Events at once, and a task per Event would cost a kilobyte or more each."""

    def __init__(
        self, api: KubeApi, *, rate: float = EVENT_RATE, drain: float = EVENT_DRAIN_SECONDS
    ) -> None:
        self._api = api
        self._rate = rate
        self._drain = drain
        self._next_slot = 0.0  # loop time from which the next Event may go
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue()
        for _ in range(POSTERS):
            api.loop.spawn(self._run())

    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self._api.loop.call(self._queue.put_nowait, (ref, type, reason, message))

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
                await self._api.post_event(ref, type=type, reason=reason, message=message)
            except Exception as error:  # the poster must outlive any failure
                message = error.message if isinstance(error, ApiError) else repr(error)
                log.warning("Event not posted", reason=reason, error=message)
