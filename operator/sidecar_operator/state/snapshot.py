"""The slice of a Deployment the operator keeps in memory. Pure.

Every Deployment in the cluster is watched, so the in-memory copy holds only what planning and
status need: identity, labels, our annotations, policies' managedFields entries (and of the
others' when they last changed the spec, and which fields they own in the pod template's named
items and metadata: whose item or key is it), the selector, the pod template's labels, the
annotations policies name, containers, volumes, host network and security context, and the
rollout status.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import orjson

from sidecar_operator.api.kinds import WorkloadKind, nest
from sidecar_operator.api.names import FIELD_MANAGER_PREFIX, INJECT_KEY, REVISION_ANNOTATION_PREFIX
from sidecar_operator.core import workloads
from sidecar_operator.core.ownership import foreign_view

_POD_FIELDS = ("initContainers", "containers", "volumes")
# What Pod Security judges a sidecar by, and what gives every port a host port.
_POD_SETTINGS = ("securityContext", "hostUsers", "os", "hostNetwork")
T = TypeVar("T")


class Shared:
    """One object per distinct content among many snapshots: thousands of Deployments carry the
    same sidecar, volume, managedFields entry and conditions, parsed anew from every event.
    Snapshots are never modified, so they can share them. The owner of the snapshots calls
    `sweep` when `due`, so contents no snapshot holds any more are forgotten."""

    def __init__(self) -> None:
        self._objects: dict[bytes, Any] = {}
        self._sweep_at = 1024

    def __call__(self, value: T) -> T:
        canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(canonical, digest_size=16).digest()
        shared: T = self._objects.setdefault(digest, value)
        return shared

    def __len__(self) -> int:
        return len(self._objects)

    @property
    def due(self) -> bool:
        return len(self._objects) >= self._sweep_at

    def sweep(self, snapshots: Iterable[Mapping[str, Any]]) -> None:
        """Keep only what these (all live) snapshots hold."""
        held = {id(part) for record in snapshots for part in _shared_parts(record)}
        self._objects = {k: v for k, v in self._objects.items() if id(v) in held}
        self._sweep_at = max(1024, 2 * len(self._objects))


def _shared_parts(record: Mapping[str, Any]) -> Iterator[Any]:
    yield from (entry["fieldsV1"] for entry in record["metadata"]["managedFields"])
    pod = workloads.pod_spec(record)
    for key in _POD_FIELDS:
        yield from pod.get(key, ())
    yield from (pod[key] for key in _POD_SETTINGS if key in pod)
    labels = workloads.pod_template(record).get("metadata", {}).get("labels")
    if labels:
        yield labels
    if "selector" in record["spec"]:
        yield record["spec"]["selector"]
    if "conditions" in record["status"]:
        yield record["status"]["conditions"]


def _unshared(value: T) -> T:
    return value


def compact(
    workload: Mapping[str, Any],
    share: Callable[[Any], Any] = _unshared,
    annotations: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """`share` (a `Shared`) lets identical parts of many snapshots be one object; `annotations`
    are the keys policies name (their placeholders, on the workload; their podMetadata, on the
    pod template), kept besides the revision annotations."""
    kind = WorkloadKind.of(workload)
    metadata = workload.get("metadata", {})
    spec = workload.get("spec", {})
    status = workload.get("status") or {}
    pod = workloads.pod_spec(workload)
    pod_spec: dict[str, Any] = {
        key: [share(item) for item in pod[key]] for key in _POD_FIELDS if key in pod
    }
    for key in _POD_SETTINGS:
        if key in pod:
            pod_spec[key] = share(pod[key])
    template: dict[str, Any] = {"spec": pod_spec}
    pod_metadata = workloads.pod_template(workload).get("metadata") or {}
    if pod_metadata.get("labels"):
        template["metadata"] = {"labels": share(pod_metadata["labels"])}
    pod_annotations = {
        key: value
        for key, value in (pod_metadata.get("annotations") or {}).items()
        if key in annotations
    }
    if pod_annotations:
        template.setdefault("metadata", {})["annotations"] = pod_annotations
    kept_annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if key.startswith(REVISION_ANNOTATION_PREFIX) or key == INJECT_KEY or key in annotations
    }
    return {
        "kind": kind.value,
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
            "generation": metadata.get("generation", 0),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": kept_annotations,
            "managedFields": [
                kept
                for entry in metadata.get("managedFields") or []
                if (kept := _managed_entry(entry, kind, share)) is not None
            ],
        },
        "spec": {
            **{key: _kept(key, spec[key], share) for key in _SPEC_KEPT[kind] if key in spec},
            **nest(kind.template_path[1:], template),
        },
        "status": _status(kind, status, share),
    }


# What `core.workloads` reads to tell whether a workload has rolled out.
# The selector: a policy never sets one of its labels on the pod template (`core/planner`).
_SPEC_KEPT = {
    WorkloadKind.DEPLOYMENT: ("replicas", "paused", "selector"),
    WorkloadKind.STATEFUL_SET: ("replicas", "updateStrategy", "selector"),
    WorkloadKind.DAEMON_SET: ("updateStrategy", "selector"),
    WorkloadKind.CRON_JOB: (),
}
_STATUS_KEPT = {
    WorkloadKind.DEPLOYMENT: ("replicas", "updatedReplicas", "availableReplicas"),
    WorkloadKind.STATEFUL_SET: (
        "availableReplicas",
        "updatedReplicas",
        "currentRevision",
        "updateRevision",
    ),
    WorkloadKind.DAEMON_SET: (
        "desiredNumberScheduled",
        "updatedNumberScheduled",
        "numberAvailable",
    ),
    WorkloadKind.CRON_JOB: (),
}


def _kept(key: str, value: Any, share: Callable[[Any], Any]) -> Any:
    return share(value) if key == "selector" else value


def _status(
    kind: WorkloadKind, status: Mapping[str, Any], share: Callable[[Any], Any]
) -> dict[str, Any]:
    kept = {key: status[key] for key in _STATUS_KEPT[kind] if key in status}
    kept["observedGeneration"] = status.get("observedGeneration", 0)
    if kind is WorkloadKind.DEPLOYMENT:
        kept["conditions"] = share(
            [
                {"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
                for c in status.get("conditions") or []
            ]
        )
    return kept


def _managed_entry(
    entry: Mapping[str, Any], kind: WorkloadKind, share: Callable[[Any], Any]
) -> dict[str, Any] | None:
    """A policy's entry whole; of the others' what `ownership.foreign_view` keeps, and when."""
    manager = entry.get("manager", "")
    fields = entry.get("fieldsV1") or {}
    if manager.startswith(FIELD_MANAGER_PREFIX):
        fields = share(fields)
    elif not entry.get("subresource") and (view := foreign_view(fields, kind)):
        fields = share(view)
    else:
        return None
    return {
        "manager": sys.intern(manager),
        "operation": entry.get("operation"),
        "time": entry.get("time"),
        "fieldsV1": fields,
    }
