"""Admission: what the webhook adds to a create's latency, with 50 creates at once, and how many
rollouts new matched Deployments cause with admission and without.

Without admission a new Deployment is stored as written and the operator injects it a moment
later, so it rolls out twice: two ReplicaSets. With admission it is stored with its sidecars:
one. The webhook's latency is the API server's own histogram of its calls, over batches of 50
creates at once (0 replicas); its buckets are coarse (5, 25, 100, 500 ms, ...), so p50 and p99
are interpolated within them as Prometheus' `histogram_quantile` does. A create's latency as the
client sees it, with the webhook and without, is shown beside it.

`run_latency` measures the webhook against its floor in one run: a trivial webhook that allows
everything unchanged (`bench.trivial_webhook`, same certificate and host), then the operator's,
each over the same batches of creates, with N matched Deployments already in the cluster.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bench import cluster
from bench.cluster import ROOT
from bench.kube import Api, Tracker, families
from bench.measure import TIMEOUT, say
from bench.process import OperatorProcess, free_port
from bench.workload import POLICY, Workload, as_policy_object, deployment, policy
from sidecar_operator.api.models import Policy
from sidecar_operator.devcluster import admission

AT_ONCE = 50
BATCHES = 10
TARGET_P99_MS = 20.0
TARGET_OVER_FLOOR = 1.5  # the operator's webhook p50 and p99 against the trivial one's
WEBHOOK_SECONDS = "apiserver_admission_webhook_admission_duration_seconds"
CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
REVISION = f"policy.sidecars.dev/{POLICY}"


@dataclass
class AdmissionResult:
    n: int
    replica_sets: dict[str, int]  # "without" / "with" admission: ReplicaSets of N new Deployments
    create_ms: dict[str, dict[str, float]]  # p50 / p99 of a create, without and with
    webhook_calls: dict[float, float]  # the API server's histogram of them: bound -> count

    def summary(self) -> dict[str, Any]:
        webhook = {
            f"p{q}": round(quantile(self.webhook_calls, q / 100) * 1000, 1) for q in (50, 99)
        }
        return {
            "n": self.n,
            "at_once": AT_ONCE,
            "creates": AT_ONCE * BATCHES,
            "replica_sets": self.replica_sets,
            "replica_sets_met": self.replica_sets["with"] == self.n,
            "create_ms": self.create_ms,
            "webhook_ms": webhook,
            "target_p99_ms": TARGET_P99_MS,
            "latency_met": webhook["p99"] < TARGET_P99_MS,
            "webhook_calls": {
                f"<= {bound * 1000:g} ms": count for bound, count in self.webhook_calls.items()
            },
        }


async def run_admission(n: int) -> AdmissionResult:
    async with cluster.fresh() as (local, api):
        port = free_port()
        operator = OperatorProcess(
            local.kubeconfig,
            cluster.operator_log("admission"),
            args=("--webhook-port", str(port), "--webhook-certs", str(admission.certs(local))),
        )
        operator.start()
        try:
            await api.apply(f"{cluster.POLICIES}/{POLICY}", policy("1.0.0"), manager="bench")
            await operator.warm()
            without = await _creates(api, "latency-without")
            plain = await _replica_sets(api, Workload("without", n, replicas=1))

            configuration = admission.configuration(
                local, ROOT / "manifests" / "webhook.yaml", port=port
            )
            await api.request("POST", CONFIGURATIONS, configuration)
            await _admitting(api)
            before = await _webhook_buckets(api)
            admitted = await _creates(api, "latency-with")
            after = await _webhook_buckets(api)
            calls = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
            with_admission = await _replica_sets(api, Workload("with", n, replicas=1))
        finally:
            operator.stop()
    return AdmissionResult(
        n=n,
        replica_sets={"without": plain, "with": with_admission},
        create_ms={"without": without, "with": admitted},
        webhook_calls=calls,
    )


async def _creates(api: Api, namespace: str) -> dict[str, float]:
    """p50 and p99 of a create's latency, in milliseconds, over BATCHES batches of AT_ONCE."""
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    latencies: list[float] = []

    async def create(index: int) -> None:
        body = deployment(namespace, f"app-{index}", replicas=0, set_name=namespace)
        started = time.perf_counter()
        await api.request("POST", path, body)
        latencies.append((time.perf_counter() - started) * 1000)

    for batch in range(BATCHES):
        await asyncio.gather(*(create(batch * AT_ONCE + i) for i in range(AT_ONCE)))
        await asyncio.sleep(1)  # the operator's own writes for the batch do not overlap the next
    cuts = statistics.quantiles(latencies, n=100)
    result = {"p50": round(cuts[49], 1), "p99": round(cuts[98], 1)}
    say(f"admission: creates in {namespace}: p50 {result['p50']} ms, p99 {result['p99']} ms")
    return result


async def _replica_sets(api: Api, workload: Workload) -> int:
    """The ReplicaSets `workload`'s new Deployments have once each is injected and rolled out."""
    await workload.create(api)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        listing = await api.request(
            "GET", "/apis/apps/v1/deployments", params={"labelSelector": workload.selector}
        )
        if sum(map(_done, listing["items"])) == workload.count:
            break
        await asyncio.sleep(1)
    else:
        raise TimeoutError(f"{workload.set_name}: not every Deployment injected and rolled out")
    namespaces = set(workload.namespaces)
    replica_sets = await api.request("GET", "/apis/apps/v1/replicasets")
    count = sum(1 for rs in replica_sets["items"] if rs["metadata"]["namespace"] in namespaces)
    say(f"admission: {workload.count} new Deployments {workload.set_name} it: {count} ReplicaSets")
    return count


def _done(item: dict[str, Any]) -> bool:
    status, spec = item.get("status") or {}, item["spec"]
    return (
        REVISION in (item["metadata"].get("annotations") or {})
        and status.get("observedGeneration") == item["metadata"]["generation"]
        and status.get("updatedReplicas", 0) == spec["replicas"]
        and status.get("availableReplicas", 0) == spec["replicas"]
    )


async def _admitting(api: Api) -> None:
    """Until the API server calls the webhook: it picks a new configuration up a moment later."""
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "probe"}})
    path = "/apis/apps/v1/namespaces/probe/deployments"
    for attempt in range(100):
        body = deployment("probe", f"probe-{attempt}", replicas=0, set_name="probe")
        stored = await api.request("POST", path, body)
        if REVISION in (stored["metadata"].get("annotations") or {}):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the API server never called the webhook")


async def _webhook_buckets(api: Api) -> dict[float, float]:
    """The API server's cumulative histogram of the webhook's CREATE calls: bound -> count."""
    buckets: dict[float, float] = {}
    for family in families(await api.request("GET", "/metrics"), WEBHOOK_SECONDS):
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("operation") == "CREATE":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def quantile(buckets: dict[float, float], q: float) -> float:
    """The q-quantile of a cumulative histogram (bound -> count), interpolated linearly within
    its bucket as Prometheus' `histogram_quantile` does; the highest finite bound if it falls in
    the last, open bucket."""
    bounds = sorted(buckets)
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * (rank - below) / inside
        lower, below = bound, buckets[bound]
    return lower


@dataclass
class LatencyResult:
    """The webhook's calls as the API server times them, and a create's as the client does:
    the trivial webhook's and the operator's, with `n` matched Deployments in the cluster."""

    n: int
    webhook_calls: dict[str, dict[float, float]]  # "floor" / "operator": bound -> count
    create_ms: dict[str, dict[str, float]]

    def summary(self) -> dict[str, Any]:
        webhook = {
            who: {f"p{q}": round(quantile(calls, q / 100) * 1000, 1) for q in (50, 99)}
            for who, calls in self.webhook_calls.items()
        }
        ratios = {
            q: round(webhook["operator"][q] / webhook["floor"][q], 2)
            for q in ("p50", "p99")
            if webhook["floor"][q]
        }
        return {
            "n": self.n,
            "creates": AT_ONCE * BATCHES,
            "at_once": AT_ONCE,
            "webhook_ms": webhook,
            "create_ms": self.create_ms,
            "ratios": ratios,
            "target_ratio": TARGET_OVER_FLOOR,
            "met": len(ratios) == 2 and all(r <= TARGET_OVER_FLOOR for r in ratios.values()),
        }


async def run_latency(n: int) -> LatencyResult:
    calls: dict[str, dict[float, float]] = {}
    creates: dict[str, dict[str, float]] = {}
    async with cluster.fresh() as (local, api):
        main = Workload("main", n, replicas=0)
        await main.create(api)
        certs = admission.certs(local)
        port = free_port()
        operator = OperatorProcess(
            local.kubeconfig,
            cluster.operator_log(f"latency-{n}"),
            args=("--webhook-port", str(port), "--webhook-certs", str(certs)),
        )
        operator.start()
        floor_port = free_port()
        floor = subprocess.Popen(
            [sys.executable, "-m", "bench.trivial_webhook", str(floor_port), str(certs)]
        )
        try:
            await operator.warm()
            tracker = Tracker(api, main.selector, REVISION)
            await tracker.start()
            await api.apply(f"{cluster.POLICIES}/{POLICY}", policy("1.0.0"), manager="bench")
            tracker.expect(_revision_of(policy("1.0.0")), n)
            await tracker.wait(TIMEOUT)
            await tracker.stop()
            await operator.warm(at_least=0)
            for who, webhook_port in (("floor", floor_port), ("operator", port)):
                configuration = admission.configuration(
                    local, ROOT / "manifests" / "webhook.yaml", port=webhook_port
                )
                name = configuration["metadata"]["name"]
                await api.request("POST", CONFIGURATIONS, configuration)
                await _called(api, who)
                before = await _webhook_buckets(api)
                creates[who] = await _creates(api, f"latency-{who}")
                after = await _webhook_buckets(api)
                calls[who] = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
                await api.request("DELETE", f"{CONFIGURATIONS}/{name}")
        finally:
            floor.kill()
            floor.wait()
            operator.stop()
    result = LatencyResult(n, calls, creates)
    say(f"admission latency N={n}: {result.summary()}")
    return result


def _revision_of(body: dict[str, Any]) -> str:
    return Policy.from_object(as_policy_object(body, 1)).spec.revision


async def _called(api: Api, who: str) -> None:
    """Until the API server calls the new configuration's webhook (a moment after it exists):
    its histogram counts a call."""
    namespace = f"probe-{who}"
    await api.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    before = sum((await _webhook_buckets(api)).values())
    for attempt in range(100):
        body = deployment(namespace, f"probe-{attempt}", replicas=0, set_name="probe")
        await api.request("POST", path, body)
        if sum((await _webhook_buckets(api)).values()) > before:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the API server never called the {who} webhook")
