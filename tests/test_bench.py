"""The benchmark's own arithmetic (when the watch says a rollout is done, the report) and its
write counts against a real API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bench import report
from bench.admission import AdmissionResult, LatencyResult, quantile
from bench.churn import Churned, ChurnResult
from bench.defaults import DefaultsResult
from bench.kube import Tracker, write_counts
from bench.measure import other_writes
from bench.peers.scenario import PeerResult
from bench.run import Phase, SizeResult, _percentile, delta
from bench.waves import WavesResult

from tests.kube import Kubectl

ANNOTATION = "policy.sidecars.dev/bench"


def obj(name: str, revision: str | None) -> dict[str, Any]:
    annotations = {ANNOTATION: revision} if revision else {}
    return {
        "metadata": {"name": name, "namespace": "ns", "annotations": annotations, "generation": 1},
        "spec": {"replicas": 0},
        "status": {"observedGeneration": 1},
    }


METRICS = """\
# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{verb="PATCH",resource="deployments",le="0.1"} 7
# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="deployments",subresource="",verb="APPLY"} 5
apiserver_request_total{code="409",resource="deployments",subresource="",verb="APPLY"} 2
apiserver_request_total{code="200",resource="deployments",subresource="status",verb="PUT"} 3
apiserver_request_total{code="200",resource="deployments",subresource="",verb="GET"} 11
apiserver_request_total{code="201",resource="events",subresource="",verb="POST"} 4
# HELP etcd_requests_total Etcd request counts.
# TYPE etcd_requests_total counter
etcd_requests_total{operation="update",type="deployments"} 40
"""


def test_write_counts_are_the_api_servers_write_verbs_by_resource_only() -> None:
    assert write_counts(METRICS) == {"APPLY deployments": 7.0, "PUT deployments/status": 3.0}


def test_write_counts_see_each_write_verb_of_a_real_api_server(kubectl: Kubectl) -> None:
    """The verbs as the API server labels them (an update is PUT): PodTemplates, which nothing
    else in the test cluster writes, get one apply, one replace and one patch."""
    template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "counted"},
        "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}},
    }
    before = write_counts(kubectl("get", "--raw", "/metrics").stdout)
    kubectl.apply(json.dumps(template), "--server-side")
    current = kubectl.json("podtemplate", "counted")
    current["metadata"]["labels"] = {"replaced": "yes"}
    kubectl("replace", "-f", "-", input=json.dumps(current))
    patch = '{"metadata":{"labels":{"patched":"yes"}}}'
    kubectl("patch", "podtemplate", "counted", "--type=merge", "-p", patch)
    after = write_counts(kubectl("get", "--raw", "/metrics").stdout)
    changed = {k: v for k, v in delta(before, after).items() if k.endswith(" podtemplates")}
    assert changed == {"APPLY podtemplates": 1, "PUT podtemplates": 1, "PATCH podtemplates": 1}


def test_the_tracker_is_done_when_the_last_deployment_carries_the_revision() -> None:
    tracker = Tracker(api=None, label_selector="", annotation=ANNOTATION)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        tracker._update("ADDED", obj(name, None))
    tracker.expect("r1", 3)
    tracker._update("MODIFIED", obj("a", "r1"))
    tracker._update("MODIFIED", obj("a", "r1"))  # the same again counts once
    tracker._update("MODIFIED", obj("b", "r1"))
    assert not tracker.done.is_set()
    tracker._update("MODIFIED", obj("c", "r1"))
    assert tracker.done.is_set()

    tracker.expect(None, 3)  # removal: done when none carries it
    tracker._update("MODIFIED", obj("a", None))
    tracker._update("MODIFIED", obj("b", None))
    assert not tracker.done.is_set()
    tracker._update("MODIFIED", obj("c", None))
    assert tracker.done.is_set()


def test_deployment_writes_are_every_verb_on_the_deployment_and_puts_are_also_shown() -> None:
    counts = {"APPLY deployments": 5.0, "PUT deployments": 1.0, "PUT deployments/status": 7.0}
    summary = Phase(1.0, counts).summary()
    assert (summary["deployment_writes"], summary["deployment_puts"]) == (6, 1)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _percentile(values, 50) == 50.0
    assert _percentile(values, 95) == 95.0
    assert _percentile([0.3], 95) == 0.3


def test_the_report_shows_ratio_and_writes_json_and_plot(tmp_path: Path) -> None:
    result = SizeResult(n=100, replicas=1, concurrency=64)
    for name in report.PHASES:
        for seconds in (1.0, 2.0, 3.0):
            result.limit[name].append(Phase(seconds, {"APPLY deployments": 100}, 30 + seconds))
            result.operator[name].append(
                Phase(
                    seconds * 1.2,
                    {"APPLY deployments": 100, "PATCH sidecarpolicies/status": 3},
                    40 + seconds,
                )
            )
    result.reaction = [0.1, 0.2, 0.3]
    result.idle_writes = {"PATCH sidecarpolicies/status": 1}
    result.restart_writes = {}
    result.cpu_seconds = [5.0]
    without_extras = SizeResult(n=5000, replicas=0, concurrency=64)
    without_extras.limit, without_extras.operator = result.limit, result.operator
    without_extras.cpu_seconds = [9.0]
    summary = {
        "commit": "abc1234-dirty",
        "date": "2026-12-02 14:00 UTC",
        "machine": "test",
        "rounds": 3,
        "seconds": 60,
        "sizes": [result.summary(), without_extras.summary()],
    }
    table = report.write(summary, tmp_path)
    assert table.startswith("At commit `abc1234-dirty`, 2026-12-02 14:00 UTC, test, 3 rounds")
    assert "| 100 | inject | 2.00 (1.00-3.00) | 2.40 (1.20-3.60) | 1.20 | 100 / 100 | 3 |" in table
    assert (
        "| 100 | 1 | 64 | 0 Deployment, 1 status, 0 policy | 0 Deployment, 0 status, 0 policy "
        "| 0 | 5 | 0.20 / 0.30 | 32 / 42 |"
    ) in table
    assert "| 5000 | 0 | 64 | - | - | 0 | 9 | - | 32 / 42 |" in table
    assert json.loads((tmp_path / "results.json").read_text())["sizes"][0]["n"] == 100
    assert (tmp_path / "rollout.png").read_bytes()[:4] == b"\x89PNG"


def test_webhook_quantiles_are_interpolated_within_the_api_servers_buckets() -> None:
    calls = {0.005: 100.0, 0.025: 300.0, 0.1: 400.0, float("inf"): 400.0}
    assert quantile(calls, 0.25) == 0.005
    assert quantile(calls, 0.5) == pytest.approx(0.015)  # half way into the 5-25 ms bucket
    assert quantile(calls, 0.99) == pytest.approx(0.097)
    assert quantile({0.005: 0.0, float("inf"): 10.0}, 0.5) == 0.005  # in the open bucket


def test_the_admission_report_judges_the_webhooks_p99_and_the_replica_sets() -> None:
    calls = {0.005: 40.0, 0.025: 500.0, 0.1: 500.0, float("inf"): 500.0}
    creates = {"without": {"p50": 9.0, "p99": 30.0}, "with": {"p50": 12.0, "p99": 41.5}}
    result = AdmissionResult(1000, {"without": 1100, "with": 1000}, creates, calls).summary()
    assert result["webhook_ms"] == {"p50": 14.1, "p99": 24.8}
    assert not result["latency_met"] and result["replica_sets_met"]
    table = report.markdown(
        {"commit": "abc", "date": "d", "machine": "m", "rounds": 1, "seconds": 1, "sizes": []}
        | {"admission": result}
    )
    assert "| webhook call p50 / p99, ms (API server) | - | 14.1 / 24.8 | p99 < 20 | NO |" in table
    assert "| create p50 / p99, ms (client) | 9 / 30 | 12 / 41.5 | - | - |" in table
    assert "| ReplicaSets of 1000 new Deployments | 1100 | 1000 | 1000 with | yes |" in table
    assert "(cumulative): 40 <= 5 ms, 500 <= 25 ms, 500 <= 100 ms, 500 <= inf ms." in table
    fast = {0.005: 495.0, 0.025: 500.0, float("inf"): 500.0}
    assert AdmissionResult(1000, {"without": 1100, "with": 1001}, creates, fast).summary()[
        "latency_met"
    ]


def test_a_peers_other_writes_leave_out_kubernetes_own_and_the_deployments() -> None:
    counts = {
        "PATCH deployments": 100.0,
        "PUT deployments/status": 250.0,
        "POST replicasets": 100.0,
        "PUT replicasets/status": 300.0,
        "POST pods": 100.0,
        "POST pods/binding": 100.0,
        "PUT leases": 40.0,
        "PATCH nodes/status": 6.0,
        "POST events": 30.0,
        "POST updaterequests": 100.0,
        "PATCH sidecarpolicies": 2.0,
    }
    assert other_writes(counts) == 132


def peer(name: str, n: int, seconds: float, writes: int, cpu: float) -> PeerResult:
    result = PeerResult(name, n)
    for phase in ("inject", "update"):
        counts = {"PATCH deployments": float(writes), "POST updaterequests": float(n)}
        result.phases[phase].append(Phase(seconds, counts, seconds + 4, cpu))
    result.removal_left, result.rest_writes = [n], [{"PATCH deployments": 6.0, "PUT leases": 9.0}]
    result.cpu_seconds, result.peak_rss_mb = [3 * cpu], 141.4
    return result


def test_the_peers_stand_beside_the_operator_with_their_targets(tmp_path: Path) -> None:
    """At N=1000 the operator is a third of the textbook peer's time but not of Kyverno's, and
    writes exactly N where both write at least that: the report says which target is met."""
    size = SizeResult(n=1000, replicas=1, concurrency=512)
    for name in report.PHASES:
        size.limit[name].append(Phase(2.0, {"APPLY deployments": 1000}, 10))
        counts = {"APPLY deployments": 1000.0, "POST events": 1000.0}
        size.operator[name].append(Phase(4.0, counts, 12, 9.5))
    size.idle_writes, size.restart_writes = {"PATCH sidecarpolicies/status": 1}, {}
    size.cpu_seconds = [30.0]
    size.peers = {
        "kopf-textbook": peer("kopf-textbook", 1000, 60.0, 3000, 40.0),
        "kyverno": peer("kyverno", 1000, 10.0, 1000, 9.0),
    }
    table = report.write(
        {"commit": "abc", "date": "d", "machine": "m", "rounds": 1, "seconds": 1}
        | {"sizes": [size.summary()]},
        tmp_path,
    )
    assert (
        "| 1000 | inject | 2.00 (2.00-2.00) | 4.00 (4.00-4.00) | 60.00 (60.00-60.00) "
        "| 10.00 (10.00-10.00) |"
    ) in table
    assert (
        "| 1000 | remove | 2.00 (2.00-2.00) | 4.00 (4.00-4.00) | 1000 of 1000 left 30 s on "
        in table
    )
    assert (
        "| operator | 1000 | 1000 / 1000 | 1000 / 1000 | 9.5 / 9.5 | 0 of 1000 | 1 | 30 |" in table
    )
    assert (
        "| kyverno | 1000 | 1000 / 1000 | 1000 / 1000 | 9.0 / 9.0 | 1000 of 1000 | 6 | 27 | 141 |"
    ) in table
    assert (
        "| inject s (median) | 4.00 | kopf-textbook: 60.0 (0.067x), kyverno: 10.0 (0.400x) "
        "| <= 1/3 of each | NO |"
    ) in table
    assert "| update: Deployment writes | 1000 | kopf-textbook: 3000, kyverno: 1000 " in table
    assert "| exactly 1000, <= theirs | yes |" in table
    assert "kopf-textbook: 40.0, kyverno: 9.0 | below each | NO |" in table
    assert "| kopf-textbook: 1000, kyverno: 1000 | 0 in exactly 1000 writes | yes |" in table
    assert (tmp_path / "rollout.png").read_bytes()[:4] == b"\x89PNG"


def test_the_every_default_and_waves_reports_judge_their_targets() -> None:
    quiet = DefaultsResult(1000, 3.2, {"POST events": 4.0}).summary()
    noisy = DefaultsResult(1000, 3.2, {"PATCH deployments": 5000.0}).summary()
    assert quiet["met"] and not noisy["met"]
    # judged by each step's median over the rounds: one slow round of step 1 does not count
    stepped = WavesResult(
        1000,
        steps=[[1.1, 2.0, 3.6], [2.9, 2.0, 3.7], [1.0, 1.9, 3.5]],
        peers=[[1.0, 2.0, 2.5], [1.0, 2.1, 2.5], [0.9, 1.8, 2.6]],
    ).summary()
    assert stepped["ratios"] == [1.1, 1.0, 1.44] and not stepped["met"]
    assert stepped["rounds"] == 3 and stepped["each_round"][1]["step_seconds"][0] == 2.9
    base = {"commit": "abc", "date": "d", "machine": "m", "rounds": 1, "seconds": 1, "sizes": []}
    table = report.markdown(base | {"defaults": quiet, "waves": stepped})
    assert (
        "| one policy, every optional field empty or default | 3.2 s "
        "| 0 Deployment, 0 status, 0 policy | 0 Deployment, 0 status | yes |"
    ) in table
    assert "| 1 | 1.1 | 1 | 1.10 | <= 1.2 | yes |" in table
    assert "| 3 | 3.6 | 2.5 | 1.44 | <= 1.2 | NO |" in table


def test_the_churn_report_judges_cpu_per_create_and_p95_flat_in_n() -> None:
    def churned(n: int, p95: float, cpu: float) -> dict[str, Any]:
        result = ChurnResult(n, inject_seconds=10.0, rss_mb=100.0)
        at = [index / 20 for index in range(20)]
        result.floor = Churned([0.01] * 19 + [0.02], cpu_seconds=0.02, created_at=at)
        result.operator = Churned([0.05] * 19 + [p95], cpu_seconds=cpu, created_at=at)
        return result.summary()

    results = [churned(1000, 0.2, 0.06), churned(5000, 0.4, 0.06), churned(20000, 0.25, 0.2)]
    assert results[0]["operator"] == {
        "creates": 20,
        "p50": 0.05,
        "p95": 0.05,
        "max": 0.2,
        "cpu_ms_per_create": 3.0,
        "passes_per_create": None,
        "slowest": [(0.9, 0.2)] + [(round(i / 20, 1), 0.05) for i in range(9)],
    }
    table = "\n".join(report._churn(results))
    assert "| 1000 | floor | 20 | 0.01 | 0.01 | 0.02 | 1 | - |  |  |" in table
    assert "| 1000 | operator | 20 | 0.05 | 0.05 | 0.2 | 3 | - | CPU <= 5 ms | yes |" in table
    assert (
        "| 5000 | operator | 20 | 0.05 | 0.05 | 0.4 | 3 | - | CPU <= 5 ms, p95 <= 0.3 s | yes |"
        in table
    )
    assert (
        "| 20000 | operator | 20 | 0.05 | 0.05 | 0.25 | 10 | - | CPU <= 5 ms, p95 <= 1.5 x" in table
    )
    assert table.endswith("| 20000 | 10 | 100 |") and "NO |" in table


def test_the_admission_latency_is_judged_against_the_trivial_webhook() -> None:
    floor = {0.005: 400.0, 0.025: 500.0, float("inf"): 500.0}
    slow = {0.005: 100.0, 0.025: 450.0, 0.1: 500.0, float("inf"): 500.0}
    creates = {who: {"p50": 9.0, "p99": 30.0} for who in ("floor", "operator")}
    even = LatencyResult(5000, {"floor": floor, "operator": floor}, creates).summary()
    assert even["ratios"] == {"p50": 1.0, "p99": 1.0} and even["met"]
    behind = LatencyResult(5000, {"floor": floor, "operator": slow}, creates).summary()
    assert not behind["met"]
    table = "\n".join(report._latency([even, behind]))
    assert "| 5000 | 3.1 / 24 | 3.1 / 24 | 1 / 1 | 9 / 30, 9 / 30 | <= 1.5x | yes |" in table
    assert table.endswith("NO |")
