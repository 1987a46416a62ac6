"""Admission adds what the controller would, and the controller then only takes ownership."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core import admission, planner, ssa, workloads
from sidecar_operator.core.ownership import field_manager, ownership
from sidecar_operator.core.types import Change, Kind
from tests.core.test_planner import FLUENT_BIT, policy

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


def controller(workload: dict[str, Any], policies: list[Any]) -> dict[str, Any]:
    """What the controller leaves after writing every action it plans, until nothing is left."""
    for _ in range(3):
        writes = [a for a in planner.plan(workload, {}, policies) if a.body is not None]
        if not writes:
            return workload
        for action in writes:
            workload = ssa.apply(workload, field_manager(action.policy), action.body)
    raise AssertionError("the controller never settled")


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
    alone = controller(workload(kind), policies)
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
