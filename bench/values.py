"""Per-workload values against the limit and a plain policy: N Deployments (0 replicas, so the
writes are what is timed), the bench's log-shipper policy with per-workload values in an env
value, its args and a pod annotation (so every workload gets a body of its own), injected by the
limit (the same bodies, planned before the clock starts) and by the operator; then the plain
policy injected by a fresh operator, whose peak RSS the placeholder policy's fresh operator is
set against. Targets: the placeholder inject within 1.3x the limit's, the peak RSS within 10% of
the plain policy's."""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from typing import Any

from bench import cluster, limit
from bench.kube import Api, Tracker
from bench.measure import TIMEOUT, Phase, measure, say
from bench.process import OperatorProcess
from bench.workload import POLICY, Workload, as_policy_object, policy
from sidecar_operator import devcluster
from sidecar_operator.api.models import Policy
from sidecar_operator.core.ownership import revision_annotation

INJECT_TARGET = 1.3  # the placeholder policy's inject against the limit's
RSS_TARGET = 1.10  # the placeholder policy's peak RSS against the plain policy's
TAG = "3.1.9"


def templated() -> dict[str, Any]:
    """The bench's policy with the three classic uses of per-workload values."""
    body = copy.deepcopy(policy(TAG))
    spec = body["spec"]
    (shipper,) = spec["containers"]
    shipper["args"] = [*shipper["args"], "-p", "tag={{ workload.namespace }}.{{ workload.name }}"]
    shipper["env"] = [
        {"name": "SERVICE", "value": "{{ workload.name }}"},
        {"name": "TEAM", "value": "{{ workload.labels['team'] | default 'none' }}"},
    ]
    spec["podMetadata"] = {
        "annotations": {"example.com/log-tag": "{{ workload.namespace }}.{{ workload.name }}"}
    }
    return body


@dataclass
class ValuesResult:
    n: int
    limit: list[Phase] = field(default_factory=list)
    templated: list[Phase] = field(default_factory=list)
    plain: list[Phase] = field(default_factory=list)
    templated_rss_mb: list[float] = field(default_factory=list)
    plain_rss_mb: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        limit_s = statistics.median(p.seconds for p in self.limit)
        templated_s = statistics.median(p.seconds for p in self.templated)
        plain_s = statistics.median(p.seconds for p in self.plain)
        rss_ratio = round(
            statistics.median(self.templated_rss_mb) / statistics.median(self.plain_rss_mb), 3
        )
        return {
            "n": self.n,
            "limit_inject_seconds": round(limit_s, 2),
            "templated_inject_seconds": round(templated_s, 2),
            "plain_inject_seconds": round(plain_s, 2),
            "inject_ratio": round(templated_s / limit_s, 2),
            "plain_inject_ratio": round(plain_s / limit_s, 2),
            "inject_target": INJECT_TARGET,
            "templated_peak_rss_mb": [round(r, 1) for r in self.templated_rss_mb],
            "plain_peak_rss_mb": [round(r, 1) for r in self.plain_rss_mb],
            "rss_ratio": rss_ratio,
            "rss_target": RSS_TARGET,
            "runs": {
                "limit": [p.summary() for p in self.limit],
                "templated": [p.summary() for p in self.templated],
                "plain": [p.summary() for p in self.plain],
            },
            "met": templated_s / limit_s <= INJECT_TARGET and rss_ratio <= RSS_TARGET,
        }


class _Scenario:
    def __init__(
        self, api: Api, kube: devcluster.Cluster, workload: Workload, concurrency: int
    ) -> None:
        self.api, self.kube, self.workload, self.concurrency = api, kube, workload, concurrency
        self.tracker = Tracker(api, workload.selector, revision_annotation(POLICY))
        self.path = f"{cluster.POLICIES}/{POLICY}"

    async def phase(
        self, action: Any, wanted: str | None, operator: OperatorProcess | None, **kw: Any
    ) -> Phase:
        self.tracker.expect(wanted, self.workload.count)
        return await measure(self.api, self.tracker, action, str(wanted), quiet=operator, **kw)

    async def by_limit(self, body: dict[str, Any]) -> Phase:
        planned = Policy.from_object(as_policy_object(body, 1))
        plan = await limit.plan(self.api, self.workload.selector, [planned])
        revision = planned.spec.revision
        inject = await self.phase(
            lambda: limit.send(self.api, plan.writes, self.concurrency), revision, None
        )
        release = await limit.plan(self.api, self.workload.selector, [])
        await self.phase(lambda: limit.send(self.api, release.writes, self.concurrency), None, None)
        return inject

    async def by_operator(self, body: dict[str, Any]) -> tuple[Phase, float]:
        """A fresh operator injects the policy, then lets go of it: the inject and its peak
        RSS."""
        revision = Policy.from_object(as_policy_object(body, 1)).spec.revision
        operator = OperatorProcess(self.kube.kubeconfig, cluster.operator_log("values"))
        operator.start()
        try:
            await operator.warm()
            inject = await self.phase(
                lambda: self.api.apply(self.path, body, manager="bench"), revision, operator
            )
            rss = operator.usage().peak_rss_mb
            await self.phase(
                lambda: self.api.request("DELETE", self.path),
                None,
                operator,
                finished=lambda: cluster.policies_gone(self.api, TIMEOUT),
            )
        finally:
            operator.stop()
        return inject, rss


async def run_values(n: int, rounds: int, concurrency: int) -> ValuesResult:
    result = ValuesResult(n)
    async with cluster.fresh() as (kube, api):
        workload = Workload("values", n, replicas=0)
        say(f"values: creating {n} Deployments")
        await workload.create(api)
        scenario = _Scenario(api, kube, workload, concurrency)
        await scenario.tracker.start()
        try:
            await scenario.tracker.settled(TIMEOUT)
            for index in range(rounds):
                say(f"values: round {index + 1}/{rounds}: limit")
                result.limit.append(await scenario.by_limit(templated()))
                say(f"values: round {index + 1}/{rounds}: operator, placeholder policy")
                inject, rss = await scenario.by_operator(templated())
                result.templated.append(inject)
                result.templated_rss_mb.append(rss)
                say(f"values: round {index + 1}/{rounds}: operator, plain policy")
                inject, rss = await scenario.by_operator(policy(TAG))
                result.plain.append(inject)
                result.plain_rss_mb.append(rss)
        finally:
            await scenario.tracker.stop()
    say(f"values: {result.summary()}")
    return result
