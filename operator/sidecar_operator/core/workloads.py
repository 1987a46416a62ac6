"""What differs between the kinds of workload: where the pod template is, what runs that a
change would disrupt, and when a change has rolled out or failed. Pure.

Each kind's test follows what `kubectl rollout status` waits for, and the contract's section
"Workload kinds". A CronJob has nothing running to disrupt: its next Jobs start from the new
template, so it is rolled out once written and never paced.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind, dig
from sidecar_operator.core.ownership import written_at, wrote_last


def pod_template(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The pod template, wherever the workload's kind keeps it: what its pods are made from."""
    return dig(workload, WorkloadKind.of(workload).template_path)


def pod_spec(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod_template(workload).get("spec") or {}


def selector_keys(workload: Mapping[str, Any]) -> frozenset[str]:
    """The label keys the workload's selector reads (a CronJob's Jobs select by uid)."""
    selector = (workload.get("spec") or {}).get("selector") or {}
    return frozenset(selector.get("matchLabels") or {}) | frozenset(
        requirement.get("key", "") for requirement in selector.get("matchExpressions") or []
    )


def on_delete(workload: Mapping[str, Any]) -> bool:
    """A StatefulSet or DaemonSet that changes its pods only when they are deleted."""
    strategy = (workload.get("spec") or {}).get("updateStrategy") or {}
    return WorkloadKind.of(workload) in _ON_DELETE_KINDS and strategy.get("type") == "OnDelete"


_ON_DELETE_KINDS = frozenset({WorkloadKind.STATEFUL_SET, WorkloadKind.DAEMON_SET})


def _caught_up(workload: Mapping[str, Any]) -> bool:
    status = workload.get("status") or {}
    generation = workload.get("metadata", {}).get("generation", 0)
    return bool(status.get("observedGeneration", 0) >= generation)


def rolled_out(workload: Mapping[str, Any]) -> bool:
    match WorkloadKind.of(workload):
        case WorkloadKind.DEPLOYMENT:
            return _deployment_rolled_out(workload)
        case WorkloadKind.STATEFUL_SET:
            return _stateful_set_rolled_out(workload)
        case WorkloadKind.DAEMON_SET:
            return _daemon_set_rolled_out(workload)
        case WorkloadKind.CRON_JOB:
            return True


def _deployment_rolled_out(deployment: Mapping[str, Any]) -> bool:
    """The contract's test (observedGeneration caught up, updatedReplicas == replicas, Available)
    plus what `kubectl rollout status` waits for: no old pods left, and every new one available."""
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    updated = status.get("updatedReplicas", 0)
    return (
        _caught_up(deployment)
        and updated == spec.get("replicas", 1)
        and status.get("replicas", 0) == updated
        and status.get("availableReplicas", 0) >= updated
        and conditions.get("Available") == "True"
    )


def _stateful_set_rolled_out(stateful_set: Mapping[str, Any]) -> bool:
    """`OnDelete`: once the controller has seen the template (the pods change when deleted).
    Otherwise every replica is available, those at or above the partition run the new
    revision, and without a partition the controller has made it the current one."""
    spec, status = stateful_set.get("spec", {}), stateful_set.get("status") or {}
    if not _caught_up(stateful_set):
        return False
    if on_delete(stateful_set):
        return True
    strategy = spec.get("updateStrategy") or {}
    replicas = spec.get("replicas", 1)
    if status.get("availableReplicas", 0) < replicas:
        return False
    partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
    if partition > 0:
        return bool(status.get("updatedReplicas", 0) >= replicas - partition)
    return bool(
        status.get("updatedReplicas", 0) >= replicas
        and status.get("currentRevision") == status.get("updateRevision")
    )


def _daemon_set_rolled_out(daemon_set: Mapping[str, Any]) -> bool:
    """Every node that should run it runs the new template, available (`OnDelete`: once the
    controller has seen it)."""
    status = daemon_set.get("status") or {}
    if not _caught_up(daemon_set):
        return False
    if on_delete(daemon_set):
        return True
    desired = status.get("desiredNumberScheduled", 0)
    return bool(
        status.get("updatedNumberScheduled", 0) >= desired
        and status.get("numberAvailable", 0) >= desired
    )


def owner_paused(workload: Mapping[str, Any]) -> bool:
    """A Deployment its owner paused (`kubectl rollout pause`): a new template waits there,
    rolling out nothing, until the owner resumes it."""
    return WorkloadKind.of(workload) is WorkloadKind.DEPLOYMENT and bool(
        (workload.get("spec") or {}).get("paused")
    )


def idle(workload: Mapping[str, Any]) -> bool:
    """Whether it has no available pod for a template change to restart, as its controller
    said of its current spec. A status from before the controller saw the spec (the first
    event of a creation, or a watch running behind) says nothing yet: taken as idle, a
    running workload would be injected without waiting for the budget."""
    status = workload.get("status") or {}
    match WorkloadKind.of(workload):
        case WorkloadKind.DEPLOYMENT | WorkloadKind.STATEFUL_SET:
            return _caught_up(workload) and not status.get("availableReplicas")
        case WorkloadKind.DAEMON_SET:
            return _caught_up(workload) and not status.get("numberAvailable")
        case WorkloadKind.CRON_JOB:
            return True  # its pods are its Jobs', which a template change does not restart


def disruptible(workload: Mapping[str, Any]) -> bool:
    """Whether writing its template restarts something that runs: not a CronJob's."""
    return WorkloadKind.of(workload) is not WorkloadKind.CRON_JOB


def failed(
    workload: Mapping[str, Any],
    policy: str,
    *,
    deadline_seconds: int,
    now: datetime.datetime,
) -> bool:
    """A Deployment's controller says so (`ProgressDeadlineExceeded`). The other kinds have no
    deadline of their own: the policy's change failed when it is still rolling out
    `deadline_seconds` after the policy wrote it (and nobody changed the spec since)."""
    kind = WorkloadKind.of(workload)
    if kind is WorkloadKind.DEPLOYMENT:
        conditions = (workload.get("status") or {}).get("conditions") or []
        return any(
            c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
            for c in conditions
        )
    if kind is WorkloadKind.CRON_JOB or rolled_out(workload):
        return False
    written = written_at(workload, policy)
    if written is None or not wrote_last(workload, policy):
        return False
    return (now - written).total_seconds() > deadline_seconds
