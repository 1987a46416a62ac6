"""What admission does to a workload being created or updated: exactly what the controller would
apply to it at that moment, so its pods carry the sidecars from the start and there is no second
rollout. Pure.

The planner decides, as it does for the controller (priority, conflicts, opt-out, Pod Security):
one code path. The API server records no field manager for what a webhook adds, and admission
does not model the entry an apply would leave: a policy whose content it changed is left owning
nothing there, with its revision annotation, and the controller's first look adopts the items
(`Change.ADOPT`: one apply of the same content, which changes nothing but ownership).

An owner's update is judged as the controller would judge a write: a paused policy touches
nothing further and a new revision waits for the budget (`may_roll`). Until then the workload
keeps what it carries, even through a `kubectl replace` that left it out: admission puts back
the old object's items, and the policy's managedFields entry exactly as the API server had it
(a webhook may set managedFields; checked on the real control plane).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind, dig, nest
from sidecar_operator.api.models import Policy
from sidecar_operator.api.names import FIELD_MANAGER_PREFIX
from sidecar_operator.core import bodies, planner, ssa, workloads
from sidecar_operator.core.ownership import (
    POD_LISTS,
    POD_MAPS,
    field_manager,
    ownership,
    revision_annotation,
)
from sidecar_operator.core.types import Action, Change, Kind
from sidecar_operator.core.waves import Rollout

Workload = Mapping[str, Any]


def admitted(
    workload: Workload,
    namespace_labels: Mapping[str, str],
    policies: Iterable[Policy],
    *,
    operator_namespace: str | None,
    old: Workload | None = None,
    may_roll: Callable[[Action], bool] = lambda _: True,
    rollouts: Mapping[str, Rollout] | None = None,
) -> dict[str, Any] | None:
    """The workload with what the policies change at admission, or None when nothing changes.

    `old` is the stored workload when an owner updates it (None at creation); `may_roll` says
    whether the policy's budget lets the controller write this action to it now; `rollouts`
    where each policy's rollout in steps stands (a workload created mid-canary gets the
    revision of its group)."""
    if old is not None and not _owners_rollout(old, workload):
        return None
    by_name = {policy.name: policy for policy in policies}
    result: dict[str, Any] | None = None
    for action in planner.plan(
        workload,
        namespace_labels,
        by_name.values(),
        operator_namespace=operator_namespace,
        rollouts=rollouts,
    ):
        policy = by_name.get(action.policy)
        body = _written(action, policy, old, may_roll) if policy is not None else None
        if body is not None:
            result = _without_entry(
                ssa.apply(result or workload, field_manager(action.policy), body), action.policy
            )
        elif (
            old is not None
            and action.kind is Kind.APPLY
            and ownership(result or workload, action.policy).empty
        ):
            # Held back, and the update left out what it carried (a replace, say).
            result = _kept(result or workload, old, action.policy) or result
    return result


def _owners_rollout(old: Workload, new: Workload) -> bool:
    """Whether an update is the owners' and rolls the pods anyway: the pod template changed, and
    not by a policy's own apply (its manager's entry is new or changed), which is the
    controller's write, paced by the controller. Any other update, such as a scale or the
    controller's revision annotation, leaves the pods alone and is left alone."""
    if workloads.pod_template(old) == workloads.pod_template(new):
        return False
    before = _policy_entries(old)
    return all(entry in before for entry in _policy_entries(new))


def _policy_entries(workload: Workload) -> list[Mapping[str, Any]]:
    return [
        entry
        for entry in workload["metadata"].get("managedFields") or []
        if entry.get("manager", "").startswith(FIELD_MANAGER_PREFIX)
    ]


def _written(
    action: Action, policy: Policy, old: Workload | None, may_roll: Callable[[Action], bool]
) -> dict[str, Any] | None:
    """The body the controller would send now, or None: it would wait, or do nothing."""
    if action.body is None:
        return None
    if action.kind is Kind.REMOVE:
        return action.body if old is not None else None
    if action.kind is not Kind.APPLY:
        return None  # a conflict's release is the controller's, with its Event
    if action.change is Change.ADOPT:
        return action.body
    if old is None:
        # A new workload gets the current revision even from a halted or budget-limited
        # rollout: nothing runs yet to disrupt. Paused touches no further workload.
        paused = policy.spec.update_strategy.paused
        return action.body if action.change is Change.INJECT and not paused else None
    if action.change is Change.REPAIR:
        return action.body  # unpaced, paused or not, as the controller repairs
    carried = _carried_revision(old, action.policy)
    if carried == action.revision:
        return action.body  # what it carried, which a replace left out
    if policy.spec.update_strategy.paused:
        return None
    if carried is not None:  # a new revision for what it carried, however the update sent it
        action = replace(action, change=Change.UPDATE)
    return action.body if may_roll(action) else None


def _carried_revision(old: Workload, policy: str) -> str | None:
    if ownership(old, policy).empty:
        return None
    return (old["metadata"].get("annotations") or {}).get(revision_annotation(policy))


def _without_entry(workload: dict[str, Any], policy: str) -> dict[str, Any]:
    manager = field_manager(policy)
    workload["metadata"]["managedFields"] = [
        entry for entry in workload["metadata"]["managedFields"] if entry["manager"] != manager
    ]
    return workload


def _kept(workload: Workload, old: Workload, policy: str) -> dict[str, Any] | None:
    """The workload with what the policy had on `old` put back, with the policy's managedFields
    entries as the API server had them; None if it had nothing there."""
    owned = ownership(old, policy)
    if owned.empty:
        return None
    kind, old_pod, pod = WorkloadKind.of(old), workloads.pod_spec(old), workloads.pod_spec(workload)
    spec: dict[str, Any] = {}
    for pod_list in POD_LISTS:
        items = []
        app = {c["name"] for c in pod.get(pod_list) or []}
        for container in old_pod.get(pod_list) or []:  # in the old order, which apply keeps
            mounts = [
                mount
                for mount in container.get("volumeMounts") or []
                if (pod_list, container["name"], mount["mountPath"]) in owned.mounts
            ]
            if container["name"] in owned.added(pod_list):
                items.append(container)
            elif mounts and container["name"] in app:
                items.append({"name": container["name"], "volumeMounts": mounts})
        if items:
            spec[pod_list] = items
    volumes = [v for v in old_pod.get("volumes") or [] if v["name"] in owned.volumes]
    if volumes:
        spec["volumes"] = volumes
    body = bodies.removal_body(workload)
    revision = _carried_revision(old, policy)
    if owned.annotation and revision is not None:
        body["metadata"]["annotations"] = {revision_annotation(policy): revision}
    template: dict[str, Any] = {"spec": spec}
    old_metadata = workloads.pod_template(old).get("metadata") or {}
    kept_keys = {
        pod_map: {key: held[key] for key in owned.keys(pod_map) if key in held}
        for pod_map in POD_MAPS
        if owned.keys(pod_map) and (held := old_metadata.get(pod_map) or {})
    }
    if kept_keys:
        template["metadata"] = kept_keys
    body["spec"] = nest(kind.template_path[1:], template)
    kept = _without_entry(ssa.apply(workload, field_manager(policy), body), policy)
    kept["metadata"]["managedFields"] += [
        copy.deepcopy(entry)
        for entry in old["metadata"]["managedFields"]
        if entry["manager"] == field_manager(policy)
    ]
    return kept


def json_patch(workload: Workload, changed: Workload, *, updated: bool) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that takes the workload under review to what `admitted` made
    of it: a handful of operations on the fields admission changes (the pod template's spec,
    its labels and annotations where they changed, the revision annotations and, on an update,
    the policies' managedFields entries), not a
    diff of the whole object."""
    metadata = changed["metadata"]
    operations = [_add(("metadata", "annotations"), metadata.get("annotations") or {})]
    if updated:
        operations.append(_add(("metadata", "managedFields"), metadata["managedFields"]))
    template = WorkloadKind.of(changed).template_path
    operations += _parents(workload, (*template, "spec"))
    operations.append(_add((*template, "spec"), dig(changed, (*template, "spec"))))
    before, after = dig(workload, (*template, "metadata")), dig(changed, (*template, "metadata"))
    for pod_map in POD_MAPS:
        if before.get(pod_map) != after.get(pod_map):
            operations += _parents(workload, (*template, "metadata", pod_map))
            operations.append(_add((*template, "metadata", pod_map), after.get(pod_map) or {}))
    return operations


def _parents(workload: Workload, path: tuple[str, ...]) -> list[dict[str, Any]]:
    """Operations that make the objects above `path` where the workload lacks them."""
    operations = []
    node: Any = workload
    for depth, key in enumerate(path[:-1], start=1):
        node = node.get(key) if isinstance(node, Mapping) else None
        if node is None:
            operations.append(_add(path[:depth], {}))
    return operations


def _add(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """`add` sets a member whether or not it is there (RFC 6902, 4.1); the keys admission sets
    need no escaping."""
    return {"op": "add", "path": "/" + "/".join(path), "value": value}
