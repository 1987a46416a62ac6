"""Whether a workload holds what a policy wants, the way the API server stores it
(`core/stored`), and whether a difference is someone's edit or the workload's values moving.
Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar_operator.api.models import Content
from sidecar_operator.core import stored
from sidecar_operator.core.clashes import shown
from sidecar_operator.core.ownership import POD_LISTS, POD_MAPS, Foreign, Ownership
from sidecar_operator.core.template import Pod, mount_keys, pod_keys


@dataclass(frozen=True)
class Drift:
    in_sync: bool  # everything is as the policy wants, as the API server stores it
    edited: bool  # a value inside an item the policy owns differs: someone changed it
    where: str = ""  # the first difference found, in words


def drift(spec: Content, pod: Pod, owned: Ownership) -> Drift:
    """Compares what the workload holds with what the policy wants (`core/stored`)."""
    in_sync, edited, where = True, False, ""

    def check(
        live: Mapping[str, Any] | None, wanted: Mapping[str, Any], type_name: str, item: str
    ) -> None:
        nonlocal in_sync, edited, where
        difference = stored.difference(live, wanted, type_name)
        if difference:
            in_sync, edited = False, edited or live is not None
            where = where or f"{item}: {difference}"

    for pod_list, wanted in (
        ("containers", spec.containers),
        ("initContainers", spec.init_containers),
    ):
        if owned.added(pod_list) != {c.name for c in wanted}:
            in_sync, where = False, where or f"{pod_list}: not all the policy's"
        for container in wanted:
            live = pod.find(pod_list, container.name)
            check(live, container.to_api(), "Container", f"container {container.name}")
    if owned.volumes != {v.name for v in spec.volumes}:
        in_sync, where = False, where or "volumes: not all the policy's"
    for volume in spec.volumes:
        check(pod.find("volumes", volume.name), volume.to_api(), "Volume", f"volume {volume.name}")
    if owned.mounts != mount_keys(spec, pod):
        in_sync, where = False, where or "volumeMounts: not all the policy's"
    wanted_keys = dict(pod_keys(spec))
    for pod_map in POD_MAPS:
        if owned.keys(pod_map) != {key for (in_map, key) in wanted_keys if in_map == pod_map}:
            in_sync, where = False, where or f"podMetadata.{pod_map}: not all the policy's"
    for (pod_map, key), value in wanted_keys.items():
        live_value = pod.metadata.get(pod_map, {}).get(key)
        if live_value != value:
            in_sync, edited = False, edited or live_value is not None
            where = where or (
                f"pod {pod_map[:-1]} {key}: {shown(live_value or '')} != {shown(value)}"
            )
    for pod_list in POD_LISTS:
        for app_container in pod.app_containers(pod_list):
            live_mounts = {m["mountPath"]: m for m in app_container.get("volumeMounts") or []}
            for mount in spec.volume_mounts:
                check(
                    live_mounts.get(mount.mount_path),
                    mount.to_api(),
                    "VolumeMount",
                    f"the mount at {mount.mount_path} in container {app_container['name']}",
                )
    return Drift(in_sync, edited, where)


def values_moved(content: Content, pod: Pod, others: Foreign) -> bool:
    """A content rendered for the workload (`core/values`) that differs from what the workload
    holds, every item of it there and no one else's hand in them: the values moved (a label it
    names changed), an update of the workload like a new revision, not an edit to take back."""
    if not content.values:
        return False
    items = [
        *(("containers", c.name) for c in content.containers),
        *(("initContainers", c.name) for c in content.init_containers),
        *(("volumes", v.name) for v in content.volumes),
    ]
    return all(
        pod.find(pod_list, name) is not None and not others.owns_item(pod_list, name)
        for pod_list, name in items
    ) and all(
        key in pod.metadata.get(pod_map, {}) and (pod_map, key) not in others.keys
        for (pod_map, key), _ in pod_keys(content)
    )
