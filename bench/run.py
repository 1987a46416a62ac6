"""One benchmark size: N Deployments on a fresh local cluster, the limit's and the operator's
rollouts alternated, API writes counted by the apiserver, the operator's memory and CPU."""

from __future__ import annotations

import asyncio
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.kube import WRITE_VERBS, Api, ApiError, Tracker, run_bounded
from bench.process import OperatorProcess
from bench.workload import POLICY, Workload, as_policy_object, policy
from sidecar_operator import devcluster
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner
from sidecar_operator.core.ownership import field_manager, revision_annotation
from sidecar_operator.devcluster import binaries

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "sidecarpolicies.sidecars.dev.yaml"
KUBECTL = Path(sys.executable).with_name("kubectl")
IMAGES = ("3.1.9", "3.2.0")  # the sidecar's tag at injection, and after the update
PHASES = ("inject", "update", "remove")
TIMEOUT = 900.0
STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr, stamped with the run's elapsed time: where a run's minutes go."""
    elapsed = int(time.monotonic() - STARTED)
    print(f"bench {elapsed // 60:02d}:{elapsed % 60:02d} {message}", file=sys.stderr, flush=True)


Counts = dict[str, float]


def delta(before: Counts, after: Counts) -> Counts:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }


def deployment_writes(counts: Counts) -> int:
    """Every write to a Deployment itself (apply, patch or full PUT), not to its status: the
    Deployment controller writes only the status, so in a phase these are the writer's."""
    return int(sum(counts.get(f"{verb} deployments", 0) for verb in WRITE_VERBS))


def status_writes(counts: Counts) -> int:
    return int(sum(v for k, v in counts.items() if k.endswith("sidecarpolicies/status")))


def policy_writes(counts: Counts) -> int:
    """Writes to SidecarPolicy objects (not status): the user's own apply and the finalizer."""
    return int(sum(v for k, v in counts.items() if k.endswith(" sidecarpolicies")))


@dataclass
class Phase:
    seconds: float
    counts: Counts
    settled: float = 0.0  # from the phase's start until the cluster had settled: its wall time

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "settled_seconds": round(self.settled, 1),
            "deployment_writes": deployment_writes(self.counts),
            "deployment_puts": int(self.counts.get("PUT deployments", 0)),
            "status_writes": status_writes(self.counts),
            "policy_writes": policy_writes(self.counts),
        }


@dataclass
class SizeResult:
    n: int
    replicas: int
    concurrency: int = 0
    tuning: dict[int, float] = field(default_factory=dict)
    limit: dict[str, list[Phase]] = field(default_factory=lambda: {p: [] for p in PHASES})
    operator: dict[str, list[Phase]] = field(default_factory=lambda: {p: [] for p in PHASES})
    idle_writes: Counts | None = None  # measured at one size only (see `run_size`)
    restart_writes: Counts | None = None
    reaction: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    cpu_seconds: list[float] = field(default_factory=list)
    warm_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def spread(values: list[float]) -> dict[str, float]:
            return {
                "median": round(statistics.median(values), 3),
                "min": round(min(values), 3),
                "max": round(max(values), 3),
            }

        phases = {}
        for name in PHASES:
            limit = [p.seconds for p in self.limit[name]]
            ours = [p.seconds for p in self.operator[name]]
            phases[name] = {
                "limit": spread(limit),
                "operator": spread(ours),
                "ratio": round(statistics.median(ours) / statistics.median(limit), 2),
                "limit_runs": [p.summary() for p in self.limit[name]],
                "operator_runs": [p.summary() for p in self.operator[name]],
            }
        reaction = sorted(self.reaction)
        settled = {
            who: round(statistics.mean(p.settled for name in PHASES for p in runs[name]), 1)
            for who, runs in (("limit", self.limit), ("operator", self.operator))
        }
        return {
            "n": self.n,
            "namespaces": len(Workload("main", self.n, self.replicas).namespaces),
            "replicas": self.replicas,
            "limit_concurrency": self.concurrency,
            "limit_tuning_seconds": {str(k): round(v, 3) for k, v in self.tuning.items()},
            "phases": phases,
            "mean_settled_seconds": settled,
            "idle_60s_writes": _ours(self.idle_writes),
            "restart_writes": _ours(self.restart_writes),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "cpu_seconds_per_round": [round(c, 1) for c in self.cpu_seconds],
            "warm_seconds": [round(w, 1) for w in self.warm_seconds],
            "reaction_seconds": {
                "p50": round(_percentile(reaction, 50), 3),
                "p95": round(_percentile(reaction, 95), 3),
                "count": len(reaction),
                "samples": [round(r, 3) for r in self.reaction],
            }
            if reaction
            else None,
        }


def _ours(counts: Counts | None) -> dict[str, int] | None:
    if counts is None:
        return None
    return {
        "deployment_writes": deployment_writes(counts),
        "status_writes": status_writes(counts),
        "policy_writes": policy_writes(counts),
    }


def _percentile(values: list[float], pct: float) -> float:
    """Nearest rank of sorted `values`."""
    index = max(0, min(len(values) - 1, math.ceil(pct / 100 * len(values)) - 1))
    return values[index]


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")


class Bench:
    """Everything one size needs, on one fresh cluster."""

    def __init__(self, api: Api, cluster: devcluster.Cluster, workload: Workload) -> None:
        self.api = api
        self.cluster = cluster
        self.workload = workload
        self.tracker = Tracker(api, workload.selector, revision_annotation(POLICY))
        self.revisions = [
            Policy.from_object(as_policy_object(policy(tag), 1)).spec.revision for tag in IMAGES
        ]
        self.log = binaries.cache_root() / "bench" / f"operator-{workload.count}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)

    async def measure(
        self,
        action: Callable[[], Awaitable[Any]],
        wanted: str | None,
        quiet: OperatorProcess | None,
        finished: Callable[[], Awaitable[None]] | None = None,
    ) -> Phase:
        """Time from starting `action` until the watch sees every Deployment carry `wanted`;
        writes are counted until the cluster (and the operator, if given) has settled and
        `finished` (if given) has returned."""
        before = await self.api.write_counts()
        self.tracker.expect(wanted, self.workload.count)
        started = time.monotonic()
        await action()
        done = await self.tracker.wait(TIMEOUT)
        await self.tracker.settled(TIMEOUT)
        if finished is not None:
            await finished()
        if quiet is not None:
            await quiet.warm(at_least=0)
        counts = delta(before, await self.api.write_counts())
        phase = Phase(done - started, counts, time.monotonic() - started)
        say(
            f"    {phase.seconds:.2f}s to carry {wanted}, settled after {phase.settled:.0f}s, "
            f"{phase.summary()['deployment_writes']} writes"
        )
        return phase

    # -- the limit: one server-side apply per Deployment, nothing else ----------------------

    async def _bodies(self, tag: str | None) -> list[tuple[str, dict[str, Any], bool]]:
        """The operator's own bodies for every Deployment, planned from a fresh listing."""
        listing = await self.api.request(
            "GET", "/apis/apps/v1/deployments", params={"labelSelector": self.workload.selector}
        )
        policies = [Policy.from_object(as_policy_object(policy(tag), 1))] if tag else []
        bodies = []
        for item in listing["items"]:
            meta = item["metadata"]
            path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}"
            if tag is None:
                bodies.append((path, planner.removal_body(item), False))
                continue
            (action,) = planner.plan(item, {}, policies)
            if action.body is None:
                raise RuntimeError(f"nothing to apply to {path}: {action}")
            bodies.append((path, action.body, action.force))
        return bodies

    async def limit_phase(self, tag: str | None, wanted: str | None, concurrency: int) -> Phase:
        bodies = await self._bodies(tag)
        manager = field_manager(POLICY)

        def job(path: str, body: dict[str, Any], force: bool) -> Callable[[], Awaitable[Any]]:
            return lambda: self.api.apply(path, body, manager=manager, force=force)

        jobs = [job(*b) for b in bodies]
        return await self.measure(lambda: run_bounded(jobs, concurrency), wanted, None)

    async def limit_round(self, concurrency: int) -> dict[str, Phase]:
        inject = await self.limit_phase(IMAGES[0], self.revisions[0], concurrency)
        update = await self.limit_phase(IMAGES[1], self.revisions[1], concurrency)
        remove = await self.limit_phase(None, None, concurrency)
        return {"inject": inject, "update": update, "remove": remove}

    async def tune(self, candidates: list[int]) -> dict[int, float]:
        """Inject times of the limit at each in-flight count (each followed by a removal)."""
        times = {}
        for concurrency in candidates:
            phase = await self.limit_phase(IMAGES[0], self.revisions[0], concurrency)
            await self.limit_phase(None, None, concurrency)
            times[concurrency] = phase.seconds
            say(f"  limit with {concurrency} in flight: inject {phase.seconds:.2f}s")
        return times

    # -- the operator --------------------------------------------------------------------

    def apply_policy(self, tag: str) -> Callable[[], Awaitable[None]]:
        manifest = yaml.safe_dump(policy(tag))

        async def apply() -> None:
            await asyncio.to_thread(
                kubectl, self.cluster.kubeconfig, "apply", "-f", "-", stdin=manifest
            )

        return apply

    async def delete_policy(self) -> None:
        await asyncio.to_thread(
            kubectl, self.cluster.kubeconfig, "delete", "sidecarpolicy", POLICY, "--wait=false"
        )

    async def policy_gone(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                await self.api.request(
                    "GET", f"/apis/sidecars.dev/v1alpha1/sidecarpolicies/{POLICY}"
                )
            except ApiError as error:
                if error.status == 404:
                    return
                raise
            await asyncio.sleep(0.2)
        raise TimeoutError(f"SidecarPolicy {POLICY} still exists after {TIMEOUT:.0f}s")

    async def operator_round(self, result: SizeResult, *, extras: bool) -> dict[str, Phase]:
        operator = OperatorProcess(self.cluster.kubeconfig, self.log)
        operator.start()
        try:
            result.warm_seconds.append(await operator.warm())
            inject = await self.measure(self.apply_policy(IMAGES[0]), self.revisions[0], operator)
            if extras:
                await self.at_rest(operator, result)
                operator = await self.restarted(operator, result)
                await self.reaction(result, operator)
            update = await self.measure(self.apply_policy(IMAGES[1]), self.revisions[1], operator)

            # The finalizer's release is the removal's last write: on a small cluster the
            # Deployments settled before it, and the count missed it.
            remove = await self.measure(self.delete_policy, None, operator, self.policy_gone)
            usage = operator.usage()
            result.peak_rss_mb = max(result.peak_rss_mb, usage.peak_rss_mb)
            result.cpu_seconds.append(usage.cpu_seconds)
        finally:
            operator.stop()
        return {"inject": inject, "update": update, "remove": remove}

    async def at_rest(self, operator: OperatorProcess, result: SizeResult) -> None:
        say("  60 s at rest")
        before = await self.api.write_counts()
        await asyncio.sleep(60)
        result.idle_writes = delta(before, await self.api.write_counts())

    async def restarted(self, operator: OperatorProcess, result: SizeResult) -> OperatorProcess:
        say("  restart")
        before = await self.api.write_counts()
        usage = operator.usage()
        result.peak_rss_mb = max(result.peak_rss_mb, usage.peak_rss_mb)
        result.cpu_seconds.append(usage.cpu_seconds)
        operator.stop()
        fresh = OperatorProcess(self.cluster.kubeconfig, self.log)
        fresh.start()
        result.warm_seconds.append(await fresh.warm())
        await asyncio.sleep(10)
        result.restart_writes = delta(before, await self.api.write_counts())
        return fresh

    async def reaction(
        self, result: SizeResult, operator: OperatorProcess, count: int = 100
    ) -> None:
        """Deployments created one at a time while the policy is in place."""
        say(f"  reaction time over {count} new Deployments")
        extra = Workload("reaction", count, self.workload.replicas)
        await extra.create_namespaces(self.api)
        tracker = Tracker(self.api, extra.selector, revision_annotation(POLICY))
        await tracker.start()
        try:
            for index, key in enumerate(extra.keys()):
                tracker.expect(self.revisions[0], index + 1)
                started = time.monotonic()
                await self.api.request(
                    "POST", f"/apis/apps/v1/namespaces/{key[0]}/deployments", extra.body(key)
                )
                result.reaction.append(await tracker.wait(60) - started)
            await extra.delete(self.api)
            deadline = time.monotonic() + TIMEOUT
            while tracker.values and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        finally:
            await tracker.stop()
        await operator.warm(at_least=0)


async def established(api: Api) -> None:
    """Not `kubectl wait`: it fails outright while a new CRD has no conditions yet."""
    for _ in range(300):
        crd = await api.request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sidecarpolicies.sidecars.dev",
        )
        conditions = crd.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the SidecarPolicy CRD was not Established within 60s")


async def run_size(
    n: int, replicas: int, rounds: int, *, tune: list[int] | None, concurrency: int, extras: bool
) -> SizeResult:
    """`extras`: also the 60 s at rest, a restart and the reaction time, in the first round."""
    cluster = devcluster.Cluster.named("bench")
    devcluster.down(cluster)
    devcluster.up(cluster)
    kubectl(cluster.kubeconfig, "apply", "--server-side", "-f", str(CRD_FILE))
    result = SizeResult(n, replicas, concurrency)
    try:
        async with Api(cluster) as api:
            await established(api)
            workload = Workload("main", n, replicas)
            bench = Bench(api, cluster, workload)
            say(
                f"N={n}: creating {n} Deployments ({replicas} replica each) in "
                f"{len(workload.namespaces)} namespaces"
            )
            await workload.create(api)
            await bench.tracker.start()
            await bench.tracker.settled(TIMEOUT)
            if tune:
                result.tuning = await bench.tune(tune)
                result.concurrency = min(result.tuning, key=result.tuning.__getitem__)
            for index in range(rounds):
                say(f"N={n}: round {index + 1}/{rounds}: limit ({result.concurrency} in flight)")
                for name, phase in (await bench.limit_round(result.concurrency)).items():
                    result.limit[name].append(phase)
                say(f"N={n}: round {index + 1}/{rounds}: operator")
                phases = await bench.operator_round(result, extras=extras and index == 0)
                for name, phase in phases.items():
                    result.operator[name].append(phase)
                say(
                    f"N={n}: round {index + 1}: "
                    + ", ".join(
                        f"{name} limit {result.limit[name][-1].seconds:.2f}s "
                        f"operator {result.operator[name][-1].seconds:.2f}s"
                        for name in PHASES
                    )
                )
            await bench.tracker.stop()
    finally:
        devcluster.down(cluster)
    return result
