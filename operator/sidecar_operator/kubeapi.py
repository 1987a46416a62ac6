"""The few API calls the operator makes, on the official `kubernetes` client (synchronous: call
only from Kopf's sync handlers and daemons, which run in threads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
    def __init__(self) -> None:
        self._client = client.ApiClient()
        self._apps = client.AppsV1Api(self._client)
        self._custom = client.CustomObjectsApi(self._client)

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
