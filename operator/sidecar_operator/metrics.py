"""Prometheus metrics: what the operator did, what it cost, and where each policy stands."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

WRITES = Counter(
    "sidecar_operator_writes",
    "Server-side applies to Deployments, by policy, action (inject, update, repair, remove) and "
    "outcome (written, nothing, gone, rejected, conflict, failed).",
    ["policy", "action", "outcome"],
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
    "sidecar_operator_reconciles", "Reconcile passes over a policy's Deployments.", ["policy"]
)
PASS_SECONDS = Histogram(
    "sidecar_operator_reconcile_seconds",
    "How long one reconcile pass over a policy's Deployments took, writes included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CONFLICTS = Counter(
    "sidecar_operator_conflicts",
    "Deployments found newly skipped by a policy because of a clash or a rejected patch.",
    ["policy"],
)
API_ERRORS = Counter(
    "sidecar_operator_api_errors", "Error answers from the API server, by HTTP status.", ["status"]
)
DEPLOYMENTS = Gauge(
    "sidecar_operator_policy_deployments",
    "Deployments per policy and state: matched, updated, ready, conflicts.",
    ["policy", "state"],
)


def serve(port: int) -> None:
    start_http_server(port)


def set_counts(policy: str, **counts: int) -> None:
    for state, value in counts.items():
        DEPLOYMENTS.labels(policy=policy, state=state).set(value)


def forget(policy: str) -> None:
    for state in ("matched", "updated", "ready", "conflicts"):
        with contextlib.suppress(KeyError):
            DEPLOYMENTS.remove(policy, state)
