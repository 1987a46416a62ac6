"""Many policies: P SidecarPolicies over N Deployments (0 replicas), each Deployment selected by
three of them and a few pairs clashing on a container name, where the lower priority skips and
reports the conflict. Against the limit sending the same writes: the inject of all P policies
and one policy's image change. Of the operator alone: a restart, its memory, its CPU at rest.

A target on a time ratio is judged on the medians, as the sizes' ratios are; a target on writes,
seconds, memory or CPU on the worst round, since one round missing it is already a defect."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench import cluster, limit
from bench.kube import Api, Revisions, run_bounded
from bench.measure import (
    TIMEOUT,
    Counts,
    Phase,
    compare,
    delta,
    deployment_writes,
    measure,
    say,
    spread,
    writes_by_kind,
)
from bench.process import OperatorProcess
from bench.workload import Workload, as_policy_object, clashes, shard_policy
from sidecar_operator.api.models import Policy
from sidecar_operator.devcluster import Cluster

TAGS = ("1.0.0", "1.1.0")  # every policy's image tag, and the changed policy's after the change
PHASES = ("inject", "image", "remove")
REST_SECONDS = 60.0
AFTER_RESTART = 10.0  # writes are still counted this long after the restarted operator is idle
APPLIED_BY = "bench"  # the field manager of the user's own apply of the policies
TARGETS: dict[str, float] = {
    "inject": 1.5,  # times the limit's median
    "image": 1.3,
    "restart_writes": 0,  # Deployment writes
    "restart_seconds": 30.0,
    "peak_rss_mb": 200.0,
    "rest_cpu_seconds": 1.2,  # 2% of a core over REST_SECONDS, to stay below
}


@dataclass
class ManyResult:
    policies: int
    n: int
    concurrency: int
    changed: str = ""  # the policy whose image changes
    changed_pairs: int = 0  # the Deployments its change is written to
    pairs: int = 0  # (policy, Deployment) pairs the inject writes
    skipped: int = 0  # pairs skipped by the policy that lost a clash
    limit: dict[str, list[Phase]] = field(default_factory=lambda: {p: [] for p in PHASES})
    operator: dict[str, list[Phase]] = field(default_factory=lambda: {p: [] for p in PHASES})
    rest_cpu: list[float] = field(default_factory=list)
    rest_writes: list[Counts] = field(default_factory=list)
    restart_seconds: list[float] = field(default_factory=list)
    restart_writes: list[Counts] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    def summary(self) -> dict[str, Any]:
        phases = {name: compare(self.limit[name], self.operator[name]) for name in PHASES}
        for name in ("inject", "image"):
            phases[name]["target_ratio"] = TARGETS[name]
            phases[name]["met"] = phases[name]["ratio"] <= TARGETS[name]
        restart_writes = max(deployment_writes(c) for c in self.restart_writes)
        return {
            "policies": self.policies,
            "n": self.n,
            "limit_concurrency": self.concurrency,
            "changed_policy": self.changed,
            "changed_deployments": self.changed_pairs,
            "pairs": self.pairs,
            "skipped_pairs": self.skipped,
            "phases": phases,
            "restart_seconds": {
                **spread(self.restart_seconds),
                "target": TARGETS["restart_seconds"],
                "met": max(self.restart_seconds) <= TARGETS["restart_seconds"],
            },
            "restart_writes": {
                "max_deployment_writes": restart_writes,
                "target": TARGETS["restart_writes"],
                "met": restart_writes <= TARGETS["restart_writes"],
                "runs": [writes_by_kind(c) for c in self.restart_writes],
            },
            "peak_rss_mb": {
                "max": round(self.peak_rss_mb, 1),
                "target": TARGETS["peak_rss_mb"],
                "met": self.peak_rss_mb <= TARGETS["peak_rss_mb"],
            },
            "rest_cpu_seconds": {
                **spread(self.rest_cpu),
                "window_seconds": REST_SECONDS,
                "target": TARGETS["rest_cpu_seconds"],
                "met": max(self.rest_cpu) < TARGETS["rest_cpu_seconds"],
            },
            "rest_writes": {
                "runs": [writes_by_kind(c) for c in self.rest_writes],
                "target": 0,
                "met": not any(deployment_writes(c) for c in self.rest_writes),
            },
        }


class Many:
    """The policies, their Deployments and the watch over them, on one fresh cluster."""

    def __init__(self, api: Api, kube: Cluster, workload: Workload, count: int) -> None:
        self.api = api
        self.kube = kube
        self.workload = workload
        self.tracker = Revisions(api, workload.selector)
        self.manifests = [shard_policy(i, count, TAGS[0]) for i in range(count)]
        # The middle policy, or the next that clashes with none: its change is one policy's own
        # rollout, with no conflict on the way.
        index = next(i for i in range(count // 2, count) if not clashes(i, count))
        self.changed = shard_policy(index, count, TAGS[1])
        self.names = {m["metadata"]["name"] for m in self.manifests}
        self.log = cluster.operator_log(f"many-{count}x{workload.count}")

    def policies(self, *, changed: bool) -> list[Policy]:
        """As the planner sees them once applied. They share one creation time: only the
        priority decides the clashes, as it does for the operator."""
        name = self.changed["metadata"]["name"]
        manifests = [
            self.changed if changed and m["metadata"]["name"] == name else m for m in self.manifests
        ]
        return [Policy.from_object(as_policy_object(m, 1)) for m in manifests]

    async def phase(
        self,
        wanted: dict[str, dict[str, str]],
        what: str,
        action: Callable[[], Awaitable[Any]],
        *,
        quiet: OperatorProcess | None,
        finished: Callable[[], Awaitable[None]] | None = None,
    ) -> Phase:
        self.tracker.expect_each(wanted, what)
        return await measure(self.api, self.tracker, action, what, quiet=quiet, finished=finished)

    # -- the limit ---------------------------------------------------------------------------

    async def limit_round(self, result: ManyResult) -> dict[str, limit.Plan]:
        """The limit's phases; returns their plans, whose revisions the operator's round waits
        for: the operator starts from the same Deployments and must end where the limit did."""
        plans = {}
        for name, policies in (
            ("inject", self.policies(changed=False)),
            ("image", self.policies(changed=True)),
            ("remove", []),
        ):
            plan = plans[name] = await limit.plan(self.api, self.workload.selector, policies)
            if not plan.writes:
                raise RuntimeError(f"the limit has nothing to write for {name}")

            def send(plan: limit.Plan = plan) -> Awaitable[None]:
                return limit.send(self.api, plan.writes, result.concurrency)

            what = f"{name} ({len(plan.writes)} writes)"
            result.limit[name].append(await self.phase(plan.revisions, what, send, quiet=None))
        return plans

    # -- the operator ------------------------------------------------------------------------

    async def apply(self, manifests: list[dict[str, Any]]) -> None:
        """Server-side applies, all at once: `kubectl apply` sends one document after another,
        after starting a process, and that time is neither the operator's nor the limit's."""

        def job(manifest: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
            path = f"{cluster.POLICIES}/{manifest['metadata']['name']}"
            return lambda: self.api.apply(path, manifest, manager=APPLIED_BY)

        await run_bounded([job(m) for m in manifests], len(manifests))

    async def delete(self) -> None:
        def job(name: str) -> Callable[[], Awaitable[Any]]:
            return lambda: self.api.request("DELETE", f"{cluster.POLICIES}/{name}", ok=(200, 202))

        await run_bounded([job(name) for name in sorted(self.names)], len(self.names))

    async def operator_round(self, result: ManyResult, plans: dict[str, limit.Plan]) -> None:
        operator = OperatorProcess(self.kube.kubeconfig, self.log, metrics=True)
        operator.start()
        try:
            await operator.warm()
            result.operator["inject"].append(
                await self.phase(
                    plans["inject"].revisions,
                    f"inject ({len(self.manifests)} policies)",
                    lambda: self.apply(self.manifests),
                    quiet=operator,
                )
            )
            await self.at_rest(operator, result)
            operator = await self.restarted(operator, result)
            result.operator["image"].append(
                await self.phase(
                    plans["image"].revisions,
                    f"image of {self.changed['metadata']['name']}",
                    lambda: self.apply([self.changed]),
                    quiet=operator,
                )
            )
            result.operator["remove"].append(
                await self.phase(
                    plans["remove"].revisions,
                    "remove",
                    self.delete,
                    quiet=operator,
                    finished=lambda: cluster.policies_gone(self.api, TIMEOUT),
                )
            )
            result.peak_rss_mb = max(result.peak_rss_mb, operator.usage().peak_rss_mb)
        finally:
            operator.stop()

    async def at_rest(self, operator: OperatorProcess, result: ManyResult) -> None:
        """Everything injected and the operator idle: what it costs while nothing changes. The
        window is as long as the resync period, so each policy's resync pass falls in it."""
        say(f"  {REST_SECONDS:.0f} s at rest")
        before = await self.api.write_counts()
        cpu = operator.usage().cpu_seconds
        await asyncio.sleep(REST_SECONDS)
        result.rest_cpu.append(operator.usage().cpu_seconds - cpu)
        result.rest_writes.append(delta(before, await self.api.write_counts()))
        say(
            f"    {result.rest_cpu[-1]:.2f} CPU s, "
            f"{deployment_writes(result.rest_writes[-1])} Deployment writes"
        )

    async def restarted(self, operator: OperatorProcess, result: ManyResult) -> OperatorProcess:
        """A new operator with every policy in place and everything injected. Its time is until
        its first pass of every policy has finished (`OperatorProcess.first_passes`: counted by
        the operator itself, from its start). Its writes are counted from before the old one's
        stop until the new one has finished those passes, gone idle, and AFTER_RESTART seconds
        more (a status write waits up to two): a restart should write nothing to Deployments."""
        say("  restart")
        before = await self.api.write_counts()
        result.peak_rss_mb = max(result.peak_rss_mb, operator.usage().peak_rss_mb)
        operator.stop()
        fresh = OperatorProcess(self.kube.kubeconfig, self.log, metrics=True)
        fresh.start()
        try:
            result.restart_seconds.append(await fresh.first_passes(self.names, TIMEOUT))
            await fresh.warm(at_least=0)
            await asyncio.sleep(AFTER_RESTART)
        except BaseException:
            fresh.stop()
            raise
        result.restart_writes.append(delta(before, await self.api.write_counts()))
        say(
            f"    every policy's first pass done {result.restart_seconds[-1]:.2f}s after the "
            f"start, {deployment_writes(result.restart_writes[-1])} Deployment writes"
        )
        return fresh


async def run_many(count: int, n: int, rounds: int, *, concurrency: int) -> ManyResult:
    """`rounds` of the limit, then the operator, on one fresh cluster, as `run_size` does."""
    result = ManyResult(count, n, concurrency)
    async with cluster.fresh() as (kube, api):
        workload = Workload("many", n, 0, shards=count)
        say(
            f"P={count} N={n}: creating {n} Deployments (0 replicas) in "
            f"{len(workload.namespaces)} namespaces"
        )
        await workload.create(api)
        many = Many(api, kube, workload, count)
        result.changed = many.changed["metadata"]["name"]
        await many.tracker.start()
        try:
            await many.tracker.settled(TIMEOUT)
            for index in range(rounds):
                say(f"P={count}: round {index + 1}/{rounds}: limit ({concurrency} in flight)")
                plans = await many.limit_round(result)
                result.pairs = len(plans["inject"].writes)
                result.skipped = plans["inject"].skipped
                result.changed_pairs = len(plans["image"].writes)
                say(f"P={count}: round {index + 1}/{rounds}: operator")
                await many.operator_round(result, plans)
                say(
                    f"P={count}: round {index + 1}: "
                    + ", ".join(
                        f"{name} limit {result.limit[name][-1].seconds:.2f}s "
                        f"operator {result.operator[name][-1].seconds:.2f}s"
                        for name in PHASES
                    )
                )
        finally:
            await many.tracker.stop()
    return result
