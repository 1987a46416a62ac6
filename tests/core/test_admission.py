"""Admission adds what the controller would, and the controller then only takes ownership."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core import admission, planner, ssa, workloads
from sidecar_operator.core.ownership import field_manager, ownership
from sidecar_operator.core.types import Change, Kind
from tests.core.test_planner import FLUENT_BIT, policy
from tests.core.test_planner_properties import converge

LOGS = {"name": "logs", "emptyDir": {}}
MOUNT = {"name": "logs", "mountPath": "/var/log/app"}
PROXY = {"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always"}
APP = {
    "initContainers": [{"name": "migrate", "image": "busybox"}],
    "containers": [{"name": "app", "image": "nginx"}],
}


def workload(kind: WorkloadKind = WorkloadKind.DEPLOYMENT) -> dict[str, Any]:
    template = {"spec": copy.deepcopy(APP)}
    spec: dict[str, Any] = {"template": template}
    if kind is WorkloadKind.CRON_JOB:
        spec = {"jobTemplate": {"spec": {"template": template}}}
    return {"kind": kind.value, "metadata": {"name": "web", "namespace": "shop"}, "spec": spec}


def created_with(admitted: dict[str, Any]) -> dict[str, Any]:
    """As the API server stores a workload admission changed: no field manager for those fields."""
    stored = copy.deepcopy(admitted)
    stored["metadata"].pop("managedFields", None)
    return stored


@pytest.mark.parametrize("kind", list(WorkloadKind), ids=str)
def test_the_controller_adopts_what_admission_added_without_changing_the_template(
    kind: WorkloadKind,
) -> None:
    policies = [
        policy(
            "logs", kinds=[kind.value], initContainers=[PROXY], volumes=[LOGS], volumeMounts=[MOUNT]
        )
    ]
    admitted = admission.admitted(workload(kind), {}, policies, operator_namespace=None)
    assert admitted is not None
    stored = created_with(admitted)
    action = next(iter(planner.plan(stored, {}, policies)))
    assert action.kind is Kind.APPLY and action.change is Change.ADOPT and not action.force
    assert action.body is not None
    adopted = ssa.apply(stored, field_manager("logs"), action.body)
    assert workloads.pod_spec(adopted) == workloads.pod_spec(stored)  # no second rollout
    assert [a.kind for a in planner.plan(adopted, {}, policies)] == [Kind.IN_SYNC]
    # The same end state, ownership included, as the controller reaches without admission.
    alone = converge(workload(kind), policies)
    assert workloads.pod_spec(adopted) == workloads.pod_spec(alone)
    assert ownership(adopted, "logs") == ownership(alone, "logs")


def test_admission_leaves_out_paused_policies_and_clash_losers() -> None:
    winner = policy("winner", priority=5, containers=[FLUENT_BIT])
    loser = policy("loser", containers=[FLUENT_BIT])
    paused = policy(
        "paused", initContainers=[PROXY], updateStrategy={"maxConcurrent": 1, "paused": True}
    )
    admitted = admission.admitted(workload(), {}, [loser, paused, winner], operator_namespace=None)
    assert admitted is not None
    pod = workloads.pod_spec(admitted)
    assert [c["name"] for c in pod["containers"]] == ["app", "fluent-bit"]
    assert [c["name"] for c in pod["initContainers"]] == ["migrate"]
    assert set(admitted["metadata"]["annotations"]) == {"policy.sidecars.dev/winner"}


def test_admission_adds_nothing_a_cron_job_would_never_finish_with() -> None:
    regular = policy("logs", kinds=["CronJob"], containers=[FLUENT_BIT])
    assert (
        admission.admitted(workload(WorkloadKind.CRON_JOB), {}, [regular], operator_namespace=None)
        is None
    )


def test_an_app_container_named_like_a_sidecar_is_never_adopted() -> None:
    """Without the policy's revision annotation, a container of the same name is the app's."""
    policies = [policy("logs", containers=[FLUENT_BIT])]
    own = workload()
    own["spec"]["template"]["spec"]["containers"].append({"name": "fluent-bit", "image": "mine"})
    (action,) = planner.plan(own, {}, policies)
    assert action.kind is Kind.CONFLICT


# -- an owner's update ------------------------------------------------------------------------

V1 = policy("logs", containers=[FLUENT_BIT], volumes=[LOGS], volumeMounts=[MOUNT])
V2_SPEC: dict[str, Any] = {
    "containers": [{**FLUENT_BIT, "image": "fluent/fluent-bit:3.2"}],
    "volumes": [LOGS],
    "volumeMounts": [MOUNT],
}
V2 = policy("logs", **V2_SPEC)
V2_PAUSED = policy("logs", **V2_SPEC, updateStrategy={"maxConcurrent": 1, "paused": True})


def stored_with(policies: list[Any]) -> dict[str, Any]:
    """A workload the controller injected, with the managedFields its applies left, and the
    owner's own entry."""
    injected = converge(workload(), policies)
    injected["metadata"]["managedFields"].append(
        {"manager": "gitops", "operation": "Apply", "fieldsV1": {"f:spec": {}}}
    )
    return injected


def owners_update(old: dict[str, Any], *, replace: bool) -> dict[str, Any]:
    """The owner changes the app's image: by a patch or apply that leaves the sidecars alone,
    or by a replace from the owner's manifest, which drops them and the policy's entry."""
    new = workload() if replace else copy.deepcopy(old)
    if replace:
        new["metadata"]["managedFields"] = [
            e for e in old["metadata"]["managedFields"] if e["manager"] == "gitops"
        ]
    workloads.pod_spec(new)["containers"][0]["image"] = "nginx:2"
    return new


def entries(workload: dict[str, Any], manager: str) -> list[dict[str, Any]]:
    return [e for e in workload["metadata"]["managedFields"] if e["manager"] == manager]


@pytest.mark.parametrize("replace", [False, True], ids=["apply", "replace"])
def test_an_owners_update_held_by_the_budget_keeps_the_revision_it_carries(replace: bool) -> None:
    old = stored_with([V1])
    new = owners_update(old, replace=replace)
    asked: list[Any] = []
    admitted = admission.admitted(
        new, {}, [V2], operator_namespace=None, old=old, may_roll=lambda a: asked.append(a) or False
    )
    assert [(a.policy, a.change) for a in asked] == [("logs", Change.UPDATE)]
    if not replace:
        assert admitted is None  # it still carries the old revision
        return
    assert admitted is not None
    assert workloads.pod_spec(admitted) == {
        **workloads.pod_spec(old),
        "containers": [
            {**workloads.pod_spec(old)["containers"][0], "image": "nginx:2"},
            *workloads.pod_spec(old)["containers"][1:],
        ],
    }
    assert admitted["metadata"]["annotations"] == old["metadata"]["annotations"]
    assert entries(admitted, field_manager("logs")) == entries(old, field_manager("logs"))
    (action,) = planner.plan(admitted, {}, [V2])
    assert action.change is Change.UPDATE  # waits its turn, as before the owner's update


@pytest.mark.parametrize("replace", [False, True], ids=["apply", "replace"])
def test_an_owners_update_the_budget_allows_takes_the_new_revision_in_the_same_rollout(
    replace: bool,
) -> None:
    old = stored_with([V1])
    new = owners_update(old, replace=replace)
    admitted = admission.admitted(new, {}, [V2], operator_namespace=None, old=old)
    assert admitted is not None
    assert entries(admitted, field_manager("logs")) == []  # the controller adopts it
    (action,) = planner.plan(admitted, {}, [V2])
    assert action.change is Change.ADOPT and action.body is not None
    adopted = ssa.apply(admitted, field_manager("logs"), action.body)
    assert workloads.pod_spec(adopted) == workloads.pod_spec(admitted)
    alone = converge(owners_update(old, replace=False), [V2])
    assert workloads.pod_spec(adopted) == workloads.pod_spec(alone)
    assert ownership(adopted, "logs") == ownership(alone, "logs")


def test_a_paused_policy_keeps_what_an_owners_replace_left_out_and_adds_no_revision() -> None:
    old = stored_with([V1])
    admitted = admission.admitted(
        owners_update(old, replace=True), {}, [V2_PAUSED], operator_namespace=None, old=old
    )
    assert admitted is not None
    assert admitted["metadata"]["annotations"] == old["metadata"]["annotations"]
    assert ownership(admitted, "logs") == ownership(old, "logs")


def test_an_owner_opting_out_gets_the_sidecars_removed_in_the_same_rollout() -> None:
    old = stored_with([V1])
    new = owners_update(old, replace=False)
    new["metadata"]["annotations"]["sidecars.dev/inject"] = "false"
    admitted = admission.admitted(new, {}, [V1], operator_namespace=None, old=old)
    assert admitted is not None
    assert workloads.pod_spec(admitted) == {
        "containers": [{"name": "app", "image": "nginx:2"}],
        "initContainers": APP["initContainers"],
    }
    assert planner.plan(admitted, {}, [V1]) == []


def test_updates_that_roll_no_pods_or_are_the_controllers_own_are_left_alone() -> None:
    old = stored_with([V1])
    scaled = copy.deepcopy(old)
    scaled["spec"]["replicas"] = 5
    assert admission.admitted(scaled, {}, [V2], operator_namespace=None, old=old) is None
    # The controller's own apply of the new revision: its manager's entry changed.
    (action,) = planner.plan(old, {}, [V2])
    assert action.body is not None
    own = ssa.apply(old, field_manager("logs"), action.body)
    own["metadata"]["managedFields"][-1]["time"] = "2026-12-03T06:00:00Z"
    other = policy("other", initContainers=[PROXY])
    assert admission.admitted(own, {}, [V2, other], operator_namespace=None, old=old) is None


def test_a_replace_gets_back_the_current_revision_it_carried_budget_or_pause_aside() -> None:
    old = stored_with([V2])
    admitted = admission.admitted(
        owners_update(old, replace=True),
        {},
        [V2_PAUSED],
        operator_namespace=None,
        old=old,
        may_roll=lambda _: False,
    )
    assert admitted is not None
    assert workloads.pod_spec(admitted) == workloads.pod_spec(owners_update(old, replace=False))
    (action,) = planner.plan(admitted, {}, [V2_PAUSED])
    assert action.change is Change.ADOPT


def patched(reviewed: dict[str, Any], admitted: dict[str, Any], *, updated: bool) -> Any:
    """The object as the API server leaves it after the webhook's JSON patch."""
    operations = admission.json_patch(reviewed, admitted, updated=updated)
    assert len(operations) <= 4  # the fields admission changes, not a diff of the object
    return jsonpatch.apply_patch(reviewed, operations)


@pytest.mark.parametrize("kind", list(WorkloadKind), ids=str)
def test_the_webhook_s_patch_makes_the_created_workload_what_admission_decided(
    kind: WorkloadKind,
) -> None:
    policies = [policy("logs", kinds=[kind.value], volumes=[LOGS], volumeMounts=[MOUNT])]
    reviewed = workload(kind)
    admitted = admission.admitted(reviewed, {}, policies, operator_namespace=None)
    assert admitted is not None and admitted != reviewed
    # At creation the policies' entries are left out (`created_with`): the patch leaves the
    # object's managedFields alone.
    assert patched(reviewed, admitted, updated=False) == created_with(admitted)


def test_the_webhook_s_patch_makes_an_owners_update_what_admission_decided() -> None:
    old = stored_with([V1])
    new = owners_update(old, replace=True)
    admitted = admission.admitted(new, {}, [V2_PAUSED], operator_namespace=None, old=old)
    assert admitted is not None
    assert patched(new, admitted, updated=True) == admitted


def test_the_webhook_s_patch_adds_a_pod_template_the_object_lacks() -> None:
    bare = workload()
    del bare["spec"]["template"]
    admitted = copy.deepcopy(workload())
    admitted["metadata"]["annotations"] = {"policy.sidecars.dev/logs": "1"}
    assert patched(bare, admitted, updated=False) == admitted
