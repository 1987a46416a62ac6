"""Prometheus metrics: what the operator did, what it cost, and where each policy stands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

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


def serve(port: int) -> None:
    start_http_server(port)


def set_counts(policy: str, kind: str, **counts: int) -> None:
    for state, value in counts.items():
        WORKLOADS.labels(policy=policy, kind=kind, state=state).set(value)


def forget(policy: str, kinds: Iterable[str], *, step: bool = False) -> None:
    """Drop the policy's counts for these kinds (and its step, once it is gone)."""
    for kind in kinds:
        for state in STATES:
            with contextlib.suppress(KeyError):
                WORKLOADS.remove(policy, kind, state)
    if step:
        with contextlib.suppress(KeyError):
            STEP.remove(policy)
