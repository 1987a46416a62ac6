"""Prometheus metrics: what the operator did, what it cost, and where each policy stands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

WRITES = Counter(
    "sidecar_operator_writes",
    "Server-side applies to workloads, by policy, kind, action (inject, update, repair, "
    "remove, adopt) and outcome (written, nothing, gone, rejected, diverged: accepted but "
    "stored otherwise, conflict, failed).",
    ["policy", "kind", "action", "outcome"],
)
REQUESTS = Counter(
    "sidecar_operator_api_requests",
    "Requests sent to the API server, by method and resource (Kopf's own not included).",
    ["method", "resource"],
)
ACTIVE = Gauge(
    "sidecar_operator_active",
    "1 while this replica is the one that writes, 0 while it stands by (see --peering).",
)
PASSES = Counter(
    "sidecar_operator_reconciles", "Reconcile passes over a policy's workloads.", ["policy"]
)
PASS_SECONDS = Histogram(
    "sidecar_operator_reconcile_seconds",
    "How long one reconcile pass over a policy's workloads took, writes included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONFLICTS = Counter(
    "sidecar_operator_conflicts",
    "Workloads found newly skipped by a policy because of a clash or a rejected patch.",
    ["policy"],
)
REMOVALS_BLOCKED = Counter(
    "sidecar_operator_removals_blocked",
    "Workloads from which a policy could not remove its sidecars (the API server refused the "
    "removal, or would: another manager's fields in them), newly found.",
    ["policy"],
)
INJECTED_AFTER_CREATION = Counter(
    "sidecar_operator_injected_after_creation",
    "Workloads created while the policy existed that reached the controller without its "
    "sidecars (admission did not add them): their first pods ran without them.",
    ["policy", "kind"],
)
API_ERRORS = Counter(
    "sidecar_operator_api_errors", "Error answers from the API server, by HTTP status.", ["status"]
)
WORKLOADS = Gauge(
    "sidecar_operator_policy_workloads",
    "Workloads per policy, kind and state: matched, updated, ready, conflicts, blocked (not "
    "matched, and the policy's sidecars cannot be removed from them).",
    ["policy", "kind", "state"],
)
STATES = ("matched", "updated", "ready", "conflicts", "blocked")
STEP = Gauge(
    "sidecar_operator_policy_step",
    "The step of updateStrategy.steps each policy's rollout is at (from 0; a policy without "
    "steps is always at 0).",
    ["policy"],
)
REACTION = Histogram(
    "sidecar_operator_reaction_seconds",
    "From the watch event of a workload created or changed to the write it made necessary "
    "(a new workload's sidecars, a repair); writes a policy's change made are not counted.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ADMISSION = Histogram(
    "sidecar_operator_admission_seconds",
    "How long admission took to decide what a workload gets (Kopf's JSON patch and TLS not "
    "included), by outcome: changed, unchanged, failed (let in as it was).",
    ["outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
CONDITION = Gauge(
    "sidecar_operator_policy_condition",
    "1 for each policy's status conditions as they stand (type Ready, Progressing or Degraded, "
    "its status and reason), as `kubectl describe sidecarpolicy` shows them.",
    ["policy", "type", "status", "reason"],
)
PROGRESS_DEADLINE = Gauge(
    "sidecar_operator_policy_progress_deadline_seconds",
    "Each policy's updateStrategy.progressDeadlineSeconds.",
    ["policy"],
)
LAST_PROGRESS = Gauge(
    "sidecar_operator_policy_last_progress_timestamp_seconds",
    "When each policy's rollout last moved (Unix time): a count of updated or ready workloads "
    "changed, or its revision, step or Progressing reason did.",
    ["policy"],
)
# What a replica says about each policy; a standby says nothing, so that summing over the
# replicas counts each policy once.
PER_POLICY = (WORKLOADS, STEP, CONDITION, PROGRESS_DEADLINE, LAST_PROGRESS)
_conditions: dict[str, set[tuple[str, str, str, str]]] = {}  # the CONDITION series set, by policy


def serve(port: int) -> None:
    start_http_server(port)


def set_counts(policy: str, kind: str, **counts: int) -> None:
    for state, value in counts.items():
        child = _counts.get((policy, kind, state))
        if child is None:
            child = _counts[policy, kind, state] = WORKLOADS.labels(policy, kind, state)
        child.set(value)


# The count series by their labels: looking a child up by its labels (a lock and a tuple) for
# each of five states on every pass was a few per cent of the operator's CPU under churn.
_counts: dict[tuple[str, str, str], Gauge] = {}


def forget(policy: str, kinds: Iterable[str], *, step: bool = False) -> None:
    """Drop the policy's counts for these kinds (and its step, once it is gone)."""
    for kind in kinds:
        for state in STATES:
            if _counts.pop((policy, kind, state), None) is not None:
                WORKLOADS.remove(policy, kind, state)
    if step:
        with contextlib.suppress(KeyError):
            STEP.remove(policy)
        for gauge in (PROGRESS_DEADLINE, LAST_PROGRESS):
            with contextlib.suppress(KeyError):
                gauge.remove(policy)
        set_conditions(policy, ())


def set_conditions(policy: str, conditions: Iterable[Mapping[str, Any]]) -> None:
    """The policy's conditions now: the series of the ones it no longer has are removed."""
    now = {
        (policy, str(c.get("type")), str(c.get("status")), str(c.get("reason"))) for c in conditions
    }
    before = _conditions.pop(policy, set())
    for labels in before - now:
        with contextlib.suppress(KeyError):  # cleared meanwhile by `stand_by`
            CONDITION.remove(*labels)
    for labels in now:
        CONDITION.labels(*labels).set(1)
    if now:
        _conditions[policy] = now


def stand_by() -> None:
    """This replica no longer writes: what it said about each policy is the active one's now."""
    for gauge in PER_POLICY:
        gauge.clear()
    _conditions.clear()
    _counts.clear()
