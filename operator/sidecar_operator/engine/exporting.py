"""A policy's rollout as metrics, from what its pass found: the counts per kind, the step, the
conditions, the progress deadline and when it last made progress, which the alert rules read
(charts/sidecar-operator/files/alerts.yaml)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from sidecar_operator import metrics
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy
from sidecar_operator.core import status
from sidecar_operator.engine.worker import Worker


def export(
    worker: Worker,
    policy: Policy,
    new: Mapping[str, Any],
    per_kind: Mapping[WorkloadKind, status.Counts],
) -> None:
    """Set the policy's metrics from the status `new` and its counts per kind. Each is set only
    when it changed: under churn the counts move with every created workload, the rest rarely,
    and setting them all on every pass was a twentieth of the operator's CPU."""
    conditions = tuple(
        (str(c.get("type")), str(c.get("status")), str(c.get("reason"))) for c in new["conditions"]
    )
    deadline = policy.spec.update_strategy.progress_deadline_seconds
    rest = (new.get("currentStep") or 0, conditions, deadline)
    before: dict[WorkloadKind, status.Counts] = worker.exported[0] if worker.exported else {}
    if worker.exported and worker.exported[1] == rest and before == per_kind:
        return
    for kind, counted in per_kind.items():
        if before.get(kind) != counted:
            metrics.set_counts(worker.name, kind.value, **asdict(counted))
    if not before:  # a takeover, or the first pass: whatever was said of other kinds goes
        metrics.forget(worker.name, (kind.value for kind in WorkloadKind if kind not in per_kind))
    else:
        metrics.forget(worker.name, (kind.value for kind in before if kind not in per_kind))
    if not worker.exported or worker.exported[1] != rest:
        metrics.STEP.labels(policy=worker.name).set(rest[0])
        metrics.set_conditions(worker.name, new["conditions"])
        metrics.PROGRESS_DEADLINE.labels(policy=worker.name).set(deadline)
        for kind in policy.spec.kinds:
            # Exported at 0 before the first: `increase()` over a series that appears at 1 is 0.
            metrics.INJECTED_AFTER_CREATION.labels(policy=worker.name, kind=kind.value)
    worker.exported = (dict(per_kind), rest)
    counts = status.total(per_kind.values())
    reasons = tuple(reason for _, _, reason in conditions)
    moved = (new.get("revision"), new.get("currentStep"), reasons, counts.updated, counts.ready)
    if moved != worker.progress:
        worker.progress = moved
        metrics.LAST_PROGRESS.labels(policy=worker.name).set(time.time())
