"""The pure core: for one Deployment and every policy, what each policy must do to it.

`plan()` takes the Deployment as the API server returned it (with managedFields), its
Namespace's labels and the policies, and returns one `Action` per policy that matches it or still
has fields on it: apply this body, remove everything, nothing to do, or skip because of a
conflict (`core/clashes`); what it holds against what the policy wants is `core/drift`. No API
calls: handlers read state, call `plan()`, and send the bodies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Content, Policy
from sidecar_operator.core import bodies, template, values, workloads
from sidecar_operator.core.clashes import app_claims, conflicts, pod_security
from sidecar_operator.core.drift import drift, values_moved
from sidecar_operator.core.ownership import (
    POD_LISTS,
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
from sidecar_operator.core.types import Action, Change, Key, Kind
from sidecar_operator.core.waves import HOLD, Rollout, Target


def reads(policy: Policy) -> tuple[Any, ...]:
    """What `plan` reads of a policy besides the content its rollout gives each workload (that
    is the target's, compared by revision): a plan made before an edit that changes none of this
    holds for every workload whose target stays. An edit starting a rollout in steps then plans
    again only the workloads its first step covers."""
    spec = policy.spec
    return (
        policy.deleting,
        policy.rank,
        spec.kinds,
        spec.selector,
        spec.namespace_selector,
        spec.allow_privileged,
    )


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
            else rollout.target(Key.of(deployment), deployment, namespace_labels, carried)
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
    pod = template.of(deployment, owners)
    claims = app_claims(pod, owners, others)
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
        blocked = (
            [unrendered[policy.name]]
            if policy.name in unrendered
            else conflicts(target, pod, claims)
            + pod_security(
                policy, target, pod, deployment["metadata"]["namespace"], namespace_labels
            )
        )
        if blocked:
            why = "; ".join(blocked)
            actions.append(_skipped(policy.name, deployment, owned, others, why, current))
            continue
        claims.take(policy.name, target, pod)
        held = drift(target, pod, owned)
        if policy.name in admitted:
            # Admission added it, and nobody else owns it: applying it takes ownership (and,
            # where it differs, gives the current content, never by force).
            if carried != current:
                change = Change.UPDATE
            else:
                change = Change.ADOPT if held.in_sync else Change.REPAIR
        elif held.in_sync and carried == current:
            actions.append(Action(policy.name, Kind.IN_SYNC, revision=current))
            continue
        elif owned.empty:
            change = Change.INJECT
        elif carried != current or values_moved(target, pod, others):
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
                force=held.edited and policy.name not in admitted and change is not Change.UPDATE,
                change=change,
                revision=current,
                drift=held.where,
            )
        )
    # Only what a policy's field manager owns is released: a revision annotation someone else
    # wrote (a copied manifest, say) is not the policy's, and an empty apply would not remove it.
    for name in sorted(involved - {policy.name for policy in matched}):
        actions.append(removal(name, deployment))
    return actions


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
    for (pod_map, name), _ in template.pod_keys(spec):
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
                    f"{others.holders((pod_list, name))} also declares container {name} "
                    f"(with {_fields(kept)}) but not its image, so it would stay without one"
                )
    for key in sorted(owned.mounts):
        kept = others.mounts.get(key, frozenset())
        if "." in kept and "f:name" not in kept:
            problems.append(
                f"{others.holders(key)} also declares the mount at {key[2]} in container "
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


def removal(policy: str, deployment: Mapping[str, Any]) -> Action:
    """Release everything `policy` owns on the workload; a removal the API server would refuse
    is not sent (no body), and says why (`conflict`)."""
    blocked = removal_blocked(ownership(deployment, policy), foreign(deployment))
    if blocked:
        return Action(policy, Kind.REMOVE, change=Change.REMOVE, conflict=blocked)
    return Action(policy, Kind.REMOVE, bodies.removal_body(deployment), change=Change.REMOVE)
