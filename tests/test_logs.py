"""Logs: key-value on a terminal, JSON in a cluster, Kopf's own included."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from sidecar_operator import logs
from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import FLUENT_BIT, Policies, deployment, has_container


def test_console_format_is_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("console")
    structlog.get_logger("sidecar_operator.test").info(
        "Applied", policy="log-shipper", kind="Deployment", namespace="shop", workload="web"
    )
    logging.getLogger("kopf.activities.startup").warning("Activity succeeded.")
    lines = capsys.readouterr().err.splitlines()
    assert "Applied" in lines[0]
    assert "policy=log-shipper" in lines[0] and "workload=web" in lines[0]
    assert "Activity succeeded." in lines[1] and "kopf.activities.startup" in lines[1]


def test_the_running_operator_logs_json_with_object_keys(
    kubectl: Kubectl, policies: Policies, operator: OperatorProcess, namespace: str
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[{"name": "app-logs", "emptyDir": {}}])
    eventually(lambda: has_container(kubectl, "web", "fluent-bit"), what="injection")

    def applied() -> list[dict[str, object]]:
        records = [json.loads(line) for line in operator.log().splitlines() if line.strip()]
        return [r for r in records if r.get("event") == "Applied" and r.get("policy") == name]

    record = eventually(applied, what="an Applied log line")[0]
    assert record["namespace"] == namespace and record["workload"] == "web"
    assert record["kind"] == "Deployment"
    assert record["level"] == "info" and "timestamp" in record
    every = [json.loads(line) for line in operator.log().splitlines() if line.strip()]
    assert any(str(r.get("logger", "")).startswith("kopf") for r in every)
