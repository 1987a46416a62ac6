"""What every scenario measures the same way: a phase timed until the watch sees the cluster as
wanted, the writes the API server counted meanwhile, and the progress line on stderr."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.kube import WRITE_VERBS, Api, Tracker
from bench.process import OperatorProcess

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


# What Kubernetes writes itself, for any rollout and at any time: not the writer's doing.
KUBERNETES_OWN = ("deployments/status", "replicasets", "pods", "leases", "nodes")


def other_writes(counts: Counts) -> int:
    """Writes beside the Deployments' own that are not Kubernetes' rollout or heartbeat: the
    writer's Events, bookkeeping objects and status (the rollout's Events included)."""
    return int(
        sum(
            value
            for key, value in counts.items()
            if not key.endswith(" deployments")
            and not key.split(" ", 1)[1].startswith(KUBERNETES_OWN)
        )
    )


def writes_by_kind(counts: Counts | None) -> dict[str, int] | None:
    """The writes a window without a user's action shows: each of them is the operator's."""
    if counts is None:
        return None
    return {
        "deployment_writes": deployment_writes(counts),
        "status_writes": status_writes(counts),
        "policy_writes": policy_writes(counts),
        "other_writes": other_writes(counts),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


@dataclass
class Phase:
    seconds: float
    counts: Counts
    settled: float = 0.0  # from the phase's start until the cluster had settled: its wall time
    cpu_seconds: float | None = None  # of the process that did the work, when it is measured

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 2),
            "settled_seconds": round(self.settled, 1),
            "deployment_writes": deployment_writes(self.counts),
            "deployment_puts": int(self.counts.get("PUT deployments", 0)),
            "status_writes": status_writes(self.counts),
            "policy_writes": policy_writes(self.counts),
            "other_writes": other_writes(self.counts),
        }


def compare(limit: list[Phase], ours: list[Phase]) -> dict[str, Any]:
    """One phase's runs side by side; the ratio is of the medians, so one slow run of either
    does not decide it."""
    return {
        "limit": spread([p.seconds for p in limit]),
        "operator": spread([p.seconds for p in ours]),
        "ratio": round(
            statistics.median(p.seconds for p in ours)
            / statistics.median(p.seconds for p in limit),
            2,
        ),
        "limit_runs": [p.summary() for p in limit],
        "operator_runs": [p.summary() for p in ours],
    }


async def measure(
    api: Api,
    tracker: Tracker,
    action: Callable[[], Awaitable[Any]],
    wanted: str,
    *,
    quiet: OperatorProcess | None,
    finished: Callable[[], Awaitable[None]] | None = None,
) -> Phase:
    """Time from starting `action` until the watch sees every Deployment as the tracker was
    last told to expect (`wanted` names that in the progress line). Writes are counted until the
    cluster (and the operator, if given) has settled and `finished` (if given) has returned, so
    that a phase's tail is counted in it and not in the next."""
    before = await api.write_counts()
    cpu_before = None if quiet is None else quiet.usage().cpu_seconds
    started = time.monotonic()
    await action()
    done = await tracker.wait(TIMEOUT)
    await tracker.settled(TIMEOUT)
    if finished is not None:
        await finished()
    if quiet is not None:
        await quiet.warm(at_least=0)
    counts = delta(before, await api.write_counts())
    cpu = None if quiet is None or cpu_before is None else quiet.usage().cpu_seconds - cpu_before
    phase = Phase(done - started, counts, time.monotonic() - started, cpu)
    say(
        f"    {phase.seconds:.2f}s to carry {wanted}, settled after {phase.settled:.0f}s, "
        f"{phase.summary()['deployment_writes']} writes"
    )
    return phase
