"""At rest with a policy whose sidecar sets every optional field at the value the API server
drops or defaults (`workload.EVERY_DEFAULT`), over N Deployments (0 replicas): the writes of the
same 60 s window at rest as the main scenario's, which must all be 0. Each such value alone once
made the operator write to every selected Deployment on every event, a hundred times a second,
and never report the policy Ready."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from bench import cluster
from bench.kube import Tracker
from bench.measure import TIMEOUT, Counts, delta, say, writes_by_kind
from bench.process import OperatorProcess
from bench.workload import POLICY, Workload, every_default_policy
from sidecar_operator.core.ownership import revision_annotation

REST_SECONDS = 60


@dataclass
class DefaultsResult:
    n: int
    inject_seconds: float
    rest_writes: Counts

    def summary(self) -> dict[str, Any]:
        writes = writes_by_kind(self.rest_writes) or {}
        return {
            "n": self.n,
            "inject_seconds": round(self.inject_seconds, 2),
            "rest_seconds": REST_SECONDS,
            "rest_writes": writes,
            "rest_writes_raw": self.rest_writes,
            "met": writes.get("deployment_writes", 1) == 0 and writes.get("status_writes", 1) == 0,
        }


async def run_defaults(n: int) -> DefaultsResult:
    async with cluster.fresh() as (local, api):
        workload = Workload("defaults", n, replicas=0)
        say(f"every default: creating {n} Deployments")
        await workload.create(api)
        operator = OperatorProcess(local.kubeconfig, cluster.operator_log("defaults"))
        operator.start()
        tracker = Tracker(api, workload.selector, revision_annotation(POLICY))
        await tracker.start()
        try:
            await operator.warm()
            started = time.monotonic()
            await api.apply(f"{cluster.POLICIES}/{POLICY}", every_default_policy(), manager="bench")
            revision = await _revision(api)
            tracker.expect(revision, n)
            injected = await tracker.wait(TIMEOUT) - started
            await tracker.settled(TIMEOUT)
            await operator.warm(at_least=0)
            say(f"every default: injected in {injected:.1f}s; {REST_SECONDS} s at rest")
            before = await api.write_counts()
            await asyncio.sleep(REST_SECONDS)
            rest = delta(before, await api.write_counts())
        finally:
            await tracker.stop()
            operator.stop()
    result = DefaultsResult(n, injected, rest)
    say(f"every default: at rest {result.summary()['rest_writes']}")
    return result


async def _revision(api: Any) -> str:
    """The revision the operator reports: the CRD's defaults shape what it is hashed from."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        status = (await api.request("GET", f"{cluster.POLICIES}/{POLICY}")).get("status") or {}
        if status.get("revision"):
            return str(status["revision"])
        await asyncio.sleep(0.5)
    raise TimeoutError("the policy never got a revision")
