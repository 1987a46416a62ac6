"""The pure core: for one Deployment and every policy, what each policy must do to it.

`plan()` takes the Deployment as the API server returned it (with managedFields), its
Namespace's labels and the policies, and returns one `Action` per policy that matches it or still
has fields on it: apply this body, remove everything, nothing to do, or skip because of a
conflict. No API calls: handlers read state, call `plan()`, and send the bodies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sidecar_operator.api import podsecurity
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy, SidecarPolicySpec
from sidecar_operator.core import bodies, workloads
from sidecar_operator.core.ownership import (
    POD_LISTS,
    Ownership,
    field_manager,
    ownership,
    policies_with_fields,
    revision_annotation,
)
from sidecar_operator.core.selection import workload_matches
from sidecar_operator.core.ssa import fields_v1
from sidecar_operator.core.types import Action, Change, Kind


@dataclass(frozen=True)
class _Pod:
    """The workload's pod template split into what the app has and what policies added."""

    kind: WorkloadKind
    spec: Mapping[str, Any]
    added_by_policies: Mapping[str, frozenset[str]]  # pod list -> container names

    def items(self, pod_list: str) -> list[Mapping[str, Any]]:
        return list(self.spec.get(pod_list) or [])

    def app_containers(self, pod_list: str) -> list[Mapping[str, Any]]:
        added = self.added_by_policies[pod_list]
        return [item for item in self.items(pod_list) if item["name"] not in added]

    def find(self, pod_list: str, name: str) -> Mapping[str, Any] | None:
        return next((item for item in self.items(pod_list) if item["name"] == name), None)


# -- comparing what is there with what a policy wants ---------------------------------------


def _quantity(value: str) -> Decimal | None:
    suffixes: dict[str, int | Decimal] = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "n": Decimal("1e-9"),
        "u": Decimal("1e-6"),
        "m": Decimal("1e-3"),
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
        "P": 10**15,
        "E": 10**18,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], Decimal(suffixes[suffix])
            break
    else:
        number, factor = value, Decimal(1)
    try:
        return Decimal(number) * factor
    except InvalidOperation:
        return None


def contains(live: Any, wanted: Any) -> bool:
    """True when `live` holds everything in `wanted`. The API server adds defaults and rewrites
    quantities in canonical form (0.5 -> 500m), neither of which is drift."""
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(live) == len(wanted)
            and all(contains(a, b) for a, b in zip(live, wanted, strict=True))
        )
    if live == wanted:
        return True
    if isinstance(wanted, str | int | float) and isinstance(live, str | int | float):
        left, right = _quantity(str(live)), _quantity(str(wanted))
        return left is not None and left == right
    return False


@dataclass
class _Claims:
    """Names and mount paths already taken on this Deployment, and by whom."""

    names: dict[str, str] = field(default_factory=dict)  # container or init container name
    volumes: dict[str, str] = field(default_factory=dict)
    mounts: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def take(self, policy: Policy, pod: _Pod) -> None:
        owner = f"policy {policy.name}"
        for container in (*policy.spec.containers, *policy.spec.init_containers):
            self.names[container.name] = owner
        for volume in policy.spec.volumes:
            self.volumes[volume.name] = owner
        for key in _mount_keys(policy.spec, pod):
            self.mounts[key] = owner


def _mount_keys(spec: SidecarPolicySpec, pod: _Pod) -> set[tuple[str, str, str]]:
    return {
        (pod_list, container["name"], mount.mount_path)
        for pod_list in POD_LISTS
        for container in pod.app_containers(pod_list)
        for mount in spec.volume_mounts
    }


def _app_claims(pod: _Pod, owners: Mapping[str, Ownership]) -> _Claims:
    claims = _Claims()
    policy_mounts = {key for owned in owners.values() for key in owned.mounts}
    policy_volumes = {name for owned in owners.values() for name in owned.volumes}
    for pod_list in POD_LISTS:
        for container in pod.app_containers(pod_list):
            claims.names[container["name"]] = f"the {pod.kind}"
            for mount in container.get("volumeMounts") or []:
                key = (pod_list, container["name"], mount["mountPath"])
                if key not in policy_mounts:
                    claims.mounts[key] = f"the {pod.kind}"
    for volume in pod.items("volumes"):
        if volume["name"] not in policy_volumes:
            claims.volumes[volume["name"]] = f"the {pod.kind}"
    return claims


def _conflicts(policy: Policy, pod: _Pod, claims: _Claims) -> list[str]:
    spec = policy.spec
    found = []
    for container in (*spec.containers, *spec.init_containers):
        if container.name in claims.names:
            found.append(
                f"container {container.name} is already defined by {claims.names[container.name]}"
            )
    for volume in spec.volumes:
        if volume.name in claims.volumes:
            found.append(
                f"volume {volume.name} is already defined by {claims.volumes[volume.name]}"
            )
    for pod_list, target, path in sorted(_mount_keys(spec, pod)):
        holder = claims.mounts.get((pod_list, target, path))
        if holder:
            found.append(f"container {target} already has a mount at {path} (from {holder})")
    known_volumes = {v.name for v in spec.volumes} | {v["name"] for v in pod.items("volumes")}
    for container in (*spec.containers, *spec.init_containers):
        for mount in container.model_extra.get("volumeMounts", []) if container.model_extra else []:
            if mount.get("name") not in known_volumes:
                found.append(
                    f"sidecar {container.name} mounts volume {mount.get('name')}, "
                    f"which neither the policy nor the {pod.kind} defines"
                )
    if pod.kind is WorkloadKind.CRON_JOB and spec.containers:
        names = ", ".join(container.name for container in spec.containers)
        found.append(
            f"a Job never finishes while regular containers ({names}) run beside its own: "
            "add them as initContainers with restartPolicy: Always (native sidecars), which "
            "Kubernetes stops when the Job's containers exit"
        )
    return found


def _pod_security(
    policy: Policy, pod: _Pod, namespace: str, namespace_labels: Mapping[str, str]
) -> list[str]:
    """The sidecars must pass baseline (unless allowPrivileged) and whatever level the namespace
    enforces: Pod Security admission judges Pods, not Deployments, so a refused sidecar would
    otherwise leave a rollout whose new Pods are never created."""
    spec = policy.spec
    found = []
    if spec.privilege_violations:
        found.append(
            "the sidecars break the baseline Pod Security Standard ("
            + "; ".join(spec.privilege_violations)
            + "); set spec.allowPrivileged: true to allow it"
        )
    level = podsecurity.enforced_level(namespace_labels)
    refused = podsecurity.violations(
        level,
        containers=[c.to_api() for c in (*spec.containers, *spec.init_containers)],
        volumes=[v.to_api() for v in spec.volumes],
        pod_security_context=pod.spec.get("securityContext"),
        host_users=pod.spec.get("hostUsers"),
        os_name=(pod.spec.get("os") or {}).get("name"),
    )
    if refused:
        found.append(
            f"namespace {namespace} enforces the {level} Pod Security level, which would refuse "
            f"the Pods: {'; '.join(refused)}"
        )
    return found


def _drift(policy: Policy, pod: _Pod, owned: Ownership) -> tuple[bool, bool]:
    """(in sync, force): whether everything is as the policy wants, and whether re-applying
    must take back fields someone else changed inside the policy's own items."""
    spec = policy.spec
    in_sync, force = True, False

    def check(live: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> None:
        nonlocal in_sync, force
        if live is None:
            in_sync = False
        elif not contains(live, wanted):
            in_sync, force = False, True

    for pod_list, wanted in (
        ("containers", spec.containers),
        ("initContainers", spec.init_containers),
    ):
        if owned.added(pod_list) != {c.name for c in wanted}:
            in_sync = False
        for container in wanted:
            check(pod.find(pod_list, container.name), container.to_api())
    if owned.volumes != {v.name for v in spec.volumes}:
        in_sync = False
    for volume in spec.volumes:
        check(
            next((v for v in pod.items("volumes") if v["name"] == volume.name), None),
            volume.to_api(),
        )
    if owned.mounts != _mount_keys(spec, pod):
        in_sync = False
    for pod_list in POD_LISTS:
        for app_container in pod.app_containers(pod_list):
            live_mounts = {m["mountPath"]: m for m in app_container.get("volumeMounts") or []}
            for mount in spec.volume_mounts:
                check(live_mounts.get(mount.mount_path), mount.to_api())
    return in_sync, force


def plan(
    deployment: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    policies: Iterable[Policy],
    *,
    operator_namespace: str | None = None,
) -> list[Action]:
    """One Action per policy that matches the Deployment or has fields on it, winners first."""
    by_name = {policy.name: policy for policy in policies}
    involved = set(policies_with_fields(deployment))
    matched = sorted(
        (
            policy
            for policy in by_name.values()
            if not policy.deleting
            and workload_matches(
                policy.spec, deployment, namespace_labels, operator_namespace=operator_namespace
            )
        ),
        key=lambda policy: policy.rank,
    )
    owners = {name: ownership(deployment, name) for name in involved | {p.name for p in matched}}
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    admitted = {
        policy.name
        for policy in matched
        if owners[policy.name].empty
        and annotations.get(revision_annotation(policy.name)) == policy.spec.revision
        and _carries_items(policy, workloads.pod_spec(deployment))
    }
    for policy in matched:
        if policy.name in admitted:
            owners[policy.name] = _as_applied(policy, deployment, owners)
    pod = _Pod(
        kind=WorkloadKind.of(deployment),
        spec=workloads.pod_spec(deployment),
        added_by_policies={
            pod_list: frozenset().union(*(o.added(pod_list) for o in owners.values()))
            for pod_list in POD_LISTS
        },
    )
    claims = _app_claims(pod, owners)
    actions: list[Action] = []
    for policy in matched:
        owned = owners[policy.name]
        current = policy.spec.revision
        conflicts = _conflicts(policy, pod, claims) + _pod_security(
            policy, pod, deployment["metadata"]["namespace"], namespace_labels
        )
        if conflicts:
            release = None if owned.empty else bodies.removal_body(deployment)
            actions.append(
                Action(
                    policy.name,
                    Kind.CONFLICT,
                    release,
                    change=None if owned.empty else Change.REMOVE,
                    conflict="; ".join(conflicts),
                    revision=current,
                )
            )
            continue
        claims.take(policy, pod)
        in_sync, force = _drift(policy, pod, owned)
        if policy.name in admitted:
            # Admission added it as this revision; applying it changes nothing but ownership.
            change = Change.ADOPT if in_sync else Change.REPAIR
        elif in_sync and annotations.get(revision_annotation(policy.name)) == current:
            actions.append(Action(policy.name, Kind.IN_SYNC, revision=current))
            continue
        elif owned.empty:
            change = Change.INJECT
        elif annotations.get(revision_annotation(policy.name)) != current:
            change = Change.UPDATE
        else:
            change = Change.REPAIR
        actions.append(
            Action(
                policy.name,
                Kind.APPLY,
                bodies.apply_body(
                    deployment,
                    policy,
                    app_init=tuple(c["name"] for c in pod.app_containers("initContainers")),
                    app=tuple(c["name"] for c in pod.app_containers("containers")),
                ),
                force=force,
                change=change,
                revision=current,
            )
        )
    # Only what a policy's field manager owns is released: a revision annotation someone else
    # wrote (a copied manifest, say) is not the policy's, and an empty apply would not remove it.
    for name in sorted(involved - {policy.name for policy in matched}):
        actions.append(removal(name, deployment))
    return actions


def _carries_items(policy: Policy, pod: Mapping[str, Any]) -> bool:
    """Every container, init container and volume the policy adds is there, by name."""
    spec = policy.spec
    return all(
        {item.name for item in wanted} <= {item["name"] for item in pod.get(pod_list) or []}
        for pod_list, wanted in (
            ("containers", spec.containers),
            ("initContainers", spec.init_containers),
            ("volumes", spec.volumes),
        )
    )


def _as_applied(
    policy: Policy, workload: Mapping[str, Any], owners: Mapping[str, Ownership]
) -> Ownership:
    """What the policy would own had it applied its body: admission added the items (with the
    revision annotation), and the API server records no manager for what admission adds."""
    spec, pod = policy.spec, workloads.pod_spec(workload)
    own = {
        "containers": {c.name for c in spec.containers},
        "initContainers": {c.name for c in spec.init_containers},
    }

    def app(pod_list: str) -> tuple[str, ...]:
        taken = own[pod_list].union(*(o.added(pod_list) for o in owners.values()))
        return tuple(c["name"] for c in pod.get(pod_list) or [] if c["name"] not in taken)

    body = bodies.apply_body(
        workload, policy, app_init=app("initContainers"), app=app("containers")
    )
    entry = {
        "manager": field_manager(policy.name),
        "operation": "Apply",
        "fieldsV1": fields_v1(body),
    }
    applied = {"kind": WorkloadKind.of(workload).value, "metadata": {"managedFields": [entry]}}
    return ownership(applied, policy.name)


def removal(policy: str, deployment: Mapping[str, Any]) -> Action:
    """Release everything `policy` owns on the Deployment."""
    return Action(policy, Kind.REMOVE, bodies.removal_body(deployment), change=Change.REMOVE)
