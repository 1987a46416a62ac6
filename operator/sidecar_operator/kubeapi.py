"""The few API calls the operator makes, on the official `kubernetes` client (synchronous: call
only from Kopf's sync handlers and daemons, which run in threads)."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sidecar_operator import api
from sidecar_operator.ownership import field_manager


@dataclass(frozen=True)
class ApiError(Exception):
    status: int
    message: str

    @classmethod
    def wrap(cls, error: ApiException) -> ApiError:
        try:
            message = json.loads(error.body or "").get("message", error.reason)
        except (TypeError, ValueError, AttributeError):
            message = str(error.reason)
        return cls(int(error.status or 0), message)


def load_config() -> None:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]


class KubeApi:
    def __init__(self, *, connections: int = 32) -> None:
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = connections  # the writers share one pool
        self._client = client.ApiClient(configuration)
        self._apps = client.AppsV1Api(self._client)
        self._custom = client.CustomObjectsApi(self._client)
        self._core = client.CoreV1Api(self._client)

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        return dict(json.loads(response.data))

    def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        """Server-side apply `body` to a Deployment with the policy's own field manager."""
        metadata = body["metadata"]
        try:
            response = self._apps.patch_namespaced_deployment(
                metadata["name"],
                metadata["namespace"],
                body,
                field_manager=field_manager(policy),
                force=force,
                _content_type="application/apply-patch+yaml",
                _preload_content=False,
            )
        except ApiException as error:
            raise ApiError.wrap(error) from None
        return self._json(response)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self._apps.read_namespaced_deployment(
                name, namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise ApiError.wrap(error) from None
        return self._json(response)

    def list_all(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Deployments, Namespaces and SidecarPolicies, read once (for `preview`). Without the
        CRD installed there are simply no policies yet."""
        try:
            deployments = self._json(
                self._apps.list_deployment_for_all_namespaces(_preload_content=False)
            )
            namespaces = self._json(self._core.list_namespace(_preload_content=False))
        except ApiException as error:
            raise ApiError.wrap(error) from None
        try:
            policies = self._json(
                self._custom.list_cluster_custom_object(
                    api.GROUP, api.VERSION, api.PLURAL, _preload_content=False
                )
            )
        except ApiException as error:
            if error.status != 404:
                raise ApiError.wrap(error) from None
            policies = {}
        return (
            list(deployments.get("items") or []),
            list(namespaces.get("items") or []),
            list(policies.get("items") or []),
        )

    def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        try:
            self._custom.patch_cluster_custom_object_status(
                api.GROUP,
                api.VERSION,
                api.PLURAL,
                name,
                {"status": status},
                _content_type="application/merge-patch+json",
            )
        except ApiException as error:
            if error.status != 404:
                raise ApiError.wrap(error) from None

    def ensure_cluster_peering(self, name: str) -> None:
        """Kopf only patches its peering object: without one, replicas cannot see each other."""
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            self._custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
        except ApiException as error:
            if error.status != 409:
                raise ApiError.wrap(error) from None

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
        try:
            self._core.create_namespaced_event(namespace, body)  # type: ignore[arg-type]
        except ApiException as error:
            raise ApiError.wrap(error) from None


class EventPoster:
    """Posts Events from a thread of its own, so a write never waits for its Event."""

    def __init__(self, api: KubeApi) -> None:
        self._api = api
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="events")

    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        self._pool.submit(self._send, ref, type, reason, message)

    def _send(self, ref: dict[str, Any], type: str, reason: str, message: str) -> None:
        try:
            self._api.post_event(ref, type=type, reason=reason, message=message)
        except ApiError as error:
            structlog.get_logger().warning("Event not posted", reason=reason, error=error.message)
