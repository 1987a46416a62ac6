"""Churn: N matched Deployments at rest (kwok, 0 replicas), then new ones created RATE a second
for SECONDS. For each new one, the reaction: from its create returning to the sidecar in its
template, as a watch sees it (the controller path: no webhook); and the CPU per create.

The floor runs first, on the same cluster: `bench.floor`, a process that does for each new
Deployment only what any controller must (read its watch events, send one apply). Then the
operator, with one policy selecting every Deployment, injects the N and takes the same churn.
Its CPU per create above the floor's is the operator's own work per event."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import cluster
from bench.kube import Api, Tracker, key_of
from bench.measure import TIMEOUT, say
from bench.process import OperatorProcess, Usage, usage_of
from bench.workload import PART_OF, POLICY, Workload, as_policy_object, policy
from sidecar_operator.api.models import Policy
from sidecar_operator.core.ownership import revision_annotation

RATE = 20  # creates a second
SECONDS = 60
TAG = "3.1.9"


@dataclass
class Churned:
    """One controller's side of the churn: its reactions and its CPU over them."""

    reactions: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0
    created_at: list[float] = field(default_factory=list)  # seconds into the churn, per reaction
    passes: float | None = None  # the operator's passes over the churn (the floor has none)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.reactions)
        return {
            "creates": len(ordered),
            "p50": _round(_rank(ordered, 50)),
            "p95": _round(_rank(ordered, 95)),
            "max": _round(ordered[-1] if ordered else math.nan),
            "cpu_ms_per_create": round(1000 * self.cpu_seconds / max(1, len(ordered)), 2),
            "passes_per_create": None
            if self.passes is None
            else round(self.passes / max(1, len(ordered)), 2),
            # When the slowest were created: spread out, or in bursts (a full pass, a GC)?
            "slowest": sorted(
                (
                    (round(at, 1), round(r, 3))
                    for at, r in zip(self.created_at, self.reactions, strict=True)
                ),
                key=lambda pair: -pair[1],
            )[:10],
        }


@dataclass
class ChurnResult:
    n: int
    floor: Churned = field(default_factory=Churned)
    operator: Churned = field(default_factory=Churned)
    inject_seconds: float = 0.0
    rss_mb: float = 0.0  # the operator's, at rest after injecting the N

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "rate_per_second": RATE,
            "seconds": SECONDS,
            "floor": self.floor.summary(),
            "operator": self.operator.summary(),
            "inject_seconds": round(self.inject_seconds, 2),
            "operator_rss_mb": round(self.rss_mb, 1),
        }


class Reached(Tracker):
    """Notes when each Deployment is first seen carrying the wanted value."""

    def __init__(self, api: Api, selector: str, wanted: str) -> None:
        super().__init__(api, selector, revision_annotation(POLICY))
        self.wanted = wanted
        self.reached: dict[str, float] = {}

    def _update(self, kind: str, obj: dict[str, Any]) -> None:
        super()._update(kind, obj)
        key = key_of(obj)
        if kind != "DELETED" and key not in self.reached and self._value(obj) == self.wanted:
            self.reached[key] = time.monotonic()


async def run_churn(n: int) -> ChurnResult:
    result = ChurnResult(n)
    revision = Policy.from_object(as_policy_object(policy(TAG), 1)).spec.revision
    async with cluster.fresh() as (kube, api):
        main = Workload("main", n, replicas=0)
        say(f"churn N={n}: creating {n} Deployments")
        await main.create(api)

        floor = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", cluster.NAME, _selector("floor"), TAG],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert floor.stdout is not None
            said = await asyncio.to_thread(floor.stdout.readline)  # listed: its watch starts
            if said.strip() != "watching":
                raise RuntimeError(f"the floor did not start: {said!r}")
            say(f"churn N={n}: the floor, {RATE} creates a second for {SECONDS} s")
            result.floor = await _churn(api, "floor", revision, lambda: usage_of(floor.pid))
        finally:
            floor.kill()
            floor.wait()

        operator = OperatorProcess(
            kube.kubeconfig, cluster.operator_log(f"churn-{n}"), metrics=True
        )
        operator.start()
        try:
            await operator.warm()
            tracker = Reached(api, main.selector, revision)
            await tracker.start()
            tracker.expect(revision, n)
            started = time.monotonic()
            await api.apply(f"{cluster.POLICIES}/{POLICY}", policy(TAG), manager="bench")
            result.inject_seconds = await tracker.wait(TIMEOUT) - started
            await tracker.stop()
            await operator.warm(at_least=0)
            result.rss_mb = operator.rss_mb()
            say(f"churn N={n}: injected in {result.inject_seconds:.1f} s; the operator's churn")
            passes = sum((await operator.passes()).values())
            result.operator = await _churn(api, "churn", revision, operator.usage)
            result.operator.passes = sum((await operator.passes()).values()) - passes
        finally:
            operator.stop()
    say(f"churn N={n}: {result.summary()}")
    return result


def _selector(set_name: str) -> str:
    return Workload(set_name, 0, 0).selector


async def _churn(api: Api, set_name: str, revision: str, usage: Any) -> Churned:
    """RATE creates a second for SECONDS of the set's Deployments; their reactions and the CPU
    the controller (`usage`) spent meanwhile. The floor's set is not the policy's (no part-of
    label): the operator never sees it as its own."""
    churn = Workload(set_name, RATE * SECONDS, replicas=0)
    await churn.create_namespaces(api)
    tracker = Reached(api, churn.selector, revision)
    await tracker.start()
    returned: dict[str, float] = {}
    cpu_before: Usage = usage()
    began = time.monotonic()

    async def create(index: int, key: tuple[str, str]) -> None:
        await asyncio.sleep(max(0.0, began + index / RATE - time.monotonic()))
        body = churn.body(key)
        if set_name == "floor":
            body["metadata"]["labels"].pop(PART_OF)
        await api.request("POST", f"/apis/apps/v1/namespaces/{key[0]}/deployments", body)
        returned[f"{key[0]}/{key[1]}"] = time.monotonic()

    await asyncio.gather(*(create(i, key) for i, key in enumerate(churn.keys())))
    deadline = time.monotonic() + TIMEOUT
    while len(tracker.reached) < churn.count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # the last write's own events
    spent = usage().cpu_seconds - cpu_before.cpu_seconds
    await tracker.stop()
    missing = churn.count - len(tracker.reached)
    if missing:
        raise TimeoutError(f"{set_name}: {missing} new Deployments never got the sidecar")
    return Churned(
        [tracker.reached[key] - at for key, at in returned.items()],
        spent,
        [at - began for at in returned.values()],
    )


def _rank(ordered: list[float], pct: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))]


def _round(value: float) -> float:
    return round(value, 3)
