"""What each policy owns on a Deployment, read from its server-side-apply managedFields.

The API server records, per field manager, the fields it set. Every policy applies with its own
manager `sidecars.dev/<policy>`, so the Deployment itself says which containers, volumes and mounts
a policy added: no bookkeeping of ours is needed, and a policy deleted while the operator was down
is still found. Pure: parses the managedFields JSON.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind, dig, nest
from sidecar_operator.api.names import FIELD_MANAGER_PREFIX, REVISION_ANNOTATION_PREFIX

POD_LISTS = ("initContainers", "containers")
ITEM_LISTS = (*POD_LISTS, "volumes")
POD_MAPS = ("labels", "annotations")  # of the pod template's metadata
# A policy's entry for a container it did not add carries only these: the key and its mounts.
# Owning anything else means the policy added the container (even after someone took over its
# image with an edit).
_ENTRY_FIELDS = {".", "f:name", "f:volumeMounts"}


@dataclass(frozen=True)
class Ownership:
    """The parts of a pod template one field manager set."""

    annotation: bool = False
    containers: frozenset[str] = frozenset()  # containers it added
    init_containers: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()
    # (list, container, mountPath) for mounts it put into containers it did not add
    mounts: frozenset[tuple[str, str, str]] = frozenset()
    pod_labels: frozenset[str] = frozenset()  # keys of the pod template's labels
    pod_annotations: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (
            self.annotation
            or self.containers
            or self.init_containers
            or self.volumes
            or self.mounts
            or self.pod_labels
            or self.pod_annotations
        )

    def added(self, pod_list: str) -> frozenset[str]:
        return self.init_containers if pod_list == "initContainers" else self.containers

    def keys(self, pod_map: str) -> frozenset[str]:
        """The pod template's labels or annotations it set."""
        return self.pod_labels if pod_map == "labels" else self.pod_annotations


def field_manager(policy: str) -> str:
    return FIELD_MANAGER_PREFIX + policy


def revision_annotation(policy: str) -> str:
    return REVISION_ANNOTATION_PREFIX + policy


@functools.lru_cache(maxsize=4096)  # the same few items' elements, on every workload planned
def _key(element: str, field: str) -> str | None:
    """The value of `field` in a `k:{...}` list-item path element."""
    if not element.startswith("k:"):
        return None
    value = json.loads(element[2:]).get(field)
    return value if isinstance(value, str) else None


def _map_keys(fields: Mapping[str, Any], kind: WorkloadKind, pod_map: str) -> Iterator[str]:
    """The keys of the pod template's labels or annotations a fieldsV1 set holds."""
    for element in dig(fields, (*kind.fields_path, "f:metadata", f"f:{pod_map}")):
        if element.startswith("f:"):
            yield element[2:]


def _merge_entries(deployment: Mapping[str, Any], manager: str) -> list[Mapping[str, Any]]:
    return [
        entry.get("fieldsV1") or {}
        for entry in deployment.get("metadata", {}).get("managedFields") or []
        if entry.get("manager") == manager and entry.get("operation") == "Apply"
    ]


def ownership(deployment: Mapping[str, Any], policy: str) -> Ownership:
    """What `policy`'s field manager owns on this Deployment."""
    annotation = False
    added: dict[str, set[str]] = {name: set() for name in POD_LISTS}
    volumes: set[str] = set()
    mounts: set[tuple[str, str, str]] = set()
    keys: dict[str, set[str]] = {pod_map: set() for pod_map in POD_MAPS}
    kind = WorkloadKind.of(deployment)
    pod_fields = (*kind.fields_path, "f:spec")
    for fields in _merge_entries(deployment, field_manager(policy)):
        for pod_map in POD_MAPS:
            keys[pod_map].update(_map_keys(fields, kind, pod_map))
        annotations = fields.get("f:metadata", {}).get("f:annotations", {})
        annotation = annotation or f"f:{revision_annotation(policy)}" in annotations
        pod = dig(fields, pod_fields)
        for pod_list in POD_LISTS:
            for element, item in pod.get(f"f:{pod_list}", {}).items():
                name = _key(element, "name")
                if name is None:
                    continue
                if set(item) - _ENTRY_FIELDS:
                    added[pod_list].add(name)
                    continue
                for mount_element in item.get("f:volumeMounts", {}):
                    path = _key(mount_element, "mountPath")
                    if path is not None:
                        mounts.add((pod_list, name, path))
        volumes.update(
            name for element in pod.get("f:volumes", {}) if (name := _key(element, "name"))
        )
    return Ownership(
        annotation=annotation,
        containers=frozenset(added["containers"]),
        init_containers=frozenset(added["initContainers"]),
        volumes=frozenset(volumes),
        mounts=frozenset(mounts),
        pod_labels=frozenset(keys["labels"]),
        pod_annotations=frozenset(keys["annotations"]),
    )


@dataclass(frozen=True)
class Foreign:
    """What managers other than the policies' own inside the pod template's named items (the
    app's manifests, `kubectl edit`, a GitOps tool): per item, the names of the fields they own
    there ("." is the item itself: whoever applied or created it). The API server records no
    manager for what a mutating webhook adds, so an item a policy did not apply and no one else
    owns was added at admission; one that someone owns is theirs.

    Checked on the real control plane: when a policy stops applying an item it owns, the API
    server removes the item whole, others' fields in it too, unless another manager owns the
    item itself; then the item stays with that manager's fields alone."""

    items: Mapping[tuple[str, str], frozenset[str]]  # (list, name) -> {".", "f:image", ...}
    mounts: Mapping[tuple[str, str, str], frozenset[str]]  # (list, container, mountPath) -> ...
    annotations: frozenset[str]  # the policies' revision annotations they own
    managers: Mapping[tuple[str, ...], frozenset[str]]  # item, mount or key -> who owns it
    keys: frozenset[tuple[str, str]] = frozenset()  # ("labels" or "annotations", key) of the
    # pod template's metadata

    def owns_item(self, pod_list: str, name: str) -> bool:
        """Anything in it but its key."""
        return bool(self.items.get((pod_list, name), frozenset()) - {"f:name"})

    def owns_mount(self, key: tuple[str, str, str]) -> bool:
        return bool(self.mounts.get(key, frozenset()) - {"f:mountPath"})

    def holders(self, key: tuple[str, ...]) -> str:
        """Who holds an item, mount or key, in words."""
        return ", ".join(sorted(self.managers.get(key, ()))) or "another field manager"


def foreign(workload: Mapping[str, Any]) -> Foreign:
    """What the non-policy managers own in the workload's pod-template items (from full
    managedFields, or the snapshot's `foreign_view` of them)."""
    items: dict[tuple[str, str], set[str]] = {}
    mounts: dict[tuple[str, str, str], set[str]] = {}
    annotations: set[str] = set()
    keys: set[tuple[str, str]] = set()
    managers: dict[tuple[str, ...], set[str]] = {}
    kind = WorkloadKind.of(workload)
    pod_fields = (*kind.fields_path, "f:spec")
    for entry in workload.get("metadata", {}).get("managedFields") or []:
        manager = str(entry.get("manager", ""))
        if manager.startswith(FIELD_MANAGER_PREFIX):
            continue
        fields = entry.get("fieldsV1") or {}
        for pod_map in POD_MAPS:
            for map_key in _map_keys(fields, kind, pod_map):
                keys.add((pod_map, map_key))
                managers.setdefault((pod_map, map_key), set()).add(manager)
        annotations.update(
            key[2:]
            for key in fields.get("f:metadata", {}).get("f:annotations", {})
            if key.startswith(f"f:{REVISION_ANNOTATION_PREFIX}")
        )
        pod = dig(fields, pod_fields)
        for pod_list in ITEM_LISTS:
            for element, item in pod.get(f"f:{pod_list}", {}).items():
                name = _key(element, "name")
                if name is None:
                    continue
                items.setdefault((pod_list, name), set()).update(item)
                managers.setdefault((pod_list, name), set()).add(manager)
                for mount_element, mount in item.get("f:volumeMounts", {}).items():
                    path = _key(mount_element, "mountPath")
                    if path is not None:
                        key = (pod_list, name, path)
                        mounts.setdefault(key, set()).update(mount)
                        managers.setdefault(key, set()).add(manager)
    return Foreign(
        items={key: frozenset(value) for key, value in items.items()},
        mounts={key: frozenset(value) for key, value in mounts.items()},
        annotations=frozenset(annotations),
        managers={key: frozenset(value) for key, value in managers.items()},
        keys=frozenset(keys),
    )


def foreign_view(fields: Mapping[str, Any], kind: WorkloadKind) -> dict[str, Any]:
    """Of a non-policy manager's fieldsV1, what `foreign` and `wrote_last` read: its
    revision annotations, the keys of the pod template's labels and annotations it owns, and
    per pod-template item and mount the names of the fields it owns there (not what is under
    them). A snapshot keeps this instead of the whole set."""
    view: dict[str, Any] = {}
    annotations: dict[str, Any] = {
        key: {}
        for key in fields.get("f:metadata", {}).get("f:annotations", {})
        if key.startswith(f"f:{REVISION_ANNOTATION_PREFIX}")
    }
    if annotations:
        view["f:metadata"] = {"f:annotations": annotations}
    if "f:spec" not in fields:
        return view
    pod = dig(fields, (*kind.fields_path, "f:spec"))
    lists: dict[str, Any] = {}
    for pod_list in ITEM_LISTS:
        kept: dict[str, Any] = {}
        for element, item in pod.get(f"f:{pod_list}", {}).items():
            pruned: dict[str, Any] = {name: {} for name in item}
            if "f:volumeMounts" in item:
                pruned["f:volumeMounts"] = {
                    mount_element: {name: {} for name in mount}
                    for mount_element, mount in item["f:volumeMounts"].items()
                }
            kept[element] = pruned
        if kept:
            lists[f"f:{pod_list}"] = kept
    metadata: dict[str, Any] = {
        f"f:{pod_map}": {f"f:{key}": {} for key in keys}
        for pod_map in POD_MAPS
        if (keys := list(_map_keys(fields, kind, pod_map)))
    }
    template: dict[str, Any] = {"f:spec": lists} if lists else {}
    if metadata:
        template["f:metadata"] = metadata
    view.update(nest(kind.fields_path, template) if template else {"f:spec": {}})
    return view


def policies_with_fields(deployment: Mapping[str, Any]) -> frozenset[str]:
    """Every policy whose field manager owns something on the Deployment. Its revision annotation
    alone does not count: a user can copy one onto a Deployment, and only what the policy's
    manager owns is the policy's (an empty apply would not remove that annotation, so treating
    it as the policy's wrote the same removal on every event)."""
    return frozenset(
        entry["manager"][len(FIELD_MANAGER_PREFIX) :]
        for entry in deployment.get("metadata", {}).get("managedFields") or []
        if entry.get("manager", "").startswith(FIELD_MANAGER_PREFIX)
        and entry.get("operation") == "Apply"
    )


def wrote_last(deployment: Mapping[str, Any], policy: str) -> bool:
    """Whether `policy`'s last change to the Deployment is no older than any change its owners
    made to the spec since: then a rollout under way is (at least partly) the policy's doing.
    The API server stamps each manager's entry with the time of its last change (to the second,
    so a tie counts as the policy's). Other policies, the status and scale subresources, and
    the Deployment controller's revision annotation do not start the owner's rollouts."""
    ours = ""
    theirs = ""
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        manager, stamp = entry.get("manager", ""), entry.get("time") or ""
        if manager == field_manager(policy) and entry.get("operation") == "Apply":
            ours = max(ours, stamp)
        elif (
            not manager.startswith(FIELD_MANAGER_PREFIX)
            and not entry.get("subresource")
            and "f:spec" in (entry.get("fieldsV1") or {})
        ):
            theirs = max(theirs, stamp)
    return bool(ours) and ours >= theirs


def written_at(workload: Mapping[str, Any], policy: str) -> datetime.datetime | None:
    """When `policy` last changed the workload: the API server's stamp on its manager's entry
    (to the second), or None if it owns nothing there."""
    stamps = [
        entry["time"]
        for entry in workload.get("metadata", {}).get("managedFields") or []
        if entry.get("manager") == field_manager(policy)
        and entry.get("operation") == "Apply"
        and entry.get("time")
    ]
    return datetime.datetime.fromisoformat(max(stamps)) if stamps else None
