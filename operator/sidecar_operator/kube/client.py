"""The few API calls the operator makes, as coroutines on the operator's one event loop: raw
JSON over one aiohttp session, on the connection `kube.connection` finds (and, where the
credentials need it, keeps fresh without blocking the loop)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import structlog

from sidecar_operator import metrics
from sidecar_operator.api import names
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.core.types import Key
from sidecar_operator.kube.connection import Connection, find

log = structlog.get_logger()
# asyncio gives every TLS connection a zero-filled 256 KiB receive buffer, all of it resident:
# 16 MB for 64 connections (the writers then), which brought the operator to 150 MB at 5000
# Deployments. Responses are a few KiB (a page of a list, a few hundred); smaller buffers only
# mean more reads of a large one.
TLS_BUFFER = 32 * 1024
# aiohttp closes a connection idle for 15 s, so every rollout opened its writers' connections
# anew (a TLS handshake each, on both ends). The API server keeps idle connections for 90 s;
# one it closed first is sent on again (`_request`).
KEEPALIVE_SECONDS = 60.0

POLICIES = f"/apis/{names.GROUP}/{names.VERSION}/{names.PLURAL}"
NAMESPACES = "/api/v1/namespaces"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
POLICY_STATUS = f"{POLICIES}/{{name}}/status"
CLUSTER_PEERINGS = "/apis/kopf.dev/v1/clusterkopfpeerings"
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def _said(error: BaseException) -> str:
    """aiohttp's errors read well as text, some are empty (a timeout): their type then."""
    return str(error) or type(error).__name__


@dataclass
class ApiError(Exception):
    status: int
    message: str

    @classmethod
    def from_response(cls, status: int, data: bytes) -> ApiError:
        try:
            message = str(orjson.loads(data).get("message") or "")
        except (TypeError, ValueError, AttributeError):
            message = ""
        return cls(status, message or data[:200].decode(errors="replace"))


def revisions_path(namespace: str) -> str:
    """A namespace's ControllerRevisions: the policies' revision history."""
    return f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions"


def workloads_path(kind: WorkloadKind) -> str:
    """Every workload of a kind, in every namespace."""
    return f"/apis/{kind.api_version}/{kind.plural}"


def _one(key: Key) -> str:
    return f"/apis/{key.kind.api_version}/namespaces/{key.namespace}/{key.kind.plural}/{key.name}"


def _kinded(listing: dict[str, Any], kind: WorkloadKind) -> dict[str, Any]:
    """A list's items name no kind (the list does): each snapshot must know its own."""
    for item in listing.get("items") or []:
        item["kind"] = kind.value
    return listing


def _resource(path: str) -> str:
    """The resource a request path names, for the request metric: `deployments`, `events`,
    `sidecarpolicies/status`... (namespaces and object names left out: bounded label values)."""
    parts = path.strip("/").split("/")
    parts = parts[2:] if parts[0] == "api" else parts[3:]  # /api/v1/... or /apis/group/v1/...
    if parts[0] == "namespaces" and len(parts) > 2:
        parts = parts[2:]
    resource = parts[0] if parts else ""
    return f"{resource}/{parts[2]}" if len(parts) > 2 else resource


class KubeApi:
    """Raw JSON on the configured host, CA, client certificate, bearer token, proxy and TLS
    server name. Not the generated `CoreV1Api` & co.: the operator needs a handful of paths and
    plain dicts, and building their models from every response costs CPU the API server, on a
    busy machine, would rather have. aiohttp rather than the synchronous client's urllib3: 1000
    server-side applies from 64 threads cost its process 0.85-0.91 CPU s, from 64 coroutines
    on aiohttp 0.26-0.32 s.

    Made and used on one running loop: `connect` there, `close` when done."""

    def __init__(self, connection: Connection, *, connections: int = 16) -> None:
        self._connection = connection
        asyncio.sslproto.SSLProtocol.max_size = TLS_BUFFER  # no public setting: see TLS_BUFFER
        self._connections = connections
        self._http: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, *, connections: int = 16) -> KubeApi:
        """In the cluster, its service account; elsewhere the kubeconfig's current context.
        Raises NotConfigured."""
        connection, refresher = await find()
        api = cls(connection, connections=connections)
        if refresher is not None:
            api._refresher = asyncio.create_task(refresher)
        return api

    async def close(self) -> None:
        """Close the session's connections; aiohttp reports a session left open at exit."""
        if self._refresher is not None:
            self._refresher.cancel()
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        """Made at the first request, on the loop that makes it: a session belongs to one."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self._connection.ssl,
                    limit=self._connections,
                    keepalive_timeout=KEEPALIVE_SECONDS,
                ),
                timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
            )
        return self._http

    async def _headers(self, content_type: str, accept: str = "application/json") -> dict[str, str]:
        headers = {"Accept": accept, "Content-Type": content_type}
        token = await self._connection.authorization()
        if token:
            headers["Authorization"] = token
        return headers

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        """Raises ApiError for any status but 2xx, ConnectionError if there was no answer. A
        request on a connection the server dropped while idle is sent once more, PATCH and POST
        too (aiohttp does so only for idempotent methods)."""
        headers = await self._headers(content_type, accept)
        # JSON is valid YAML for +yaml types. UTF-8 as it is (as orjson writes it): the API
        # server reads an apply body as YAML, which refuses \uXXXX surrogate pairs.
        # orjson: JSON took 13% of the loop while it injected (py-spy); orjson decodes an apply's
        # answer 2.4x and encodes its body 14x faster than json.
        data = None if body is None else orjson.dumps(body)
        url = self._connection.host + path
        try:
            try:
                status, payload = await self._send(method, url, query, data, headers)
            except aiohttp.ServerDisconnectedError:
                status, payload = await self._send(method, url, query, data, headers)
        except (aiohttp.ClientError, TimeoutError) as error:
            # Not all of aiohttp's are OSErrors, which callers (the watch) take for a failed
            # connection and retry.
            raise ConnectionError(f"{method} {path}: {_said(error)}") from error
        finally:
            metrics.REQUESTS.labels(method=method, resource=_resource(path)).inc()
        if not 200 <= status < 300:
            raise ApiError.from_response(status, payload)
        return dict(orjson.loads(payload))

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
            proxy=self._connection.proxy,  # a kubeconfig's proxy-url
            server_hostname=self._connection.server_name,  # and tls-server-name
        ) as response:
            return response.status, await response.read()

    async def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        """Server-side apply `body` to the workload it names, with the policy's own field
        manager."""
        query = {"fieldManager": field_manager(policy)}
        if force:
            query["force"] = "true"
        return await self._request(
            "PATCH",
            _one(Key.of(body)),
            body,
            query=query,
            content_type="application/apply-patch+yaml",
        )

    async def get_workload(self, key: Key) -> dict[str, Any] | None:
        try:
            return await self._request("GET", _one(key))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list_all(
        self,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Workloads of every kind, Namespaces and SidecarPolicies, read once (for `preview`).
        Without the CRD installed there are simply no policies yet."""
        workloads: list[dict[str, Any]] = []
        for kind in WorkloadKind:
            listing = _kinded(await self._request("GET", workloads_path(kind)), kind)
            workloads += listing["items"] or []
        namespaces = await self._request("GET", NAMESPACES)
        try:
            policies = await self._request("GET", POLICIES)
        except ApiError as error:
            if error.status != 404:
                raise
            policies = {}
        return (
            workloads,
            list(namespaces.get("items") or []),
            list(policies.get("items") or []),
        )

    async def list_page(
        self, path: str, *, limit: int, token: str | None, label_selector: str | None = None
    ) -> dict[str, Any]:
        """One page of a collection (`workloads_path`, `POLICIES`, `NAMESPACES`, ...)."""
        query = {"limit": str(limit)}
        if token:
            query["continue"] = token
        if label_selector:
            query["labelSelector"] = label_selector
        return await self._request("GET", path, query=query)

    async def list_metadata(self, path: str, *, limit: int, token: str | None) -> dict[str, Any]:
        """One page of a collection's metadata alone (managedFields included): a few hundred
        bytes an object, to find what needs the full object."""
        query = {"limit": str(limit)}
        if token:
            query["continue"] = token
        return await self._request("GET", path, query=query, accept=METADATA_LIST)

    async def watch_events(
        self, path: str, version: str, *, timeout: int, label_selector: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every watch event of a collection from `version` on, one parsed event at a time,
        until the server ends the watch after `timeout` seconds. Raises like `_request`."""
        query = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        if label_selector:
            query["labelSelector"] = label_selector
        metrics.REQUESTS.labels(method="WATCH", resource=_resource(path)).inc()
        try:
            async with self._session().get(
                self._connection.host + path,
                params=query,
                headers=await self._headers("application/json"),
                proxy=self._connection.proxy,
                server_hostname=self._connection.server_name,
                # A stream, not a request: no total; silence past the server's end is a failure.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout + 30),
            ) as response:
                if not 200 <= response.status < 300:
                    raise ApiError.from_response(response.status, await response.read())
                # Not line by line: aiohttp refuses lines over 128 KiB, and an object may be
                # over a megabyte.
                pending = b""
                async for chunk in response.content.iter_any():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield orjson.loads(line)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ConnectionError(f"watch {path}: {_said(error)}") from error

    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> dict[str, Any] | None:
        """The policy as it is after the patch (None: it is gone)."""
        try:
            return await self._request(
                "PATCH",
                POLICY_STATUS.format(name=name),
                {"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as error:
            if error.status != 404:
                raise
            return None

    async def get_policy(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", f"{POLICIES}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def patch_policy(self, name: str, patch: dict[str, Any], *, manager: str) -> None:
        """A JSON merge patch of the policy (its annotations, or its spec)."""
        await self._request(
            "PATCH",
            f"{POLICIES}/{name}",
            patch,
            query={"fieldManager": manager},
            content_type="application/merge-patch+json",
        )

    async def list_revisions(self, label_selector: str) -> list[dict[str, Any]]:
        """ControllerRevisions in every namespace with these labels."""
        listing = await self._request(
            "GET", "/apis/apps/v1/controllerrevisions", query={"labelSelector": label_selector}
        )
        return list(listing.get("items") or [])

    async def create_revision(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        return await self._request("POST", revisions_path(namespace), body)

    async def patch_revision(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            f"{revisions_path(namespace)}/{name}",
            patch,
            content_type="application/merge-patch+json",
        )

    async def delete_revision(self, namespace: str, name: str) -> None:
        try:
            await self._request("DELETE", f"{revisions_path(namespace)}/{name}")
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
            await self._request("POST", CLUSTER_PEERINGS, body)
        except ApiError as error:
            if error.status != 409:
                raise

    async def get_cluster_peering(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", f"{CLUSTER_PEERINGS}/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def touch_cluster_peering(self, name: str, peer: str, record: dict[str, Any]) -> None:
        """Write one peer's record (priority, lifetime, lastseen) into the peering's status."""
        await self._request(
            "PATCH",
            f"{CLUSTER_PEERINGS}/{name}",
            {"status": {peer: record}},
            content_type="application/merge-patch+json",
        )

    async def get_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded; None when there is no such Secret."""
        try:
            secret = await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}

    async def create_secret(self, namespace: str, name: str, data: dict[str, bytes]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls",
            "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
        }
        await self._request("POST", f"/api/v1/namespaces/{namespace}/secrets", body)

    async def set_webhook_ca(self, configuration: str, ca_bundle: str) -> None:
        """Every webhook of the MutatingWebhookConfiguration trusts this CA."""
        path = f"{WEBHOOK_CONFIGURATIONS}/{configuration}"
        webhooks = (await self._request("GET", path)).get("webhooks") or []
        operations = [
            {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": ca_bundle}
            for index, webhook in enumerate(webhooks)
            if webhook.get("clientConfig", {}).get("caBundle") != ca_bundle
        ]
        if operations:
            await self._request(
                "PATCH", path, operations, content_type="application/json-patch+json"
            )

    async def post_event(self, body: dict[str, Any]) -> None:
        """A core/v1 Event, in the namespace its body names."""
        namespace = body["metadata"]["namespace"]
        await self._request("POST", f"/api/v1/namespaces/{namespace}/events", body)


async def read_cluster() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """`KubeApi.list_all` on a client of its own, closed after."""
    api = await KubeApi.connect()
    try:
        return await api.list_all()
    finally:
        await api.close()
