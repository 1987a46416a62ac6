"""What admission adds to a workload being created: exactly what the controller would apply to it
at that moment, so its first pods carry the sidecars and there is no second rollout. Pure.

The planner decides, as it does for the controller (priority, conflicts, opt-out, Pod Security):
one code path. The API server records no field manager for what admission adds, so the workload
also carries each policy's revision annotation; the controller then finds the sidecars of the
current revision unowned and applies them with the policy's manager (`Change.ADOPT`), which
changes nothing but ownership.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, ssa
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.core.types import Change, Kind


def admitted(
    workload: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    policies: Iterable[Policy],
    *,
    operator_namespace: str | None,
) -> dict[str, Any] | None:
    """The new workload with what every matching policy adds now, or None when nothing is added.
    A paused policy adds nothing (it touches no further workload); a halted or budget-limited
    rollout still gives a new workload the current revision, as the controller does, since
    nothing runs yet that it would disrupt."""
    policies = list(policies)
    paused = {policy.name for policy in policies if policy.spec.update_strategy.paused}
    result: dict[str, Any] | None = None
    actions = planner.plan(
        workload, namespace_labels, policies, operator_namespace=operator_namespace
    )
    for action in actions:
        adds = action.kind is Kind.APPLY and action.change is Change.INJECT
        if adds and action.body is not None and action.policy not in paused:
            result = ssa.apply(result or workload, field_manager(action.policy), action.body)
    return result
