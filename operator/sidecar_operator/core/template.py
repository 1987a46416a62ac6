"""The workload's pod template as the planner reads it: the app's containers apart from those
policies added, the labels and annotations, the selector's keys; and the keys of a template a
content sets. Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Content
from sidecar_operator.core import workloads
from sidecar_operator.core.ownership import POD_LISTS, POD_MAPS, Ownership


@dataclass(frozen=True)
class Pod:
    """The workload's pod template split into what the app has and what policies added."""

    kind: WorkloadKind
    spec: Mapping[str, Any]
    added_by_policies: Mapping[str, frozenset[str]]  # pod list -> container names
    host_network: bool = False
    metadata: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # labels, annotations
    selector_keys: frozenset[str] = frozenset()  # the workload's selector's label keys

    def items(self, pod_list: str) -> list[Mapping[str, Any]]:
        return list(self.spec.get(pod_list) or [])

    def app_containers(self, pod_list: str) -> list[Mapping[str, Any]]:
        added = self.added_by_policies[pod_list]
        return [item for item in self.items(pod_list) if item["name"] not in added]

    def find(self, pod_list: str, name: str) -> Mapping[str, Any] | None:
        """A container, init container or volume, by name."""
        return next((item for item in self.items(pod_list) if item["name"] == name), None)


def of(workload: Mapping[str, Any], owners: Mapping[str, Ownership]) -> Pod:
    """The workload's template, with what the policies in `owners` added set apart."""
    spec = workloads.pod_spec(workload)
    metadata = workloads.pod_template(workload).get("metadata") or {}
    return Pod(
        kind=WorkloadKind.of(workload),
        spec=spec,
        added_by_policies={
            pod_list: frozenset().union(*(o.added(pod_list) for o in owners.values()))
            for pod_list in POD_LISTS
        },
        host_network=bool(spec.get("hostNetwork")),
        metadata={pod_map: metadata.get(pod_map) or {} for pod_map in POD_MAPS},
        selector_keys=workloads.selector_keys(workload),
    )


def pod_keys(content: Content) -> Iterator[tuple[tuple[str, str], str]]:
    """The pod template's labels and annotations a content sets: ((map, key), value)."""
    for pod_map, entries in (
        ("labels", content.pod_labels),
        ("annotations", content.pod_annotations),
    ):
        for key, value in entries.items():
            yield (pod_map, key), value


def mount_keys(content: Content, pod: Pod) -> set[tuple[str, str, str]]:
    return {
        (pod_list, container["name"], mount.mount_path)
        for pod_list in POD_LISTS
        for container in pod.app_containers(pod_list)
        for mount in content.volume_mounts
    }
