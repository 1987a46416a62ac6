"""The audit every chaos trial ends with, on the cluster's actual objects. Pure: objects in,
defects out, each a sentence naming the Deployment.

Nothing lost, changed or reordered: a matched Deployment's pod template, with exactly what the
policy adds taken out, equals the snapshot taken before the policy existed; what the policy adds
is there exactly once and as the policy says; after removal the template is the snapshot.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sidecar_operator.api import placeholders
from sidecar_operator.core import stored
from sidecar_operator.core.workloads import rolled_out

POD_LISTS = ("initContainers", "containers")
Template = dict[str, Any]


def template(deployment: Mapping[str, Any]) -> Template:
    return copy.deepcopy(dict(deployment["spec"]["template"]["spec"]))


def _normal(pod: Template) -> Template:
    """Empty lists and absent keys are the same pod."""
    pod = copy.deepcopy(pod)
    for key in (*POD_LISTS, "volumes"):
        if not pod.get(key):
            pod.pop(key, None)
    for pod_list in POD_LISTS:
        for container in pod.get(pod_list, []):
            if not container.get("volumeMounts"):
                container.pop("volumeMounts", None)
    return pod


def without_policy(pod: Template, spec: Mapping[str, Any]) -> Template:
    """The pod template with everything the policy adds taken out."""
    pod = copy.deepcopy(pod)
    added = {
        "containers": {c["name"] for c in spec.get("containers", [])},
        "initContainers": {c["name"] for c in spec.get("initContainers", [])},
    }
    paths = {m["mountPath"] for m in spec.get("volumeMounts", [])}
    volumes = {v["name"] for v in spec.get("volumes", [])}
    for pod_list in POD_LISTS:
        pod[pod_list] = [c for c in pod.get(pod_list, []) if c["name"] not in added[pod_list]]
        for container in pod[pod_list]:
            container["volumeMounts"] = [
                m for m in container.get("volumeMounts", []) if m["mountPath"] not in paths
            ]
    pod["volumes"] = [v for v in pod.get("volumes", []) if v["name"] not in volumes]
    return _normal(pod)


def carrying(deployment: Mapping[str, Any], policy: str) -> str | None:
    annotations = deployment["metadata"].get("annotations") or {}
    return annotations.get(f"policy.sidecars.dev/{policy}")


def injected(
    deployment: Mapping[str, Any],
    snapshot: Template,
    policy: str,
    spec: Mapping[str, Any],
    revision: str,
) -> list[str]:
    """A Deployment the policy matches, after its rollout settled."""
    name = deployment["metadata"]["name"]
    pod = template(deployment)
    found = []
    if carrying(deployment, policy) != revision:
        found.append(f"{name}: carries {carrying(deployment, policy)!r}, the policy is {revision}")
    for pod_list, key in (("containers", "containers"), ("initContainers", "initContainers")):
        live = Counter(c["name"] for c in pod.get(pod_list, []))
        for wanted in spec.get(key, []):
            copies = live[wanted["name"]]
            if copies != 1:
                found.append(f"{name}: {copies} copies of {pod_list[:-1]} {wanted['name']}")
                continue
            held = next(c for c in pod[pod_list] if c["name"] == wanted["name"])
            if not stored.holds(held, for_workload(wanted, deployment), "Container"):
                found.append(f"{name}: {pod_list[:-1]} {wanted['name']} is not the policy's")
    live_volumes = Counter(v["name"] for v in pod.get("volumes", []))
    for volume in spec.get("volumes", []):
        if live_volumes[volume["name"]] != 1:
            found.append(
                f"{name}: {live_volumes[volume['name']]} copies of volume {volume['name']}"
            )
    app = {pod_list: {c["name"] for c in snapshot.get(pod_list, [])} for pod_list in POD_LISTS}
    for pod_list in POD_LISTS:
        for container in pod.get(pod_list, []):
            if container["name"] not in app[pod_list]:
                continue
            paths = Counter(m["mountPath"] for m in container.get("volumeMounts", []))
            for mount in spec.get("volumeMounts", []):
                if paths[mount["mountPath"]] != 1:
                    found.append(
                        f"{name}: {paths[mount['mountPath']]} mounts at {mount['mountPath']} "
                        f"in {container['name']}"
                    )
    if without_policy(pod, spec) != _normal(snapshot):
        found.append(f"{name}: the app's own part differs from before the policy")
    return found


def for_workload(container: Mapping[str, Any], deployment: Mapping[str, Any]) -> dict[str, Any]:
    """The policy's container with this Deployment's values in (per-workload values: only in
    env values, args and command)."""

    def rendered(text: str) -> str:
        return placeholders.render(placeholders.parse(text), deployment)

    found = copy.deepcopy(dict(container))
    for field in ("args", "command"):
        if field in found:
            found[field] = [rendered(text) for text in found[field]]
    for variable in found.get("env") or []:
        if isinstance(variable.get("value"), str):
            variable["value"] = rendered(variable["value"])
    return found


PodMetadata = dict[str, dict[str, str]]
POD_MAPS = ("labels", "annotations")


def pod_metadata(deployment: Mapping[str, Any]) -> PodMetadata:
    """The pod template's labels and annotations."""
    metadata = deployment["spec"]["template"].get("metadata") or {}
    return {pod_map: dict(metadata.get(pod_map) or {}) for pod_map in POD_MAPS}


def metadata_injected(
    deployment: Mapping[str, Any], snapshot: PodMetadata, spec: Mapping[str, Any]
) -> list[str]:
    """The app's own labels and annotations as they were, and the policy's (`podMetadata`,
    this Deployment's values in) beside them: nothing else."""
    name = deployment["metadata"]["name"]
    wanted = spec.get("podMetadata") or {}
    live = pod_metadata(deployment)
    found = []
    for pod_map in POD_MAPS:
        rendered = {
            key: placeholders.render(placeholders.parse(text), deployment)
            for key, text in (wanted.get(pod_map) or {}).items()
        }
        expected = {**snapshot[pod_map], **rendered}
        if live[pod_map] != expected:
            differs = sorted(
                key
                for key in live[pod_map].keys() | expected.keys()
                if live[pod_map].get(key) != expected.get(key)
            )
            found.append(f"{name}: pod {pod_map} {differs} are not the app's and the policy's")
    return found


def metadata_removed(deployment: Mapping[str, Any], snapshot: PodMetadata) -> list[str]:
    """After the policy let go: the pod's labels and annotations as before the policy."""
    if pod_metadata(deployment) != snapshot:
        name = deployment["metadata"]["name"]
        return [f"{name}: the pod's labels or annotations differ from before the policy"]
    return []


def removed(
    deployment: Mapping[str, Any], snapshot: Template, policy: str, annotation: str | None = None
) -> list[str]:
    """A Deployment the policy let go of: exactly the template it had before, and the policy's
    annotation as it had it (none, unless its owner copied one in)."""
    name = deployment["metadata"]["name"]
    found = []
    if carrying(deployment, policy) != annotation:
        found.append(f"{name}: carries the policy's annotation {carrying(deployment, policy)!r}")
    if _normal(template(deployment)) != _normal(snapshot):
        found.append(f"{name}: the template differs from before the policy")
    return found


def status(
    policy: Mapping[str, Any], deployments: Iterable[Mapping[str, Any]], matched: set[str]
) -> list[str]:
    """The policy's status agrees with the Deployments it matches."""
    name = policy["metadata"]["name"]
    current = policy.get("status") or {}
    revision = current.get("revision")
    mine = [d for d in deployments if d["metadata"]["name"] in matched]
    updated = [d for d in mine if carrying(d, name) == revision]
    expected = {
        "observedGeneration": policy["metadata"].get("generation"),
        "matchedWorkloads": len(matched),
        "updatedWorkloads": len(updated),
        "readyWorkloads": sum(1 for d in updated if rolled_out(d)),
        "conflicts": 0,
    }
    found = [
        f"status.{key} is {current.get(key)!r}, the cluster says {value!r}"
        for key, value in expected.items()
        if current.get(key) != value
    ]
    conditions = {c["type"]: c["status"] for c in current.get("conditions") or []}
    settled = expected["readyWorkloads"] == len(matched)
    if conditions.get("Ready") != ("True" if settled else "False"):
        found.append(f"condition Ready is {conditions.get('Ready')!r} with {expected}")
    if conditions.get("Degraded") != "False":
        found.append(f"condition Degraded is {conditions.get('Degraded')!r}, nothing conflicts")
    return found


def _keyed(item: str, field: str) -> str | None:
    """The key of a managedFields list element, `k:{"name":"app"}` -> "app"."""
    return json.loads(item[2:]).get(field) if item.startswith("k:") else None


def app_fields_owned(
    deployment: Mapping[str, Any], manager: str, spec: Mapping[str, Any]
) -> list[str]:
    """What the policy's field manager owns of the app's part of the pod: nothing but the mounts
    it adds to the app's containers (and those containers' names, the key it must send them by).
    Anything more means it forced, or took over, a field of the app."""
    name = deployment["metadata"]["name"]
    added = {
        "f:containers": {c["name"] for c in spec.get("containers", [])},
        "f:initContainers": {c["name"] for c in spec.get("initContainers", [])},
    }
    paths = {m["mountPath"] for m in spec.get("volumeMounts", [])}
    volumes = {v["name"] for v in spec.get("volumes", [])}
    found = []
    for entry in deployment["metadata"].get("managedFields") or []:
        if entry.get("manager") != manager:
            continue
        pod = entry.get("fieldsV1", {}).get("f:spec", {}).get("f:template", {}).get("f:spec", {})
        for key, owned in pod.items():
            if key in added:
                for item, fields in owned.items():
                    container = _keyed(item, "name")
                    if container is None or container in added[key]:
                        continue
                    mounts = {
                        _keyed(mount, "mountPath") for mount in fields.get("f:volumeMounts", {})
                    } - {None}
                    extra = sorted(set(fields) - {".", "f:name", "f:volumeMounts"})
                    extra += sorted(str(path) for path in mounts - paths)
                    if extra:
                        found.append(f"{name}: {manager} owns {extra} of app container {container}")
            elif key == "f:volumes":
                keys = {_keyed(item, "name") for item in owned}
                foreign = {key for key in keys if key is not None} - volumes
                if foreign:
                    found.append(f"{name}: {manager} owns app volumes {sorted(foreign)}")
            else:
                found.append(f"{name}: {manager} owns the pod's {key}")
        metadata = entry.get("fieldsV1", {}).get("f:spec", {}).get("f:template", {})
        metadata = metadata.get("f:metadata", {})
        wanted = spec.get("podMetadata") or {}
        for pod_map in POD_MAPS:
            keys = {key[2:] for key in metadata.get(f"f:{pod_map}", {}) if key.startswith("f:")}
            extra = sorted(keys - set(wanted.get(pod_map) or {}))
            if extra:
                found.append(f"{name}: {manager} owns the app's pod {pod_map} {extra}")
    return found
