"""The pure core: for one Deployment and every policy, what each policy must do to it.

`plan()` takes the Deployment as the API server returned it (with managedFields), its
Namespace's labels and the policies, and returns one `Action` per policy that matches it or still
has fields on it: apply this body, remove everything, nothing to do, or skip because of a
conflict. No API calls: handlers read state, call `plan()`, and send the bodies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_operator.api import podsecurity
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Content, Policy
from sidecar_operator.core import bodies, stored, values, workloads
from sidecar_operator.core.ownership import (
    POD_LISTS,
    POD_MAPS,
    Foreign,
    Ownership,
    field_manager,
    foreign,
    ownership,
    policies_with_fields,
    revision_annotation,
)
from sidecar_operator.core.selection import workload_matches
from sidecar_operator.core.ssa import fields_v1
from sidecar_operator.core.types import Action, Change, Kind
from sidecar_operator.core.waves import HOLD, Rollout, Target


@dataclass(frozen=True)
class _Pod:
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


@dataclass
class _Claims:
    """Names, mount paths and host ports already taken on this workload, and by whom."""

    names: dict[str, str] = field(default_factory=dict)  # container or init container name
    volumes: dict[str, str] = field(default_factory=dict)
    mounts: dict[tuple[str, str, str], str] = field(default_factory=dict)
    host_ports: dict[str, str] = field(default_factory=dict)  # protocol/hostIP/port -> holder
    # (labels or annotations, key) of the pod template -> (holder, the value it sets)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def take(self, policy: str, content: Content, pod: _Pod) -> None:
        owner = f"policy {policy}"
        for container in (*content.containers, *content.init_containers):
            self.names[container.name] = owner
        for volume in content.volumes:
            self.volumes[volume.name] = owner
        for key in _mount_keys(content, pod):
            self.mounts[key] = owner
        for container in content.containers:
            for port in _host_ports(container.to_api(), pod):
                self.host_ports[port] = f"container {container.name} of policy {policy}"
        for pod_key, value in _pod_keys(content):
            self.keys[pod_key] = (owner, value)


def _pod_keys(content: Content) -> Iterator[tuple[tuple[str, str], str]]:
    """The pod template's labels and annotations a content sets: ((map, key), value)."""
    for pod_map, entries in (
        ("labels", content.pod_labels),
        ("annotations", content.pod_annotations),
    ):
        for key, value in entries.items():
            yield (pod_map, key), value


def _mount_keys(content: Content, pod: _Pod) -> set[tuple[str, str, str]]:
    return {
        (pod_list, container["name"], mount.mount_path)
        for pod_list in POD_LISTS
        for container in pod.app_containers(pod_list)
        for mount in content.volume_mounts
    }


def _host_ports(container: Mapping[str, Any], pod: _Pod) -> Iterator[str]:
    """The host ports a regular container takes, as the API server checks them for a Pod: in
    a pod on the host's network every container port is a host port too (the Pod's defaults
    set it; a pod template keeps it unset, so the workload itself takes a clash)."""
    for port in container.get("ports") or []:
        number = port.get("hostPort") or (port.get("containerPort") if pod.host_network else 0)
        if number:
            yield f"{port.get('protocol') or 'TCP'}/{port.get('hostIP') or ''}/{number}"


def _app_claims(pod: _Pod, owners: Mapping[str, Ownership], others: Foreign) -> _Claims:
    claims = _Claims()
    for pod_map in POD_MAPS:
        by_policies = frozenset().union(*(o.keys(pod_map) for o in owners.values()))
        for name, value in pod.metadata.get(pod_map, {}).items():
            # The app's when no policy set it, or when it holds the key too (then the key
            # stays with the app's value once the policy lets go).
            if name not in by_policies or (pod_map, name) in others.keys:
                holder = (
                    _managers(others, (pod_map, name)) if (pod_map, name) in others.keys else ""
                )
                claims.keys[(pod_map, name)] = (
                    f"the {pod.kind}" + (f" ({holder})" if holder else ""),
                    value,
                )
    policy_mounts = {key for owned in owners.values() for key in owned.mounts}
    policy_volumes = {name for owned in owners.values() for name in owned.volumes}
    for pod_list in POD_LISTS:
        for container in pod.app_containers(pod_list):
            claims.names[container["name"]] = f"the {pod.kind}"
            for mount in container.get("volumeMounts") or []:
                key = (pod_list, container["name"], mount["mountPath"])
                if key not in policy_mounts:
                    claims.mounts[key] = f"the {pod.kind}"
    for container in pod.app_containers("containers"):
        for port in _host_ports(container, pod):
            claims.host_ports[port] = f"the {pod.kind}'s container {container['name']}"
    for volume in pod.items("volumes"):
        if volume["name"] not in policy_volumes:
            claims.volumes[volume["name"]] = f"the {pod.kind}"
    return claims


def _conflicts(spec: Content, pod: _Pod, claims: _Claims) -> list[str]:
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
    for container in spec.containers:
        for port in _host_ports(container.to_api(), pod):
            holder = claims.host_ports.get(port)
            if holder:
                found.append(
                    f"container {container.name} would take host port {port} (protocol/IP/"
                    f"port), which {holder} has"
                    + (
                        " (on the host's network, every container port is a host port)"
                        if pod.host_network
                        else ""
                    )
                    + ": the API server would refuse every new Pod"
                )
    known_volumes = {v.name for v in spec.volumes} | {v["name"] for v in pod.items("volumes")}
    for container in (*spec.containers, *spec.init_containers):
        for mount in container.model_extra.get("volumeMounts", []) if container.model_extra else []:
            if mount.get("name") not in known_volumes:
                found.append(
                    f"sidecar {container.name} mounts volume {mount.get('name')}, "
                    f"which neither the policy nor the {pod.kind} defines"
                )
    for (pod_map, key), value in _pod_keys(spec):
        word = pod_map[:-1]
        if pod_map == "labels" and key in pod.selector_keys:
            found.append(
                f"pod label {key} is in the {pod.kind}'s selector: a policy never sets one "
                "(the workload would lose or take others' pods)"
            )
        elif (held := claims.keys.get((pod_map, key))) is not None and held[1] != value:
            found.append(
                f"pod {word} {key} is already set to {_shown(held[1])} by {held[0]} (the "
                f"policy sets {_shown(value)})"
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
    policy: Policy,
    spec: Content,
    pod: _Pod,
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> list[str]:
    """The sidecars must pass baseline (unless allowPrivileged) and whatever level the namespace
    enforces: Pod Security admission judges Pods, not Deployments, so a refused sidecar would
    otherwise leave a rollout whose new Pods are never created."""
    found = []
    if spec.baseline_violations and not policy.spec.allow_privileged:
        found.append(
            "the sidecars break the baseline Pod Security Standard ("
            + "; ".join(spec.baseline_violations)
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


def _shown(value: str) -> str:
    """A label's or annotation's value in a message (an annotation may be 256 KB)."""
    return repr(value if len(value) <= 64 else value[:61] + "...")


@dataclass(frozen=True)
class _Drift:
    in_sync: bool  # everything is as the policy wants, as the API server stores it
    edited: bool  # a value inside an item the policy owns differs: someone changed it
    where: str = ""  # the first difference found, in words


def _drift(spec: Content, pod: _Pod, owned: Ownership) -> _Drift:
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
    if owned.mounts != _mount_keys(spec, pod):
        in_sync, where = False, where or "volumeMounts: not all the policy's"
    wanted_keys = dict(_pod_keys(spec))
    for pod_map in POD_MAPS:
        if owned.keys(pod_map) != {key for (in_map, key) in wanted_keys if in_map == pod_map}:
            in_sync, where = False, where or f"podMetadata.{pod_map}: not all the policy's"
    for (pod_map, key), value in wanted_keys.items():
        live_value = pod.metadata.get(pod_map, {}).get(key)
        if live_value != value:
            in_sync, edited = False, edited or live_value is not None
            where = where or (
                f"pod {pod_map[:-1]} {key}: {_shown(live_value or '')} != {_shown(value)}"
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
    return _Drift(in_sync, edited, where)


def plan(
    deployment: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    policies: Iterable[Policy],
    *,
    operator_namespace: str | None = None,
    rollouts: Mapping[str, Rollout] | None = None,
) -> list[Action]:
    """One Action per policy that matches the workload or has fields on it, winners first.
    `rollouts`: where each policy's rollout stands (waves); a policy without one wants its
    spec's content everywhere."""
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
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    targets: dict[str, Target] = {}
    unrendered: dict[str, str] = {}  # why a policy's content cannot be rendered for it
    for policy in matched:
        rollout = (rollouts or {}).get(policy.name)
        carried = annotations.get(revision_annotation(policy.name))
        target = (
            policy.spec
            if rollout is None
            else rollout.target(deployment, namespace_labels, carried)
        )
        if isinstance(target, Content):
            try:
                target = values.rendered(target, deployment)
            except values.Unrendered as error:
                unrendered[policy.name] = str(error)
        targets[policy.name] = target
    owners = {name: ownership(deployment, name) for name in involved | {p.name for p in matched}}
    others = foreign(deployment)
    admitted = {
        policy.name
        for policy in matched
        if isinstance(content := targets[policy.name], Content)
        and policy.name not in unrendered
        and _admitted(policy.name, content, deployment, owners[policy.name], owners, others)
    }
    for policy in matched:
        if policy.name in admitted:
            content = targets[policy.name]
            assert isinstance(content, Content)
            owners[policy.name] = _as_applied(policy.name, content, deployment, owners)
    pod_spec = workloads.pod_spec(deployment)
    template_metadata = workloads.pod_template(deployment).get("metadata") or {}
    pod = _Pod(
        kind=WorkloadKind.of(deployment),
        spec=pod_spec,
        added_by_policies={
            pod_list: frozenset().union(*(o.added(pod_list) for o in owners.values()))
            for pod_list in POD_LISTS
        },
        host_network=bool(pod_spec.get("hostNetwork")),
        metadata={pod_map: template_metadata.get(pod_map) or {} for pod_map in POD_MAPS},
        selector_keys=workloads.selector_keys(deployment),
    )
    claims = _app_claims(pod, owners, others)
    actions: list[Action] = []
    for policy in matched:
        owned = owners[policy.name]
        target = targets[policy.name]
        carried = annotations.get(revision_annotation(policy.name))
        if target is HOLD:
            # The stable content is not known: what the workload carries stays as it is.
            actions.append(Action(policy.name, Kind.HOLD, revision=carried or ""))
            continue
        if target is None:  # the stable revision is nothing: the policy lets go, paced
            actions.append(_release(policy.name, deployment, owned, others))
            continue
        assert isinstance(target, Content)
        current = target.revision
        conflicts = (
            [unrendered[policy.name]]
            if policy.name in unrendered
            else _conflicts(target, pod, claims)
            + _pod_security(
                policy, target, pod, deployment["metadata"]["namespace"], namespace_labels
            )
        )
        if conflicts:
            why = "; ".join(conflicts)
            actions.append(_skipped(policy.name, deployment, owned, others, why, current))
            continue
        claims.take(policy.name, target, pod)
        drift = _drift(target, pod, owned)
        if policy.name in admitted:
            # Admission added it, and nobody else owns it: applying it takes ownership (and,
            # where it differs, gives the current content, never by force).
            if carried != current:
                change = Change.UPDATE
            else:
                change = Change.ADOPT if drift.in_sync else Change.REPAIR
        elif drift.in_sync and carried == current:
            actions.append(Action(policy.name, Kind.IN_SYNC, revision=current))
            continue
        elif owned.empty:
            change = Change.INJECT
        elif carried != current or _values_moved(target, pod, others):
            change = Change.UPDATE
        else:
            change = Change.REPAIR
        actions.append(
            Action(
                policy.name,
                Kind.APPLY,
                bodies.apply_body(
                    deployment,
                    policy.name,
                    target,
                    app_init=tuple(c["name"] for c in pod.app_containers("initContainers")),
                    app=tuple(c["name"] for c in pod.app_containers("containers")),
                ),
                # Only the policy's own items are taken back, from whoever edited them.
                force=drift.edited and policy.name not in admitted and change is not Change.UPDATE,
                change=change,
                revision=current,
                drift=drift.where,
            )
        )
    # Only what a policy's field manager owns is released: a revision annotation someone else
    # wrote (a copied manifest, say) is not the policy's, and an empty apply would not remove it.
    for name in sorted(involved - {policy.name for policy in matched}):
        actions.append(removal(name, deployment))
    return actions


def _values_moved(content: Content, pod: _Pod, others: Foreign) -> bool:
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
        for (pod_map, key), _ in _pod_keys(content)
    )


def _release(policy: str, workload: Mapping[str, Any], owned: Ownership, others: Foreign) -> Action:
    """A matched workload whose target is nothing (a new policy's stable revision): in sync
    when the policy has nothing there, else a paced change that takes everything out."""
    if owned.empty:
        return Action(policy, Kind.IN_SYNC)
    blocked = removal_blocked(owned, others)
    if blocked:
        return Action(policy, Kind.CONFLICT, conflict=blocked)
    return Action(policy, Kind.APPLY, bodies.removal_body(workload), change=Change.UPDATE)


def _skipped(
    policy: str,
    workload: Mapping[str, Any],
    owned: Ownership,
    others: Foreign,
    why: str,
    revision: str,
) -> Action:
    """A conflict: the policy lets go of whatever it had there (if it can)."""
    blocked = "" if owned.empty else removal_blocked(owned, others)
    if owned.empty or blocked:
        return Action(
            policy,
            Kind.CONFLICT,
            conflict="; ".join(filter(None, (why, blocked))),
            revision=revision,
        )
    release = bodies.removal_body(workload)
    return Action(
        policy, Kind.CONFLICT, release, change=Change.REMOVE, conflict=why, revision=revision
    )


def _admitted(
    policy: str,
    spec: Content,
    workload: Mapping[str, Any],
    owned: Ownership,
    owners: Mapping[str, Ownership],
    others: Foreign,
) -> bool:
    """Whether admission gave the workload this policy's items: the policy's manager owns
    nothing there yet, its revision annotation is there and nobody's, and every container,
    init container, volume and mount it adds is there, in no one's hands (the API server
    records no manager for what a webhook adds), and so is every pod label and annotation it
    sets. An app's own container with a sidecar's name,
    or a manifest copied with the annotation, is someone's: the app's, never taken over."""
    annotation = revision_annotation(policy)
    annotations = workload.get("metadata", {}).get("annotations") or {}
    if not owned.empty or annotation not in annotations or annotation in others.annotations:
        return False
    pod = workloads.pod_spec(workload)
    for pod_list, wanted in (
        ("containers", spec.containers),
        ("initContainers", spec.init_containers),
        ("volumes", spec.volumes),
    ):
        present = {item["name"] for item in pod.get(pod_list) or []}
        for item in wanted:
            if item.name not in present or others.owns_item(pod_list, item.name):
                return False
    template_metadata = workloads.pod_template(workload).get("metadata") or {}
    for (pod_map, name), _ in _pod_keys(spec):
        if name not in (template_metadata.get(pod_map) or {}) or (pod_map, name) in others.keys:
            return False
    taken = {name for o in owners.values() for pod_list in POD_LISTS for name in o.added(pod_list)}
    own_names = {c.name for c in (*spec.containers, *spec.init_containers)}
    for pod_list in POD_LISTS:
        for container in pod.get(pod_list) or []:
            if container["name"] in taken | own_names:
                continue
            paths = {m["mountPath"] for m in container.get("volumeMounts") or []}
            for mount in spec.volume_mounts:
                key = (pod_list, container["name"], mount.mount_path)
                if mount.mount_path not in paths or others.owns_mount(key):
                    return False
    return True


def _as_applied(
    policy: str, spec: Content, workload: Mapping[str, Any], owners: Mapping[str, Ownership]
) -> Ownership:
    """What the policy would own had it applied its body: admission added the items (with the
    revision annotation), and the API server records no manager for what admission adds."""
    pod = workloads.pod_spec(workload)
    own = {
        "containers": {c.name for c in spec.containers},
        "initContainers": {c.name for c in spec.init_containers},
    }

    def app(pod_list: str) -> tuple[str, ...]:
        taken = own[pod_list].union(*(o.added(pod_list) for o in owners.values()))
        return tuple(c["name"] for c in pod.get(pod_list) or [] if c["name"] not in taken)

    body = bodies.apply_body(
        workload, policy, spec, app_init=app("initContainers"), app=app("containers")
    )
    entry = {
        "manager": field_manager(policy),
        "operation": "Apply",
        "fieldsV1": fields_v1(body),
    }
    applied = {"kind": WorkloadKind.of(workload).value, "metadata": {"managedFields": [entry]}}
    return ownership(applied, policy)


def removal_blocked(owned: Ownership, others: Foreign) -> str:
    """Why releasing what the policy owns would leave an item the API server refuses, or "".
    A policy's item goes whole when the policy lets go of it, unless another manager owns the
    item itself ("."): then it stays with that manager's fields alone, and a sidecar without
    its image, or a mount without its volume name, is refused (for ever, on every try)."""
    problems = []
    for pod_list in POD_LISTS:
        for name in sorted(owned.added(pod_list)):
            kept = others.items.get((pod_list, name), frozenset())
            if "." in kept and "f:image" not in kept:
                problems.append(
                    f"{_managers(others, (pod_list, name))} also declares container {name} "
                    f"(with {_fields(kept)}) but not its image, so it would stay without one"
                )
    for key in sorted(owned.mounts):
        kept = others.mounts.get(key, frozenset())
        if "." in kept and "f:name" not in kept:
            problems.append(
                f"{_managers(others, key)} also declares the mount at {key[2]} in container "
                f"{key[1]} (with {_fields(kept)}) but not its volume, so it would stay without one"
            )
    if not problems:
        return ""
    return (
        "removing the policy's sidecars would leave what the API server refuses: "
        + "; ".join(problems)
        + ". Take it out of that manager's manifest, or delete it by hand (kubectl edit); "
        "the policy then lets go of the rest"
    )


def _fields(fields: frozenset[str]) -> str:
    named = sorted(name.removeprefix("f:") for name in fields - {".", "f:name"})
    return ", ".join(named) or "no field of its own"


def _managers(others: Foreign, key: tuple[str, ...]) -> str:
    return ", ".join(sorted(others.managers.get(key, ()))) or "another field manager"


def removal(policy: str, deployment: Mapping[str, Any]) -> Action:
    """Release everything `policy` owns on the workload; a removal the API server would refuse
    is not sent (no body), and says why (`conflict`)."""
    blocked = removal_blocked(ownership(deployment, policy), foreign(deployment))
    if blocked:
        return Action(policy, Kind.REMOVE, change=Change.REMOVE, conflict=blocked)
    return Action(policy, Kind.REMOVE, bodies.removal_body(deployment), change=Change.REMOVE)
