"""Prometheus metrics, scraped from the running operator and checked against what it did."""

from __future__ import annotations

import re
import time

from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import FLUENT_BIT, LOG_VOLUME, Policies, deployment, ready

WRITES = "sidecar_operator_writes_total"
WORKLOADS = "sidecar_operator_policy_workloads"


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_count_what_the_operator_did(
    kubectl: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    kubectl.apply(deployment("web-0"))
    kubectl.apply(deployment("web-1"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=2), what="policy Ready")

    def scraped() -> str | None:
        text = operator.metrics()
        ready_gauge = _value(text, WORKLOADS, policy=name, kind="Deployment", state="ready")
        return text if ready_gauge == 2 else None

    text = eventually(scraped, what="gauges caught up")
    written = _value(
        text, WRITES, policy=name, kind="Deployment", action="inject", outcome="written"
    )
    assert written == 2
    # Only the kinds the policy targets are counted.
    assert _value(text, WORKLOADS, policy=name, kind="StatefulSet", state="matched") is None
    assert _value(text, WORKLOADS, policy=name, kind="Deployment", state="matched") == 2
    assert _value(text, WORKLOADS, policy=name, kind="Deployment", state="conflicts") == 0
    assert (_value(text, "sidecar_operator_reconciles_total", policy=name) or 0) >= 1
    assert "sidecar_operator_reconcile_seconds_bucket" in text
    # The conditions as `kubectl describe` shows them, which the alert rules read.
    condition = "sidecar_operator_policy_condition"
    assert _value(text, condition, policy=name, type="Ready", status="True") == 1
    assert _value(text, condition, policy=name, type="Ready", status="False") is None
    assert _value(text, condition, policy=name, type="Degraded", reason="NoConflicts") == 1
    deadline = "sidecar_operator_policy_progress_deadline_seconds"
    assert _value(text, deadline, policy=name) == 600
    moved = _value(text, "sidecar_operator_policy_last_progress_timestamp_seconds", policy=name)
    assert moved is not None and abs(moved - time.time()) < 300

    policies.delete(name)
    after = operator.metrics()
    assert (
        _value(
            after, "sidecar_operator_writes_total", policy=name, action="remove", outcome="written"
        )
        == 2
    )
    assert _value(after, WORKLOADS, policy=name, kind="Deployment", state="matched") is None
    assert _value(after, condition, policy=name, type="Ready") is None
    assert _value(after, deadline, policy=name) is None


def test_a_policy_that_loses_a_clash_labels_its_release_as_a_removal(
    kubectl: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    """Label values stay a fixed set: a conflict's message once became the `action` label."""
    kubectl.apply(deployment("web"))
    low = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], priority=1)
    eventually(lambda: ready(policies, low, matched=1), what="the first policy injected")
    high = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], priority=5)
    eventually(lambda: ready(policies, high, matched=1), what="the winner injected")
    eventually(lambda: policies.status(low).get("conflicts") == 1, what="the loser let go")

    # The status counts the conflict once planned; the release is written after it.
    def released() -> str | None:
        text = operator.metrics()
        return (
            text
            if _value(text, "sidecar_operator_writes_total", policy=low, action="remove")
            else None
        )

    text = eventually(released, what="the loser's release written")
    actions = {
        found["action"]
        for line in text.splitlines()
        if line.startswith("sidecar_operator_writes_total{")
        for found in [dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))]
    }
    assert actions <= {"inject", "update", "repair", "remove", "adopt", "none"}, actions
    assert (
        _value(
            text, "sidecar_operator_writes_total", policy=low, action="remove", outcome="written"
        )
        == 1
    )
    degraded = {"type": "Degraded", "status": "True", "reason": "Conflicts"}
    assert _value(text, "sidecar_operator_policy_condition", policy=low, **degraded) == 1
    assert _value(text, "sidecar_operator_policy_condition", policy=high, **degraded) is None
