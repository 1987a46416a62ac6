"""One benchmark size: N Deployments on a fresh local cluster, the limit's and the operator's
rollouts alternated, API writes counted by the apiserver, the operator's memory and CPU."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from bench import cluster, limit
from bench.cluster import kubectl
from bench.kube import Api, Tracker
from bench.measure import (
    TIMEOUT,
    Counts,
    Phase,
    compare,
    delta,
    measure,
    say,
    writes_by_kind,
)
from bench.peers.scenario import Peer, PeerResult, peer_round
from bench.process import OperatorProcess
from bench.workload import POLICY, Workload, as_policy_object, policy
from sidecar_operator import devcluster
from sidecar_operator.api.models import Policy
from sidecar_operator.core.ownership import revision_annotation

IMAGES = ("3.1.9", "3.2.0")  # the sidecar's tag at injection, and after the update
PHASES = ("inject", "update", "remove")


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
    peers: dict[str, PeerResult] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        phases = {name: compare(self.limit[name], self.operator[name]) for name in PHASES}
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
            "idle_60s_writes": writes_by_kind(self.idle_writes),
            "idle_60s_counts": self.idle_writes,
            "restart_writes": writes_by_kind(self.restart_writes),
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
            "peers": [peer.summary() for peer in self.peers.values()],
        }


def _percentile(values: list[float], pct: float) -> float:
    """Nearest rank of sorted `values`."""
    index = max(0, min(len(values) - 1, math.ceil(pct / 100 * len(values)) - 1))
    return values[index]


class Bench:
    """Everything one size needs, on one fresh cluster."""

    def __init__(self, api: Api, kube: devcluster.Cluster, workload: Workload) -> None:
        self.api = api
        self.kube = kube
        self.workload = workload
        self.tracker = Tracker(api, workload.selector, revision_annotation(POLICY))
        self.revisions = [
            Policy.from_object(as_policy_object(policy(tag), 1)).spec.revision for tag in IMAGES
        ]
        self.log = cluster.operator_log(str(workload.count))

    async def measure(
        self,
        action: Callable[[], Awaitable[Any]],
        wanted: str | None,
        quiet: OperatorProcess | None,
        finished: Callable[[], Awaitable[None]] | None = None,
    ) -> Phase:
        """Until the watch sees every Deployment carry `wanted` (None: carry nothing of it)."""
        self.tracker.expect(wanted, self.workload.count)
        return await measure(
            self.api, self.tracker, action, str(wanted), quiet=quiet, finished=finished
        )

    # -- the limit: one server-side apply per Deployment, nothing else ----------------------

    async def limit_phase(self, tag: str | None, wanted: str | None, concurrency: int) -> Phase:
        policies = [Policy.from_object(as_policy_object(policy(tag), 1))] if tag else []
        plan = await limit.plan(self.api, self.workload.selector, policies)
        if len(plan.writes) != self.workload.count:
            raise RuntimeError(
                f"{len(plan.writes)} writes planned for {self.workload.count} Deployments"
            )
        return await self.measure(
            lambda: limit.send(self.api, plan.writes, concurrency), wanted, None
        )

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
                kubectl, self.kube.kubeconfig, "apply", "-f", "-", stdin=manifest
            )

        return apply

    async def delete_policy(self) -> None:
        await asyncio.to_thread(
            kubectl, self.kube.kubeconfig, "delete", "sidecarpolicy", POLICY, "--wait=false"
        )

    async def operator_round(self, result: SizeResult, *, extras: bool) -> dict[str, Phase]:
        operator = OperatorProcess(self.kube.kubeconfig, self.log)
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
            remove = await self.measure(
                self.delete_policy,
                None,
                operator,
                lambda: cluster.policies_gone(self.api, TIMEOUT),
            )
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
        fresh = OperatorProcess(self.kube.kubeconfig, self.log)
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


async def run_size(
    n: int,
    replicas: int,
    rounds: int,
    *,
    tune: list[int] | None,
    concurrency: int,
    extras: bool,
    peers: Sequence[Peer] = (),
) -> SizeResult:
    """`extras`: also the 60 s at rest, a restart and the reaction time, in the first round (and
    the peers' 60 s at rest). Each round runs the limit, the operator and then each peer."""
    result = SizeResult(n, replicas, concurrency)
    result.peers = {peer.name: PeerResult(peer.name, n) for peer in peers}
    async with cluster.fresh() as (kube, api):
        workload = Workload("main", n, replicas)
        bench = Bench(api, kube, workload)
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
            if peers:
                await bench.tracker.stop()  # one watch on the Deployments, as for the operator
                for peer in peers:
                    say(f"N={n}: round {index + 1}/{rounds}: {peer.name}")
                    await peer_round(
                        peer,
                        kube.kubeconfig,
                        api,
                        workload,
                        result.peers[peer.name],
                        rest=extras and index == 0,
                    )
                await bench.tracker.start()
            say(
                f"N={n}: round {index + 1}: "
                + ", ".join(
                    f"{name} limit {result.limit[name][-1].seconds:.2f}s "
                    f"operator {result.operator[name][-1].seconds:.2f}s"
                    for name in PHASES
                )
            )
        await bench.tracker.stop()
    return result
