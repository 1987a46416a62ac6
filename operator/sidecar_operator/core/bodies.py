"""The server-side-apply bodies a policy sends. Pure.

Bodies share what depends only on the policy and the app's container names: a hundred policies
planned over 5000 Deployments held 14600 bodies, 27 MB of them copies. Callers never modify a
body (as with `to_api`). Shared parts are keyed by the policy's revision, so an edited policy
renders anew.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

from sidecar_operator.api.kinds import WorkloadKind, nest
from sidecar_operator.api.models import Content
from sidecar_operator.core.ownership import revision_annotation

SHARED_KEPT = 4096  # distinct parts kept before starting over
T = TypeVar("T")
_SHARED: dict[Hashable, Any] = {}


def removal_body(workload: Mapping[str, Any]) -> dict[str, Any]:
    """Applying nothing with a policy's field manager removes every field only it owned."""
    return _identity(workload)


def apply_body(
    workload: Mapping[str, Any],
    policy: str,
    content: Content,
    *,
    app_init: tuple[str, ...],
    app: tuple[str, ...],
) -> dict[str, Any]:
    """Everything `policy` adds to this workload (its content, a revision of it), as one
    server-side-apply body; `app_init` and `app` name the workload's own init containers and
    containers."""
    revision, kind = content.revision, WorkloadKind.of(workload)
    body = _identity(workload)
    body["metadata"]["annotations"] = _shared(
        ("annotations", policy, revision),
        lambda: {revision_annotation(policy): revision},
    )
    if content.values:
        # Rendered for this workload (`core.values`): shared by none, and not kept here, where
        # a policy naming each workload would push every other policy's parts out.
        body["spec"] = nest(kind.template_path[1:], _template(content, app_init, app))
    else:
        body["spec"] = _shared(
            ("spec", policy, revision, kind, app_init, app),
            lambda: nest(kind.template_path[1:], _template(content, app_init, app)),
        )
    return body


def _shared(key: Hashable, make: Callable[[], T]) -> T:
    part: T | None = _SHARED.get(key)
    if part is None:
        if len(_SHARED) >= SHARED_KEPT:
            _SHARED.clear()
        part = _SHARED[key] = make()
    return part


def _identity(workload: Mapping[str, Any]) -> dict[str, Any]:
    metadata, kind = workload["metadata"], WorkloadKind.of(workload)
    return {
        "apiVersion": kind.api_version,
        "kind": kind.value,
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
    }


def _template(content: Content, app_init: tuple[str, ...], app: tuple[str, ...]) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": _pod_spec(content, app_init, app)}
    metadata = {
        key: dict(values)
        for key, values in (
            ("labels", content.pod_labels),
            ("annotations", content.pod_annotations),
        )
        if values
    }
    if metadata:
        template["metadata"] = metadata
    return template


def _pod_spec(spec: Content, app_init: tuple[str, ...], app: tuple[str, ...]) -> dict[str, Any]:
    mounts = [m.to_api() for m in spec.volume_mounts]
    pod_spec: dict[str, Any] = {}

    init = [c.to_api() for c in spec.init_containers]
    if mounts:
        init += [{"name": name, "volumeMounts": mounts} for name in app_init]
    elif init and app_init:
        # Naming the app's first init container after ours places ours before the app's.
        init.append({"name": app_init[0]})
    if init:
        pod_spec["initContainers"] = init

    containers: list[dict[str, Any]] = []
    if mounts:
        containers += [{"name": name, "volumeMounts": mounts} for name in app]
    containers += [c.to_api() for c in spec.containers]
    if containers:
        pod_spec["containers"] = containers
    if spec.volumes:
        pod_spec["volumes"] = [v.to_api() for v in spec.volumes]
    return pod_spec
