"""The peers on the operator's work, on the cluster of the operator's size and between its
rounds (`bench/run.py`): the peer started and idle, then inject (the policy applied), update (the
sidecar's image changed) and removal (the policy deleted: how many Deployments still carry the
sidecar REMOVAL_WAIT later), with the writes the API server counted, the peer's CPU seconds and
peak RSS, and its writes over REST_SECONDS at rest after the inject (in the first round). The
Deployments are then put back as created.

A phase is done when a watch sees every Deployment's template carry the sidecar's image (or
none), as the operator's phases are timed on its revision annotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cluster
from bench.kube import Api, ApiError, Tracker, run_bounded
from bench.measure import (
    TIMEOUT,
    Counts,
    Phase,
    delta,
    deployment_writes,
    measure,
    other_writes,
    say,
    spread,
)
from bench.peers import kyverno
from bench.process import OperatorProcess
from bench.workload import CREATE_CONCURRENCY, POLICY, Workload, policy

SIDECAR = "fluent-bit"
TAGS = ("1.0.0", "1.1.0")
REMOVAL_WAIT = 30.0
REST_SECONDS = 60.0
PHASES = ("inject", "update")
HERE = Path(__file__).resolve().parent


class Sidecars(Tracker):
    """The image of the sidecar in each Deployment's pod template, None where it has none."""

    def __init__(self, api: Api, label_selector: str) -> None:
        super().__init__(api, label_selector, f"{SIDECAR} image")

    def _value(self, obj: dict[str, Any]) -> Any:
        containers = obj["spec"]["template"]["spec"].get("containers") or []
        return next((c["image"] for c in containers if c["name"] == SIDECAR), None)


class PeerProcess(OperatorProcess):
    """A peer's process, measured as the operator's is (CPU, peak RSS, idle)."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, command: list[str], env: Mapping[str, str]
    ) -> None:
        super().__init__(kubeconfig, log_path)
        self.command, self.env = command, env

    def start(self) -> None:
        self.started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )


@dataclass(frozen=True)
class Peer:
    name: str
    command: Callable[[Path], list[str]]  # from the cluster's kubeconfig
    policy: str  # the path of its policy object
    policy_body: Callable[[str], dict[str, Any]]  # from the sidecar's image tag
    prepare: Callable[[Path, Api], Awaitable[None]] | None = None  # before each round
    env: Mapping[str, str] = field(default_factory=dict)

    async def apply_policy(self, api: Api, tag: str) -> None:
        await api.apply(self.policy, self.policy_body(tag), manager="bench")

    async def delete_policy(self, api: Api) -> None:
        await api.request("DELETE", self.policy, ok=(200, 202))

    async def policy_gone(self, api: Api, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await api.request("GET", self.policy)
            except ApiError as error:
                if error.status == 404:
                    return
                raise
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.policy} still exists {timeout:.0f}s after its deletion")


KOPF_TEXTBOOK = Peer(
    "kopf-textbook",
    lambda _: [
        str(Path(sys.executable).with_name("kopf")),
        "run",
        "--all-namespaces",
        str(HERE / "kopf_textbook.py"),
    ],
    f"{cluster.POLICIES}/{POLICY}",
    policy,
)


# Kyverno as installed, and tuned (a fair peer is a tuned peer). Its pace is set by one loop that
# creates the policy's UpdateRequests one Deployment at a time (pkg/policy/mutate.go: a list of
# every UpdateRequest, a create and a status update each, in order), which no flag parallelises;
# the tuned one raises its client's rate limits and UpdateRequest workers (which only carry the
# requests out) and drops the mutate-existing reports (one fewer write per Deployment).
KYVERNO_TUNED_FLAGS = [
    "-clientRateLimitQPS=1000",
    "-clientRateLimitBurst=2000",
    "-genWorkers=50",
    "-enableReporting=validate,mutate,generate,imageVerify",
]


def kyverno_peers() -> list[Peer]:
    """Kyverno with its defaults and tuned; builds it first if needed (`hack/build-peers.sh`)."""
    built = kyverno.build()
    return [
        Peer(
            name,
            kyverno.command(built, flags),
            kyverno.POLICY,
            kyverno.cluster_policy,
            prepare=kyverno.prepare(built),
            env=kyverno.ENV,
        )
        for name, flags in (("kyverno", []), ("kyverno-tuned", KYVERNO_TUNED_FLAGS))
    ]


@dataclass
class PeerResult:
    peer: str
    n: int
    phases: dict[str, list[Phase]] = field(default_factory=lambda: {p: [] for p in PHASES})
    removal_left: list[int] = field(default_factory=list)  # still carrying the sidecar
    rest_writes: list[Counts] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # per round, all phases
    peak_rss_mb: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "peer": self.peer,
            "n": self.n,
            "phases": {
                name: {
                    "seconds": spread([p.seconds for p in runs]),
                    "runs": [p.summary() for p in runs],
                    "writes": [p.counts for p in runs],
                }
                for name, runs in self.phases.items()
            },
            "removal_left": self.removal_left,
            "removal_wait_seconds": REMOVAL_WAIT,
            "rest_writes": [deployment_writes(c) + other_writes(c) for c in self.rest_writes],
            "rest_counts": self.rest_writes,
            "cpu_seconds_per_round": [round(c, 1) for c in self.cpu_seconds],
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


async def peer_round(
    peer: Peer, kubeconfig: Path, api: Api, workload: Workload, result: PeerResult, *, rest: bool
) -> None:
    """One round of `peer` on the cluster the limit and the operator run on, between their
    rounds; `rest`: also REST_SECONDS at rest after the inject. The Deployments are put back as
    created afterwards, since the peer leaves its sidecars behind."""
    tracker = Sidecars(api, workload.selector)
    await tracker.start()
    if peer.prepare is not None:
        await peer.prepare(kubeconfig, api)
    log = cluster.operator_log(peer.name)
    process = PeerProcess(kubeconfig, log, peer.command(kubeconfig), peer.env)
    try:
        await tracker.settled(TIMEOUT)
        process.start()
        await process.warm()
        for name, tag in zip(PHASES, TAGS, strict=True):
            image = f"fluent/fluent-bit:{tag}"
            tracker.expect(image, workload.count)
            phase = await measure(
                api, tracker, functools.partial(peer.apply_policy, api, tag), image, quiet=process
            )
            result.phases[name].append(phase)
            if name == "inject" and rest:
                before = await api.write_counts()
                await asyncio.sleep(REST_SECONDS)
                result.rest_writes.append(delta(before, await api.write_counts()))
        tracker.expect(None, workload.count)
        await peer.delete_policy(api)
        with contextlib.suppress(TimeoutError):  # what is left is the measurement
            await tracker.wait(REMOVAL_WAIT)
        result.removal_left.append(workload.count - tracker.matching)
        say(f"    {result.removal_left[-1]} still carry the sidecar {REMOVAL_WAIT:.0f} s after")
        usage = process.usage()
        result.cpu_seconds.append(usage.cpu_seconds)
        result.peak_rss_mb = max(result.peak_rss_mb, usage.peak_rss_mb)
    finally:
        process.stop()
    try:
        await _restore(peer, api, workload, tracker)
    finally:
        await tracker.stop()


async def _restore(peer: Peer, api: Api, workload: Workload, tracker: Sidecars) -> None:
    """Every Deployment replaced by its body as created (a PUT drops the peer's sidecar, volume,
    mount and annotations), once the peer's policy is gone, and the rollout settled."""
    await peer.policy_gone(api, TIMEOUT)

    def put(key: tuple[str, str]) -> Callable[[], Awaitable[Any]]:
        namespace, name = key
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        return lambda: api.request("PUT", path, workload.body(key))

    await run_bounded(list(map(put, workload.keys())), CREATE_CONCURRENCY)
    await tracker.wait(TIMEOUT)
    await tracker.settled(TIMEOUT)
