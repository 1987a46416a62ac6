"""When each kind of workload has rolled out a change, or failed to: the contract's section
"Workload kinds", after what `kubectl rollout status` waits for."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from sidecar_operator.core import workloads
from sidecar_operator.core.ownership import field_manager

NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def stateful_set(**status: Any) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"generation": 2},
        "spec": {"replicas": 3},
        "status": {
            "observedGeneration": 2,
            "availableReplicas": 3,
            "updatedReplicas": 3,
            "currentRevision": "web-2",
            "updateRevision": "web-2",
            **status,
        },
    }


def daemon_set(**status: Any) -> dict[str, Any]:
    return {
        "kind": "DaemonSet",
        "metadata": {"generation": 2},
        "spec": {},
        "status": {
            "observedGeneration": 2,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberAvailable": 3,
            **status,
        },
    }


def test_a_cron_job_s_pod_spec_is_its_job_template_s() -> None:
    pod = {"containers": [{"name": "app"}]}
    cron_job = {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}}
    assert workloads.pod_spec(cron_job) == pod
    assert workloads.pod_spec({"kind": "StatefulSet", "spec": {"template": {"spec": pod}}}) == pod
    assert workloads.pod_spec({"kind": "DaemonSet", "spec": {}}) == {}


@pytest.mark.parametrize(
    ("status", "done"),
    [
        ({}, True),
        ({"observedGeneration": 1}, False),  # the controller has not seen the new template
        ({"availableReplicas": 2}, False),
        ({"updatedReplicas": 2}, False),
        ({"currentRevision": "web-1"}, False),  # the controller has not finished the update
    ],
)
def test_a_stateful_set_has_rolled_out_when_every_replica_runs_the_current_revision(
    status: dict[str, Any], done: bool
) -> None:
    assert workloads.rolled_out(stateful_set(**status)) is done


def test_a_partitioned_stateful_set_rolls_out_only_the_replicas_above_the_partition() -> None:
    partitioned = stateful_set(updatedReplicas=1, currentRevision="web-1")
    partitioned["spec"]["updateStrategy"] = {"rollingUpdate": {"partition": 2}}
    assert workloads.rolled_out(partitioned)
    partitioned["status"]["updatedReplicas"] = 0
    assert not workloads.rolled_out(partitioned)


def test_an_on_delete_stateful_set_is_rolled_out_once_its_controller_saw_the_template() -> None:
    on_delete = stateful_set(updatedReplicas=0, currentRevision="web-1")
    on_delete["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert workloads.rolled_out(on_delete)
    on_delete["status"]["observedGeneration"] = 1
    assert not workloads.rolled_out(on_delete)


@pytest.mark.parametrize(
    ("status", "done"),
    [
        ({}, True),
        ({"observedGeneration": 1}, False),
        ({"updatedNumberScheduled": 2}, False),
        ({"numberAvailable": 2}, False),
        ({"desiredNumberScheduled": 0, "updatedNumberScheduled": 0, "numberAvailable": 0}, True),
    ],
)
def test_a_daemon_set_has_rolled_out_when_every_node_runs_the_new_template_available(
    status: dict[str, Any], done: bool
) -> None:
    assert workloads.rolled_out(daemon_set(**status)) is done


def test_a_cron_job_is_rolled_out_when_written_and_has_nothing_running_to_disrupt() -> None:
    cron_job = {"kind": "CronJob", "metadata": {"generation": 5}, "status": {"active": [{}]}}
    assert workloads.rolled_out(cron_job)
    assert workloads.idle(cron_job)
    assert not workloads.idle(daemon_set())
    assert workloads.idle(daemon_set(numberAvailable=0))
    assert not workloads.idle(stateful_set(availableReplicas=2))
    assert workloads.idle(stateful_set(availableReplicas=0))


def test_a_status_from_before_the_controller_saw_the_spec_is_not_idle() -> None:
    """Its first event, or a watch running behind: what runs now is not known."""
    assert not workloads.idle(stateful_set(availableReplicas=0, observedGeneration=1))
    assert not workloads.idle({"kind": "Deployment", "metadata": {"generation": 1}})


def written(workload: dict[str, Any], policy_time: str, owner_time: str | None = None) -> None:
    entries = [{"manager": field_manager("logs"), "operation": "Apply", "time": policy_time}]
    if owner_time:
        entries.append(
            {
                "manager": "kubectl",
                "operation": "Update",
                "time": owner_time,
                "fieldsV1": {"f:spec": {}},
            }
        )
    workload["metadata"]["managedFields"] = entries


def test_a_stateful_set_still_rolling_the_policy_s_change_after_the_deadline_has_failed() -> None:
    stuck = stateful_set(availableReplicas=2, updatedReplicas=1)
    written(stuck, "2026-01-01T11:50:00Z")  # ten minutes ago

    def failed(deadline: int, workload: dict[str, Any] = stuck) -> bool:
        return workloads.failed(workload, "logs", deadline_seconds=deadline, now=NOW)

    assert failed(deadline=599)
    assert not failed(deadline=600)
    # The owner changed the spec since: the rollout under way is not the policy's doing.
    written(stuck, "2026-01-01T11:50:00Z", owner_time="2026-01-01T11:55:00Z")
    assert not failed(deadline=60)
    assert not failed(deadline=60, workload=stateful_set())  # rolled out: nothing failed
    cron_job = {"kind": "CronJob", "metadata": {}}
    assert not workloads.failed(cron_job, "logs", deadline_seconds=0, now=NOW)


def test_a_deployment_fails_by_its_own_progress_deadline_only() -> None:
    deployment: dict[str, Any] = {
        "metadata": {"generation": 1},
        "status": {
            "conditions": [
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            ]
        },
    }
    assert workloads.failed(deployment, "logs", deadline_seconds=600, now=NOW)
    deployment["status"]["conditions"] = []
    written(deployment, "2020-01-01T00:00:00Z")
    assert not workloads.failed(deployment, "logs", deadline_seconds=600, now=NOW)


def test_a_deployment_has_rolled_out_when_caught_up_with_no_old_pod_and_all_available() -> None:
    base = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
            "conditions": [{"type": "Available", "status": "True"}],
        },
    }
    assert workloads.rolled_out(base)
    assert not workloads.rolled_out({**base, "status": {**base["status"], "observedGeneration": 1}})
    assert not workloads.rolled_out({**base, "status": {**base["status"], "updatedReplicas": 1}})
    old_pod_left = {**base["status"], "replicas": 3}
    assert not workloads.rolled_out({**base, "status": old_pod_left})
    new_pod_unavailable = {**base["status"], "availableReplicas": 1}
    assert not workloads.rolled_out({**base, "status": new_pod_unavailable})
