"""A rollout in steps against one-step rollouts of as many workloads: N Deployments (0
replicas, so that the writes are what is timed), a policy with three steps (10% until promoted,
50% until promoted, everything), `maxConcurrent: 100%`. Each step is timed from its start (the
edit, then each promotion) to its last workload carrying the new revision; each is set against
a one-step update of as many workloads as the step adds (a policy over that many of them,
selected by shard labels, given one image and then, measured, another). The target: every step
within 1.2x of its one-step peer.

Single runs of a step vary by a third on these shared machines (a step of 100 takes half a
second): with `--rounds R` the whole sequence runs R times on the same cluster and each step and
peer is judged by its median."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench import cluster
from bench.kube import Api, Tracker
from bench.measure import TIMEOUT, say
from bench.process import OperatorProcess
from bench.workload import PART_OF, POLICY, SHARD_LABEL, Workload, policy
from sidecar_operator.core.ownership import revision_annotation

SHARDS = 10
STEPS = [{"percent": 10, "pause": {}}, {"percent": 50, "pause": {}}, {"percent": 100}]
STEP_SHARDS = ([0], [1, 2, 3, 4], [5, 6, 7, 8, 9])  # as many workloads as each step adds
TARGET_RATIO = 1.2


@dataclass
class WavesResult:
    n: int
    # per round, seconds per step, and of a one-step rollout of as many
    steps: list[list[float]] = field(default_factory=list)
    peers: list[list[float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        steps, peers = _medians(self.steps), _medians(self.peers)
        ratios = [round(s / p, 2) for s, p in zip(steps, peers, strict=True)]
        return {
            "n": self.n,
            "rounds": len(self.steps),
            "step_seconds": [round(s, 2) for s in steps],
            "one_step_seconds": [round(p, 2) for p in peers],
            "ratios": ratios,
            "target_ratio": TARGET_RATIO,
            "met": all(r <= TARGET_RATIO for r in ratios),
            "each_round": [
                {
                    "step_seconds": [round(s, 2) for s in st],
                    "one_step_seconds": [round(p, 2) for p in pe],
                }
                for st, pe in zip(self.steps, self.peers, strict=True)
            ],
        }


def _medians(rounds: list[list[float]]) -> list[float]:
    """Per step, its median over the rounds."""
    return [statistics.median(column) for column in zip(*rounds, strict=True)]


def _body(tag: str, **strategy: Any) -> dict[str, Any]:
    body = policy(tag)
    body["spec"]["updateStrategy"] = {"maxConcurrent": "100%", **strategy}
    return body


async def _revision(api: Api, changed_from: str | None) -> str:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        got = await api.request("GET", f"{cluster.POLICIES}/{POLICY}")
        revision = (got.get("status") or {}).get("updateRevision")
        if revision and revision != changed_from:
            return str(revision)
        await asyncio.sleep(0.1)
    raise TimeoutError("the policy never reported its new revision")


async def run_waves(n: int, rounds: int = 1) -> WavesResult:
    result = WavesResult(n)
    async with cluster.fresh() as (local, api):
        workload = Workload("waves", n, replicas=0, shards=SHARDS)
        say(f"waves: creating {n} Deployments")
        await workload.create(api)
        operator = OperatorProcess(local.kubeconfig, cluster.operator_log("waves"))
        operator.start()
        tracker = Tracker(api, workload.selector, revision_annotation(POLICY))
        await tracker.start()
        try:
            await operator.warm()
            for round_ in range(rounds):
                say(f"waves: round {round_ + 1} of {rounds}")
                result.steps.append(await _in_steps(api, tracker, operator, n))
                result.peers.append(await _one_step_peers(api, tracker, operator, n))
        finally:
            await tracker.stop()
            operator.stop()
    say(f"waves: {result.summary()}")
    return result


async def _settled(tracker: Tracker, operator: OperatorProcess) -> None:
    """Until the Deployments have settled and the operator has gone idle, as `measure` waits
    between phases: each step and each peer starts from the same quiet cluster and operator,
    whatever the phase before it wrote (a thousand workloads before a step, a hundred before
    its peer)."""
    await tracker.settled(TIMEOUT)
    await operator.warm(at_least=0)


async def _in_steps(api: Api, tracker: Tracker, operator: OperatorProcess, n: int) -> list[float]:
    """The policy rolled out at once, then edited with steps and promoted step by step: each
    step's seconds. The policy is deleted at the end, its sidecars gone."""
    path = f"{cluster.POLICIES}/{POLICY}"
    await api.apply(path, _body("3.1.9"), manager="bench")
    first = await _revision(api, None)
    tracker.expect(first, n)
    await tracker.wait(TIMEOUT)
    await _settled(tracker, operator)

    seconds = []
    started = time.monotonic()
    await api.apply(path, _body("3.2.0", steps=STEPS), manager="bench")
    update = await _revision(api, first)
    for index, covered in enumerate((n // 10, n // 2, n)):
        if index:  # lift the pause the step before ends in
            started = time.monotonic()
            annotation = {"sidecars.dev/promote": f"{update}/{index - 1}"}
            await api.request(
                "PATCH",
                path,
                {"metadata": {"annotations": annotation}},
                content_type="application/merge-patch+json",
            )
        tracker.expect(update, covered)
        seconds.append(await tracker.wait(TIMEOUT) - started)
        await _settled(tracker, operator)
        say(f"waves: step {index + 1} ({covered} workloads) in {seconds[-1]:.2f}s")
    await _delete(api, tracker, n)
    return seconds


async def _one_step_peers(
    api: Api, tracker: Tracker, operator: OperatorProcess, n: int
) -> list[float]:
    """Per step, as many workloads as it adds, given the first image in one step (unmeasured),
    then the second, measured: an update, as each step is."""
    path = f"{cluster.POLICIES}/{POLICY}"
    seconds = []
    for shards in STEP_SHARDS:
        size = n * len(shards) // SHARDS
        selector = {
            "matchLabels": {PART_OF: "bench"},
            "matchExpressions": [
                {"key": SHARD_LABEL, "operator": "In", "values": [str(s) for s in shards]}
            ],
        }
        before = None
        for image in ("3.2.1", "3.2.2"):
            body = _body(image)
            body["spec"]["selector"] = selector
            started = time.monotonic()
            await api.apply(path, body, manager="bench")
            before = await _revision(api, before)
            tracker.expect(before, size)
            done = await tracker.wait(TIMEOUT) - started
            await _settled(tracker, operator)
        seconds.append(done)
        say(f"waves: one step updating {size} in {done:.2f}s")
        await _delete(api, tracker, n)
    return seconds


async def _delete(api: Api, tracker: Tracker, n: int) -> None:
    await api.request("DELETE", f"{cluster.POLICIES}/{POLICY}")
    tracker.expect(None, n)
    await tracker.wait(TIMEOUT)
    await cluster.policies_gone(api, TIMEOUT)
