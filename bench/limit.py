"""The limit: a bare client that sends the operator's own server-side applies and nothing else.
The bodies come from the operator's planner, run on one fresh listing before the clock starts,
so the operator is compared with the same writes sent as fast as the API server takes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.kube import Api, key_of, run_bounded
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner
from sidecar_operator.core.ownership import field_manager, revision_annotation
from sidecar_operator.core.types import Kind


@dataclass(frozen=True)
class Write:
    manager: str  # the policy's field manager, as the operator's write for it
    path: str
    body: dict[str, Any]
    force: bool


@dataclass(frozen=True)
class Plan:
    writes: list[Write]
    # Deployment key -> the revision annotations it carries once the writes are done
    revisions: dict[str, dict[str, str]]
    skipped: int  # (policy, Deployment) pairs the policy skips: it lost a clash


async def plan(api: Api, selector: str, policies: Sequence[Policy]) -> Plan:
    """Every write the policies call for on the selected Deployments as they are now (no
    policies: the release of whatever a policy still owns)."""
    listing = await api.request(
        "GET", "/apis/apps/v1/deployments", params={"labelSelector": selector}
    )
    writes = []
    revisions = {}
    skipped = 0
    for item in listing["items"]:
        meta = item["metadata"]
        path = f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}"
        actions = planner.plan(item, {}, policies)
        revisions[key_of(item)] = {
            revision_annotation(a.policy): a.revision
            for a in actions
            if a.kind in (Kind.APPLY, Kind.IN_SYNC)
        }
        skipped += sum(1 for a in actions if a.kind is Kind.CONFLICT)
        writes += [
            Write(field_manager(a.policy), path, a.body, a.force)
            for a in actions
            if a.body is not None
        ]
    return Plan(writes, revisions, skipped)


async def send(api: Api, writes: list[Write], concurrency: int) -> None:
    """At most `concurrency` requests in flight, and never two to one Deployment: the API server
    retries a write that lost a race for its object, and with three policies' writes to each
    Deployment in flight at once the inject took longer (P=10, N=200, on a machine shared with a
    test run: 4.8 and 4.1 s in policy order, 512 in flight, against 2.4 and 2.7 s with one write
    at a time to each Deployment)."""
    chains: dict[str, list[Write]] = {}
    for write in writes:
        chains.setdefault(write.path, []).append(write)

    async def chain(queue: list[Write]) -> None:
        for write in queue:
            await api.apply(write.path, write.body, manager=write.manager, force=write.force)

    def job(queue: list[Write]) -> Callable[[], Awaitable[None]]:
        return lambda: chain(queue)

    await run_bounded([job(queue) for queue in chains.values()], concurrency)
