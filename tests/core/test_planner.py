"""The planner's decisions on hand-written cases (the properties cover generated ones)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, ssa
from sidecar_operator.core.ownership import field_manager, foreign, ownership
from sidecar_operator.core.types import Change, Kind
from sidecar_operator.state import snapshot

FLUENT_BIT = {
    "name": "fluent-bit",
    "image": "fluent/fluent-bit:3.1",
    "resources": {"limits": {"cpu": "0.5", "memory": "128Mi"}},
}


def policy(name: str = "logs", created: str = "2026-01-01T00:00:00Z", **spec: Any) -> Policy:
    return Policy.from_object(
        {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"selector": {}, **spec}}
    )


def deployment(**pod: Any) -> dict[str, Any]:
    pod = pod or {"containers": [{"name": "app", "image": "nginx"}]}
    return {"metadata": {"name": "web", "namespace": "shop"}, "spec": {"template": {"spec": pod}}}


def only(actions: list[planner.Action]) -> planner.Action:
    (action,) = actions
    return action


def test_revision_ignores_selector_priority_and_strategy() -> None:
    base = policy(containers=[FLUENT_BIT])
    other = policy(
        containers=[FLUENT_BIT],
        priority=9,
        selector={"matchLabels": {"a": "b"}},
        updateStrategy={"maxConcurrent": 1, "paused": True},
    )
    changed = policy(containers=[{**FLUENT_BIT, "image": "fluent/fluent-bit:3.2"}])
    assert base.spec.revision == other.spec.revision
    assert base.spec.revision != changed.spec.revision
    assert len(base.spec.revision) == 10


def test_first_sight_is_an_inject_with_the_revision_annotation() -> None:
    action = only(planner.plan(deployment(), {}, [policy(containers=[FLUENT_BIT])]))
    assert action.kind is Kind.APPLY and action.change is Change.INJECT and not action.force
    assert action.body is not None
    assert action.body["metadata"]["annotations"] == {"policy.sidecars.dev/logs": action.revision}
    assert action.body["spec"]["template"]["spec"] == {"containers": [FLUENT_BIT]}


def test_canonical_quantities_from_the_server_are_not_drift() -> None:
    logs = policy(containers=[FLUENT_BIT])
    done = ssa.apply(
        deployment(), field_manager("logs"), only(planner.plan(deployment(), {}, [logs])).body or {}
    )
    pod = done["spec"]["template"]["spec"]
    pod["containers"][1]["resources"]["limits"]["cpu"] = "500m"  # as the server returns it
    pod["containers"][1]["terminationMessagePath"] = "/dev/termination-log"  # a default
    assert only(planner.plan(done, {}, [logs])).kind is Kind.IN_SYNC


def test_an_edited_sidecar_is_repaired_by_force() -> None:
    logs = policy(containers=[FLUENT_BIT])
    done = ssa.apply(
        deployment(), field_manager("logs"), only(planner.plan(deployment(), {}, [logs])).body or {}
    )
    done["spec"]["template"]["spec"]["containers"][1]["image"] = "evil:1"
    action = only(planner.plan(done, {}, [logs]))
    assert action.kind is Kind.APPLY and action.change is Change.REPAIR and action.force


def test_an_app_name_clash_is_a_conflict_with_nothing_to_release() -> None:
    app = deployment(
        containers=[{"name": "app", "image": "nginx"}, {"name": "fluent-bit", "image": "mine"}]
    )
    action = only(planner.plan(app, {}, [policy(containers=[FLUENT_BIT])]))
    assert action.kind is Kind.CONFLICT and action.body is None
    assert action.conflict == "container fluent-bit is already defined by the Deployment"


def test_a_mount_path_clash_is_a_conflict() -> None:
    app = deployment(
        containers=[
            {
                "name": "app",
                "image": "nginx",
                "volumeMounts": [{"name": "data", "mountPath": "/var/log/app"}],
            }
        ],
        volumes=[{"name": "data"}],
    )
    logs = policy(
        volumes=[{"name": "logs", "emptyDir": {}}],
        volumeMounts=[{"name": "logs", "mountPath": "/var/log/app"}],
    )
    action = only(planner.plan(app, {}, [logs]))
    assert action.kind is Kind.CONFLICT
    assert "container app already has a mount at /var/log/app" in action.conflict


def test_priority_then_age_then_name_decides_a_clash() -> None:
    older = policy("b-older", "2026-01-01T00:00:00Z", containers=[FLUENT_BIT])
    newer = policy("a-newer", "2026-02-01T00:00:00Z", containers=[FLUENT_BIT])
    kinds = {a.policy: a.kind for a in planner.plan(deployment(), {}, [newer, older])}
    assert kinds == {"b-older": Kind.APPLY, "a-newer": Kind.CONFLICT}

    urgent = policy("c-urgent", "2026-03-01T00:00:00Z", containers=[FLUENT_BIT], priority=5)
    kinds = {a.policy: a.kind for a in planner.plan(deployment(), {}, [newer, older, urgent])}
    assert kinds["c-urgent"] is Kind.APPLY
    assert kinds["b-older"] is Kind.CONFLICT


def test_a_policy_gone_from_the_cluster_is_removed_by_its_annotation() -> None:
    logs = policy(containers=[FLUENT_BIT])
    done = ssa.apply(
        deployment(), field_manager("logs"), only(planner.plan(deployment(), {}, [logs])).body or {}
    )
    action = only(planner.plan(done, {}, []))
    assert action.kind is Kind.REMOVE
    assert action.body == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
    }


def test_ownership_reads_what_a_manager_added_and_mounted() -> None:
    logs = policy(
        containers=[FLUENT_BIT],
        volumes=[{"name": "logs", "emptyDir": {}}],
        volumeMounts=[{"name": "logs", "mountPath": "/var/log/app"}],
    )
    done = ssa.apply(
        deployment(), field_manager("logs"), only(planner.plan(deployment(), {}, [logs])).body or {}
    )
    owned = ownership(done, "logs")
    assert owned.containers == {"fluent-bit"}
    assert owned.volumes == {"logs"}
    assert owned.mounts == {("containers", "app", "/var/log/app")}
    assert owned.annotation
    assert ownership(done, "someone-else").empty


def test_merge_places_new_items_like_the_api_server() -> None:
    assert ssa.merged_order(["app", "side"], ["new", "app"]) == ["new", "app", "side"]
    assert ssa.merged_order(["init"], ["sync"]) == ["init", "sync"]
    assert ssa.merged_order(["a", "b"], ["b", "x"]) == ["a", "b", "x"]


def test_a_privilege_the_schema_cannot_see_is_a_conflict_without_allow_privileged() -> None:
    """CEL checks the first 32 ports of a sidecar; a hostPort after them is caught here."""
    ports = [{"containerPort": 1000 + i} for i in range(32)] + [
        {"containerPort": 2000, "hostPort": 2000}
    ]
    exporter = {"name": "exporter", "image": "prom/statsd-exporter", "ports": ports}
    action = only(planner.plan(deployment(), {}, [policy(containers=[exporter])]))
    assert action.kind is Kind.CONFLICT
    assert "baseline Pod Security Standard" in action.conflict
    assert "set spec.allowPrivileged: true" in action.conflict
    allowed = policy(containers=[exporter], allowPrivileged=True)
    assert only(planner.plan(deployment(), {}, [allowed])).kind is Kind.APPLY


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def test_a_sidecar_the_namespace_level_refuses_is_a_conflict_there_only() -> None:
    logs = policy(containers=[{"name": "shipper", "image": "busybox"}])
    refused = only(planner.plan(deployment(), RESTRICTED, [logs]))
    assert refused.kind is Kind.CONFLICT
    assert "namespace shop enforces the restricted Pod Security level" in refused.conflict
    assert "container shipper" in refused.conflict
    assert only(planner.plan(deployment(), {}, [logs])).kind is Kind.APPLY


def test_a_restricted_sidecar_may_inherit_from_the_app_s_pod() -> None:
    """runAsNonRoot and seccomp set once for the Pod cover the sidecar too."""
    logs = policy(containers=[{"name": "shipper", "image": "busybox", "securityContext": HARDENED}])
    bare = deployment(containers=[{"name": "app", "image": "nginx"}])
    assert only(planner.plan(bare, RESTRICTED, [logs])).kind is Kind.CONFLICT
    hardened = deployment(
        containers=[{"name": "app", "image": "nginx"}],
        securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    )
    assert only(planner.plan(hardened, RESTRICTED, [logs])).kind is Kind.APPLY


def owned_by(
    workload: dict[str, Any], manager: str, *, operation: str = "Update"
) -> dict[str, Any]:
    """The workload with `manager` owning everything its pod template holds now (as a
    manifest's apply or create would)."""
    entry = {"manager": manager, "operation": operation, "fieldsV1": ssa.fields_v1(workload)}
    workload["metadata"]["managedFields"] = [*workload["metadata"].get("managedFields", []), entry]
    return workload


def injected(logs: Policy, workload: dict[str, Any] | None = None) -> dict[str, Any]:
    start = workload or deployment()
    body = only(planner.plan(start, {}, [logs])).body or {}
    return ssa.apply(start, field_manager(logs.name), body)


def test_values_the_api_server_drops_or_defaults_are_no_drift() -> None:
    """`env: []`, `args: []`, `workingDir: ""`, `stdin: false`, `imagePullPolicy: ""` and a mount
    with `readOnly: false` wrote a no-op apply on every event."""
    logs = policy(
        containers=[
            {
                "name": "shipper",
                "image": "busybox:1.36",
                "env": [],
                "args": [],
                "workingDir": "",
                "stdin": False,
                "imagePullPolicy": "",
                "volumeMounts": [{"name": "logs", "mountPath": "/logs", "readOnly": False}],
            }
        ],
        volumes=[{"name": "logs", "emptyDir": {}}],
        volumeMounts=[{"name": "logs", "mountPath": "/var/log/app", "readOnly": False}],
    )
    done = injected(logs)
    pod = done["spec"]["template"]["spec"]
    pod["containers"][1] = {  # as the API server stores it
        "name": "shipper",
        "image": "busybox:1.36",
        "imagePullPolicy": "IfNotPresent",
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "resources": {},
        "volumeMounts": [{"name": "logs", "mountPath": "/logs"}],
    }
    pod["containers"][0]["volumeMounts"] = [{"name": "logs", "mountPath": "/var/log/app"}]
    assert only(planner.plan(done, {}, [logs])).kind is Kind.IN_SYNC


def test_an_env_value_edited_to_another_spelling_of_a_number_is_repaired() -> None:
    logs = policy(containers=[{**FLUENT_BIT, "env": [{"name": "LIMIT", "value": "1000"}]}])
    done = injected(logs)
    done["spec"]["template"]["spec"]["containers"][1]["env"][0]["value"] = "1k"
    action = only(planner.plan(done, {}, [logs]))
    assert action.kind is Kind.APPLY and action.change is Change.REPAIR and action.force
    assert action.drift == "container fluent-bit: env/LIMIT/value"


def lookalike(logs: Policy, image: str) -> dict[str, Any]:
    """The app's own container named like the policy's sidecar, in a manifest that also
    copied the policy's revision annotation (from `kubectl get -o yaml`, say)."""
    app = deployment(containers=[{"name": "app", "image": "nginx"}, {**FLUENT_BIT, "image": image}])
    app["metadata"]["annotations"] = {f"policy.sidecars.dev/{logs.name}": logs.spec.revision}
    return owned_by(app, "kubectl-client-side-apply")


@pytest.mark.parametrize("image", ["mine:1", FLUENT_BIT["image"]])
def test_an_app_container_with_the_sidecar_s_name_and_a_copied_annotation_is_the_app_s(
    image: str,
) -> None:
    logs = policy(containers=[FLUENT_BIT])
    action = only(planner.plan(lookalike(logs, image), {}, [logs]))
    assert action.kind is Kind.CONFLICT and action.body is None and not action.force
    assert action.conflict == "container fluent-bit is already defined by the Deployment"


def admitted(logs: Policy, **changes: Any) -> dict[str, Any]:
    """What admission stores: the policy's items and annotation, owned by no manager."""
    done = injected(logs)
    done["metadata"]["managedFields"] = []
    done["spec"]["template"]["spec"]["containers"][1].update(changes)
    return done


def test_what_admission_added_is_adopted_without_force() -> None:
    logs = policy(containers=[FLUENT_BIT])
    action = only(planner.plan(admitted(logs), {}, [logs]))
    assert action.kind is Kind.APPLY and action.change is Change.ADOPT and not action.force
    differing = only(planner.plan(admitted(logs, image="old:1"), {}, [logs]))
    assert differing.change is Change.REPAIR and not differing.force


def test_a_host_port_taken_by_the_app_on_the_host_network_is_a_conflict() -> None:
    exporter = {"name": "exporter", "image": "busybox", "ports": [{"containerPort": 9100}]}
    logs = policy(containers=[exporter])
    app = {"name": "app", "image": "nginx", "ports": [{"containerPort": 9100}]}
    on_host = deployment(containers=[app], hostNetwork=True)
    action = only(planner.plan(on_host, {}, [logs]))
    assert action.kind is Kind.CONFLICT
    assert "host port TCP//9100" in action.conflict and "the Deployment's container app" in (
        action.conflict
    )
    assert only(planner.plan(deployment(containers=[app]), {}, [logs])).kind is Kind.APPLY
    udp = policy(containers=[{**exporter, "ports": [{"containerPort": 9100, "protocol": "UDP"}]}])
    assert only(planner.plan(on_host, {}, [udp])).kind is Kind.APPLY


def test_a_host_port_clash_between_policies_skips_the_loser() -> None:
    first = policy("a", containers=[{"name": "one", "image": "x", "ports": [{"containerPort": 1}]}])
    second = policy(
        "b",
        "2026-02-01T00:00:00Z",
        containers=[{"name": "two", "image": "x", "ports": [{"containerPort": 1}]}],
    )
    kinds = {
        a.policy: a.kind
        for a in planner.plan(
            deployment(hostNetwork=True, containers=[{"name": "app", "image": "n"}]),
            {},
            [first, second],
        )
    }
    assert kinds == {"a": Kind.APPLY, "b": Kind.CONFLICT}


def declared_by(manager: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A managedFields entry of `manager` declaring the sidecar fluent-bit with `fields`."""
    container = {'k:{"name":"fluent-bit"}': fields}
    return {
        "manager": manager,
        "operation": "Apply",
        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": container}}}},
    }


def test_a_removal_that_would_leave_a_container_without_its_image_is_not_sent() -> None:
    """Another manager declares the sidecar too (its own manifest lists it, with stdin): it
    would stay after the policy lets go, with stdin and without an image, which the API server
    refuses for ever. A field alone (`kubectl patch` setting stdin) keeps nothing: the item goes
    whole (both checked on the real control plane)."""
    logs = policy(containers=[FLUENT_BIT])
    done = injected(logs)
    done["metadata"]["managedFields"].append(
        declared_by("gitops", {".": {}, "f:name": {}, "f:stdin": {}})
    )
    action = planner.removal("logs", done)
    assert action.kind is Kind.REMOVE and action.body is None
    assert "gitops also declares container fluent-bit (with stdin) but not its image" in (
        action.conflict
    )
    done["metadata"]["managedFields"][-1] = declared_by(
        "gitops", {".": {}, "f:name": {}, "f:stdin": {}, "f:image": {}}
    )
    assert planner.removal("logs", done).body is not None  # it stays, whole, as theirs
    done["metadata"]["managedFields"][-1] = declared_by("kubectl-patch", {"f:stdin": {}})
    assert planner.removal("logs", done).body is not None  # it goes, stdin too


def test_a_snapshot_keeps_what_the_planner_reads_of_other_managers() -> None:
    """The cache keeps of the other managers' entries only whose items are whose: the planner
    decides the same from it as from the whole object."""
    logs = policy(
        containers=[FLUENT_BIT],
        volumeMounts=[{"name": "d", "mountPath": "/d"}],
        volumes=[{"name": "d", "emptyDir": {}}],
    )
    cases = [lookalike(logs, "mine:1"), admitted(logs), injected(logs)]
    edited = injected(logs)
    edited["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-edit",
            "operation": "Update",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"fluent-bit"}': {
                                    "f:env": {'k:{"name":"X"}': {".": {}, "f:name": {}}}
                                }
                            }
                        }
                    }
                }
            },
        }
    )
    cases.append(edited)
    for case in cases:
        case.setdefault("kind", "Deployment")
        compact = snapshot.compact(case)
        assert foreign(compact) == foreign(case)
        assert planner.plan(compact, {}, [logs]) == planner.plan(case, {}, [logs])
        assert planner.removal("logs", compact) == planner.removal("logs", case)
