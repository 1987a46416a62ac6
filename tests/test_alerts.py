"""The alert rules and the dashboard: promtool checks the rules and runs, for each alert, series
that must fire it and series that must not; the dashboard's queries parse; and every metric
either names is one the running operator exports."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.conftest import OperatorProcess
from tests.kube import REPO, eventually
from tests.tools import promtool, run

CHART = REPO / "charts" / "sidecar-operator"
RULES = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
RUNBOOK = REPO / "docs" / "runbook.md"


@dataclass(frozen=True)
class Case:
    """Series (promtool's expanding notation, one sample a minute) and, at `at`, the labels of
    each instance of `alert` expected to fire (none: it must not)."""

    alert: str
    what: str
    series: dict[str, str]
    at: str
    fires: list[dict[str, str]] = field(default_factory=list)


PROGRESSING = (
    'sidecar_operator_policy_condition{policy="logs", type="Progressing", status="%s", reason="%s"}'
)
DEGRADED = (
    'sidecar_operator_policy_condition{policy="logs", type="Degraded", status="%s", reason="%s"}'
)
LAST = 'sidecar_operator_policy_last_progress_timestamp_seconds{policy="logs"}'
DEADLINE = 'sidecar_operator_policy_progress_deadline_seconds{policy="logs"}'
WRITES = (
    'sidecar_operator_writes_total{policy="logs", kind="Deployment", action="inject", outcome="%s"}'
)
AFTER = 'sidecar_operator_injected_after_creation_total{policy="logs", kind="Deployment"}'
LOGS = {"policy": "logs"}

CASES = [
    Case(
        "SidecarOperatorNoActiveReplica",
        "both replicas stand by",
        {
            'sidecar_operator_active{instance="a"}': "0x10",
            'sidecar_operator_active{instance="b"}': "0x10",
        },
        "6m",
        [{}],
    ),
    Case(
        "SidecarOperatorNoActiveReplica",
        "no replica scraped at all",
        {'up{job="other"}': "1x10"},
        "6m",
        [{}],
    ),
    Case(
        "SidecarOperatorNoActiveReplica",
        "one active, one standing by",
        {
            'sidecar_operator_active{instance="a"}': "1x10",
            'sidecar_operator_active{instance="b"}': "0x10",
        },
        "6m",
    ),
    Case(
        "SidecarOperatorNoActiveReplica",
        "a takeover of two minutes",
        {
            'sidecar_operator_active{instance="a"}': "1 1 0 0 _x6",
            'sidecar_operator_active{instance="b"}': "0x4 1x6",
        },
        "6m",
    ),
    Case(
        "SidecarPolicyRolloutHalted",
        "halted",
        {PROGRESSING % ("False", "RolloutHalted"): "1x5"},
        "3m",
        [LOGS],
    ),
    Case(
        "SidecarPolicyRolloutHalted",
        "rolling out",
        {PROGRESSING % ("True", "RollingOut"): "1x5"},
        "3m",
    ),
    Case(
        "SidecarPolicyDegraded",
        "conflicts for 16 minutes",
        {DEGRADED % ("True", "Conflicts"): "1x20"},
        "16m",
        [{"policy": "logs", "reason": "Conflicts"}],
    ),
    Case(
        "SidecarPolicyDegraded",
        "conflicts for 10 minutes, then resolved",
        {
            DEGRADED % ("True", "Conflicts"): "1x10 _x10",
            DEGRADED % ("False", "NoConflicts"): "_x10 1x10",
        },
        "16m",
    ),
    Case(
        "SidecarPolicyNoProgress",
        "rolling out, nothing moved for 15 minutes, deadline 10",
        {LAST: "0x20", DEADLINE: "600x20", PROGRESSING % ("True", "RollingOut"): "1x20"},
        "15m",
        [LOGS],
    ),
    Case(
        "SidecarPolicyNoProgress",
        "rolling out, moving every minute",
        {LAST: "0+60x20", DEADLINE: "600x20", PROGRESSING % ("True", "RollingOut"): "1x20"},
        "15m",
    ),
    Case(
        "SidecarPolicyNoProgress",
        "waiting for a promotion since long ago",
        {LAST: "0x20", DEADLINE: "600x20", PROGRESSING % ("False", "WaitingForPromotion"): "1x20"},
        "15m",
    ),
    Case(
        "SidecarOperatorWritesFailing",
        "failing for 20 minutes",
        {WRITES % "failed": "0+10x30"},
        "20m",
        [LOGS],
    ),
    Case(
        "SidecarOperatorWritesFailing",
        "failed for 5 minutes, then went through",
        {WRITES % "failed": "0+10x5 50x25", WRITES % "written": "0x5 0+10x25"},
        "20m",
    ),
    Case(
        "SidecarOperatorAdmissionMissed",
        "one workload injected after creation",
        {AFTER: "0 0 0 1x10"},
        "5m",
        [{"policy": "logs", "kind": "Deployment"}],
    ),
    Case("SidecarOperatorAdmissionMissed", "none", {AFTER: "0x30"}, "20m"),
    Case("SidecarOperatorAdmissionMissed", "one, half an hour ago", {AFTER: "0 1x40"}, "30m"),
]


def _rules() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _annotations(rule: dict[str, object], labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for an alert with these labels."""
    raw = rule["annotations"]
    assert isinstance(raw, dict)
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in raw.items()
    }


def test_the_rules_file_is_valid() -> None:
    checked = run(promtool(), "check", "rules", str(RULES))
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout


def test_each_alert_fires_on_its_series_and_not_on_the_others(tmp_path: Path) -> None:
    rules = {rule["alert"]: rule for rule in _rules()}
    assert {case.alert for case in CASES if case.fires} == set(rules), "a case that fires each"
    assert {case.alert for case in CASES if not case.fires} == set(rules), "and one that must not"
    tests = []
    for case in CASES:
        rule = rules[case.alert]
        severity = rule["labels"]["severity"]  # type: ignore[index]
        tests.append(
            {
                "name": f"{case.alert}: {case.what}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": case.at,
                        "alertname": case.alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, "severity": severity},
                                "exp_annotations": _annotations(rule, labels),
                            }
                            for labels in case.fires
                        ],
                    }
                ],
            }
        )
    unit = tmp_path / "alerts_test.yaml"
    unit.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "tests": tests}))
    run(promtool(), "test", "rules", str(unit))


def test_every_alert_says_what_and_links_its_runbook_section() -> None:
    headings = set(re.findall(r"^## (\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE))
    for rule in _rules():
        alert = str(rule["alert"])
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations["summary"] and annotations["description"], alert
        assert annotations["runbook_url"].endswith(f"docs/runbook.md#{alert.lower()}"), alert
        assert alert in headings, f"docs/runbook.md has no section for {alert}"
        if "policy" in str(rule["expr"]):
            assert "{{ $labels.policy }}" in annotations["description"], alert


def _dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses them as recording rules, Grafana's variables set as it would."""
    queries = _dashboard_queries()
    assert len(queries) >= 15
    values = {"$__rate_interval": "5m", "$policy": ".*", "$job": ".*"}
    rules = [
        {
            "record": f"dashboard:query_{index}",
            "expr": re.sub(r"\$\w+", lambda m: values[m.group(0)], query),
        }
        for index, query in enumerate(queries)
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = run(promtool(), "check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_named_is_one_the_operator_exports(
    source: str, operator: OperatorProcess
) -> None:
    """Against the running operator's /metrics: every family it registers is listed there
    (with HELP and TYPE) before its first sample."""

    def metrics() -> str | None:
        try:
            return operator.metrics()
        except OSError:  # still starting
            return None

    exported = set()
    text = eventually(metrics, what="the operator's /metrics")
    for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, flags=re.MULTILINE):
        name = name.removesuffix("_total") if kind == "counter" else name
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
        }.get(kind, [""])
        exported |= {name + suffix for suffix in suffixes}
    queries = (
        " ".join(str(rule["expr"]) for rule in _rules())
        if source == "rules"
        else " ".join(_dashboard_queries())
    )
    named = set(re.findall(r"\b(?:sidecar_operator|process)_[a-z_]+\b", queries))
    assert named, "names at least one metric"
    assert named <= exported, sorted(named - exported)
