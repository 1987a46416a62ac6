"""The few API calls the operator makes, on the official `kubernetes` client (synchronous: call
only from threads: Kopf's sync handlers and daemons, the writers, the Deployment watch)."""

from __future__ import annotations

import datetime
import json
import queue
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sidecar_operator import api
from sidecar_operator.ownership import field_manager


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
POLICY_STATUS = f"/apis/{api.GROUP}/{api.VERSION}/{api.PLURAL}/{{name}}/status"


class KubeApi:
    """Raw JSON over the client's configured connection pool (auth, TLS, proxies). Not the
    generated `CoreV1Api` & co.: loading their modules and models costs ~90 MB of memory, and
    the operator needs a handful of paths and plain dicts."""

    def __init__(self, *, connections: int = 16) -> None:
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = connections  # the writers share one pool
        self._client = client.ApiClient(configuration)

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] = 60,
    ) -> Any:
        """The client's response, not yet read; raises ApiError for any status but 2xx."""
        method, url, headers, _, _ = self._client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        try:
            # The client encodes `body` as JSON (valid YAML too) for JSON and +yaml types.
            response = self._client.call_api(method, url, headers, body, _request_timeout=timeout)
        except ApiException as error:
            raise ApiError(int(error.status or 0), str(error.reason)) from None
        if not 200 <= response.status < 300:
            raise ApiError.from_response(response.status, response.read())  # type: ignore[no-untyped-call]
        return response

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        response = self._send(
            method, path, body, query=list((query or {}).items()), content_type=content_type
        )
        return dict(json.loads(response.read()))

    def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        """Server-side apply `body` to a Deployment with the policy's own field manager."""
        query = {"fieldManager": field_manager(policy)}
        if force:
            query["force"] = "true"
        return self._request(
            "PATCH",
            DEPLOYMENTS.format(**body["metadata"]),
            body,
            query=query,
            content_type="application/apply-patch+yaml",
        )

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", DEPLOYMENTS.format(namespace=namespace, name=name))
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
            policies = self._request("GET", f"/apis/{api.GROUP}/{api.VERSION}/{api.PLURAL}")
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
        the server ends the watch after `timeout` seconds."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout)),
        ]
        response = self._send("GET", ALL_DEPLOYMENTS, query=query, timeout=(10, timeout + 30))
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

    def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            self._request(
                "PATCH",
                POLICY_STATUS.format(name=name),
                {"status": status},
                content_type="application/merge-patch+json",
            )
        except ApiError as error:
            if error.status != 404:
                raise

    def ensure_cluster_peering(self, name: str) -> None:
        """Kopf only patches its peering object: without one, replicas cannot see each other."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            self._request("POST", "/apis/kopf.dev/v1/clusterkopfpeerings", body)
        except ApiError as error:
            if error.status != 409:
                raise

    def post_event(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
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
        self._request("POST", f"/api/v1/namespaces/{namespace}/events", body)


POSTERS = 8  # a rollout over 5000 Deployments posts 5000 Events: one at a time takes a minute


class EventPoster:
    """Posts Events from threads of their own, so a write never waits for its Event. A plain
    queue, not an executor: a rollout over thousands of Deployments queues thousands of Events
    at once, and a future per Event would cost a kilobyte each."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], str, str, str]] = queue.SimpleQueue()
        for _ in range(POSTERS):
            threading.Thread(target=self._run, name="events", daemon=True).start()

    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self._queue.put((ref, type, reason, message))

    def _run(self) -> None:
        while True:
            ref, type, reason, message = self._queue.get()
            try:
                self._api.post_event(ref, type=type, reason=reason, message=message)
            except Exception as error:  # the thread must outlive any failure
                message = error.message if isinstance(error, ApiError) else str(error)
                structlog.get_logger().warning("Event not posted", reason=reason, error=message)
