"""Carrying out plans, against a fake API that injects faults (the real API server is used for
everything else)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

import pytest

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.names import HISTORY_POLICY_LABEL, HISTORY_REVISION_LABEL, SHARD_LABEL
from sidecar_operator.core import planner, ssa
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.core.types import Key, Kind
from sidecar_operator.engine import passes as engine_passes
from sidecar_operator.engine import reporting
from sidecar_operator.engine.flags import Flag
from sidecar_operator.engine.leadership import Identity, Leadership
from sidecar_operator.engine.pacing import MAX_REST, Pacer
from sidecar_operator.engine.runtime import SETTLE, Runtime
from sidecar_operator.engine.writer import Outcome
from sidecar_operator.kube.client import ApiError

POLICY_OBJECT: dict[str, Any] = {
    "metadata": {"name": "logs", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"selector": {}, "containers": [{"name": "fluent-bit", "image": "fluent-bit:3"}]},
}
DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "10", "uid": "u-web"},
    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
}


def named(name: str) -> dict[str, Any]:
    other = copy.deepcopy(DEPLOYMENT)
    other["metadata"].update(name=name, uid=f"u-{name}")
    return other


DEPLOYMENTS = (WorkloadKind.DEPLOYMENT,)


class FakeApi:
    """Applies like the API server (per `core.ssa`), after failing with the given errors, or with
    an error for one Deployment by name."""

    def __init__(
        self,
        *failures: Exception,
        refuse: dict[str, Exception] | None = None,
        deleted: frozenset[str] = frozenset(),
    ) -> None:
        self.failures = list(failures)
        self.refuse = refuse or {}
        self.deleted = deleted
        self.stored: dict[str, dict[str, Any]] = {}
        self.applies: list[tuple[str, bool]] = []
        self.statuses: list[dict[str, Any]] = []

    async def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        self.applies.append((policy, force))
        name = body["metadata"]["name"]
        if self.failures:
            raise self.failures.pop(0)
        if name in self.refuse:
            raise self.refuse[name]
        stored = self.stored.get(name) or named(name)
        stored = ssa.apply(stored, field_manager(policy), body)
        stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)
        self.stored[name] = stored
        return copy.deepcopy(stored)

    async def get_workload(self, key: Key) -> dict[str, Any] | None:
        name = key.name
        if name in self.deleted:
            return None
        return copy.deepcopy(self.stored.get(name) or named(name))

    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)

    async def list_metadata(self, path: str, *, limit: int, token: str | None) -> dict[str, Any]:
        return {"items": [], "metadata": {}}


class Switch(Leadership):
    """Leadership a test turns on and off."""

    def __init__(self) -> None:
        super().__init__(Identity("test", 0), peering=None)
        self.on = True

    @property
    def active(self) -> bool:
        return self.on


def runtime(api: FakeApi, *deployments: dict[str, Any]) -> tuple[Runtime, list[tuple[str, str]]]:
    """Made on the test's loop, as the handlers make it on Kopf's."""
    posted: list[tuple[str, str]] = []

    def events(ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        posted.append((type, reason))

    state = Runtime(
        api,
        events,
        leadership=Switch(),
        operator_namespace=None,
        resync_seconds=60,
    )
    state.indexed.set()
    state.cache.put_policy(POLICY_OBJECT)
    for deployment in deployments or (DEPLOYMENT,):
        state.cache.put_workload(deployment)
    return state, posted


def switch(state: Runtime) -> Switch:
    assert isinstance(state.leadership, Switch)
    return state.leadership


async def stop(task: asyncio.Future[None]) -> None:
    """Cancel a worker as Kopf does, and wait until it (and what it awaits) has stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def action_for(state: Runtime, deployment: dict[str, Any]) -> planner.Action:
    return next(a for a in state.plans.plan(deployment) if a.policy == "logs")


async def execute(state: Runtime, *deployments: dict[str, Any]) -> list[Outcome]:
    """Write the policy's actions for these Deployments, as held in the cache (as a pass does)."""
    held = dict(state.cache.workloads())
    records = [held[Key("shop", d["metadata"]["name"])] for d in deployments or (DEPLOYMENT,)]
    work = [(action_for(state, record), record) for record in records]
    return await state.writer.execute_all(work, lambda announcement: None)


async def test_a_409_is_retried_with_fresh_state_and_never_forced() -> None:
    api = FakeApi(ApiError(409, 'Apply failed with 1 conflict: conflict with "kubectl-edit"'))
    state, _ = runtime(api)
    assert await execute(state) == [Outcome.WRITTEN]
    assert api.applies == [("logs", False), ("logs", False)]
    containers = api.stored["web"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "fluent-bit"]


async def test_a_conflict_that_persists_is_reported_not_forced() -> None:
    conflict = ApiError(409, "Apply failed with 1 conflict")
    api = FakeApi(conflict, conflict, conflict)
    state, posted = runtime(api)
    assert await execute(state) == [Outcome.CONFLICT]
    assert all(not force for _, force in api.applies) and len(api.applies) == 3
    assert ("Warning", "SidecarConflict") in posted and ("Warning", "Conflict") in posted
    assert api.stored == {}


async def test_a_rejected_patch_is_a_conflict_until_the_policy_or_deployment_changes() -> None:
    api = FakeApi(ApiError(422, 'Deployment.apps "web" is invalid'))
    state, _ = runtime(api)
    assert await execute(state) == [Outcome.REJECTED]
    await state.run_pass(state.worker("logs"))
    assert len(api.applies) == 1  # the same content is not sent again
    assert api.statuses[-1]["conflicts"] == 1
    assert "the API server rejected the change" in api.statuses[-1]["conditions"][2]["message"]

    relabelled = copy.deepcopy(DEPLOYMENT)
    relabelled["metadata"].update(resourceVersion="11", labels={"fixed": "yes"})
    state.workload_changed(relabelled, deleted=False)
    await state.run_pass(state.worker("logs"))
    assert len(api.applies) == 2  # the Deployment changed: tried once more, and written


async def test_a_refusal_of_a_copy_the_watch_had_not_brought_up_to_date_is_planned_again() -> None:
    """The change was planned on a copy older than the API server's (the watch lags under
    load): the refusal is of that copy, so it is not reported; planned again on the current
    copy, here one the user changed meanwhile, the change is sent again and accepted. Seen on
    the real control plane: a removal planned before the watch brought another manager's claim
    on the sidecar was reported as the API server's bare refusal, not as what blocks it."""
    api = FakeApi(ApiError(422, 'Deployment.apps "web" is invalid'))
    newer = copy.deepcopy(DEPLOYMENT)
    newer["metadata"].update(resourceVersion="11", labels={"changed": "yes"})
    api.stored["web"] = newer
    state, posted = runtime(api)
    assert await execute(state) == [Outcome.WRITTEN]
    assert len(api.applies) == 2
    assert ("Warning", "SidecarConflict") not in posted
    containers = api.stored["web"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "fluent-bit"]


@pytest.mark.parametrize(
    "refusal",
    [
        ApiError(403, 'admission webhook "deny.example.com" denied the request: no sidecars'),
        ApiError(400, "error decoding patch"),
        ApiError(413, "Request entity too large"),
    ],
    ids=["403", "400", "413"],
)
async def test_any_4xx_is_that_deployment_s_problem_and_the_batch_goes_on(
    refusal: ApiError,
) -> None:
    refused, fine = named("refused"), named("fine")
    api = FakeApi(refuse={"refused": refusal})
    state, posted = runtime(api, refused, fine)
    assert await execute(state, refused, fine) == [Outcome.REJECTED, Outcome.WRITTEN]
    assert ("Warning", "SidecarConflict") in posted
    await state.run_pass(state.worker("logs"))
    assert api.statuses[-1]["conflicts"] == 1
    assert refusal.message in api.statuses[-1]["conditions"][2]["message"]


@pytest.mark.parametrize(
    "answer",
    [
        ApiError(422, 'Deployment.apps "gone" is invalid: spec.selector: Required value'),
        ApiError(403, "unable to create new content in namespace shop: it is being terminated"),
    ],
    ids=["422", "403"],
)
async def test_a_deployment_deleted_before_its_write_is_gone_not_a_conflict(
    answer: ApiError,
) -> None:
    """Server-side apply to a Deployment deleted meanwhile tries to create it, and the partial
    body is refused: the Deployment is gone, which is nobody's conflict. Found by the chaos
    corpus, where policy deletion then retried the removal forever."""
    gone, fine = named("gone"), named("fine")
    api = FakeApi(refuse={"gone": answer}, deleted=frozenset({"gone"}))
    state, posted = runtime(api, gone, fine)
    assert await execute(state, gone, fine) == [Outcome.GONE, Outcome.WRITTEN]
    assert ("Warning", "SidecarConflict") not in posted


async def test_a_write_answered_after_the_watch_saw_the_deletion_does_not_bring_it_back() -> None:
    """The watch's DELETED can arrive while our write to that Deployment is in flight; its
    answer must not put the Deployment back in the cache (found by the chaos corpus: the
    policy counted it as matched, and its deletion tried to clean it up, forever)."""
    api = FakeApi()
    state, _ = runtime(api)
    apply = api.apply

    async def deleted_meanwhile(body: dict[str, Any], *, policy: str, force: bool) -> Any:
        written = await apply(body, policy=policy, force=force)
        state.cache.drop_workload(Key("shop", "web"))  # the watch's DELETED, first
        return written

    api.apply = deleted_meanwhile  # type: ignore[method-assign]
    assert await execute(state) == [Outcome.GONE]
    assert state.cache.workloads() == []
    await state.run_pass(state.worker("logs"))
    assert api.statuses[-1]["matchedWorkloads"] == 0


async def test_writes_that_keep_failing_for_one_deployment_neither_stall_nor_hide(
    monkeypatch: Any,
) -> None:
    """A webhook that is down answers 500 for the Deployments it covers. Found by the chaos
    corpus: under maxConcurrent 1 that Deployment took the only slot on every pass, so the
    rest never rolled out, and nothing but the operator's log said why."""
    rolled_out = {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}
    rolled_out |= {"availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
    deployments = [named("a-refused"), named("b-fine")]
    for deployment in deployments:
        deployment["metadata"].update(generation=1, creationTimestamp="2025-01-01T00:00:00Z")
        deployment["status"] = rolled_out
    webhook_down = ApiError(500, 'failed calling webhook "deny.example.com": connection refused')
    api = FakeApi(refuse={"a-refused": webhook_down})
    api.stored = {d["metadata"]["name"]: copy.deepcopy(d) for d in deployments}
    state, posted = runtime(api, *deployments)

    def written(name: str) -> bool:
        return field_manager("logs") in {
            entry["manager"] for entry in api.stored[name]["metadata"].get("managedFields", [])
        }

    one_at_a_time = copy.deepcopy(POLICY_OBJECT)
    one_at_a_time["spec"]["updateStrategy"] = {"maxConcurrent": 1}
    state.cache.put_policy(one_at_a_time)
    worker = state.worker("logs")

    assert await state.run_pass(worker)  # a-refused comes first, and fails
    await state.run_pass(worker)  # it waits for its next try; the slot goes on
    assert written("b-fine") and not written("a-refused")
    assert ("Warning", "SidecarConflict") not in posted  # one failure is not news
    failing = state.reporter.memory("logs").failing

    monkeypatch.setattr(reporting, "FAILING_REPORTED_AFTER", 0.0)
    failing[Key("shop", "a-refused")].retry_at = time.monotonic()
    await state.run_pass(worker)  # failing still: now the user is told
    await state.run_pass(worker)
    assert ("Warning", "SidecarConflict") in posted
    assert api.statuses[-1]["conflicts"] == 1
    assert "failed calling webhook" in api.statuses[-1]["conditions"][2]["message"]

    api.refuse.clear()  # the webhook is back
    failing[Key("shop", "a-refused")].retry_at = time.monotonic()
    await state.run_pass(worker)
    await state.run_pass(worker)
    assert written("a-refused") and not failing
    assert api.statuses[-1]["conflicts"] == 0


@pytest.mark.parametrize(
    "failure",
    [
        ApiError(500, "etcdserver: request timed out"),
        ApiError(429, "too many requests"),
        ConnectionError("PATCH: ServerDisconnectedError"),
    ],
    ids=["500", "429", "no answer"],
)
async def test_a_failure_that_may_pass_is_retried_by_the_worker_and_the_batch_goes_on(
    failure: Exception,
) -> None:
    api = FakeApi(failure)
    state, _ = runtime(api, named("first"), named("second"))
    outcomes = await execute(state, named("first"), named("second"))
    assert sorted(outcomes) == sorted([Outcome.FAILED, Outcome.WRITTEN])
    for failing in state.reporter.memory("logs").failing.values():
        failing.retry_at = time.monotonic()  # an answer said "later": its wait is over
    failed = await state.run_pass(state.worker("logs"))
    assert not failed and len(api.stored) == 2  # the next pass wrote the other


async def test_a_worker_survives_an_api_server_outage_and_retries_soon(monkeypatch: Any) -> None:
    """A status write without an answer ended the worker, which Kopf restarted 60 s later."""
    api = FakeApi()
    outage = [ConnectionError("PATCH: Cannot connect to host")] * 2

    async def status(name: str, body: dict[str, Any]) -> None:
        if outage:
            raise outage.pop()
        api.statuses.append(body)

    monkeypatch.setattr(api, "patch_policy_status", status)
    monkeypatch.setattr("sidecar_operator.engine.worker.RETRY_FIRST", 0.01)
    state, _ = runtime(api)
    state.listings.listed(WorkloadKind.DEPLOYMENT)
    worker = asyncio.ensure_future(state.run_worker("logs"))
    try:
        for _ in range(200):
            if api.statuses and "web" in api.stored and state.worker("logs").retry == 0:
                break
            await asyncio.sleep(0.05)
    finally:
        await stop(worker)
    assert api.statuses and "web" in api.stored and not outage
    assert state.worker("logs").retry == 0.0  # the last pass went well


async def test_a_plan_outlives_status_changes_but_not_a_spec_change() -> None:
    """A rollout changes each Deployment's status many times; re-planning on each cost a core."""
    state, _ = runtime(FakeApi())
    deployment = copy.deepcopy(DEPLOYMENT)
    deployment["metadata"]["generation"] = 1
    planned = state.plans.plan(deployment)
    assert [a.kind for a in planned] == [planner.Kind.APPLY]

    rolling = copy.deepcopy(deployment)
    rolling["metadata"]["resourceVersion"] = "11"
    rolling["status"] = {"observedGeneration": 1, "updatedReplicas": 1}
    assert state.plans.plan(rolling) is planned

    taken = copy.deepcopy(rolling)
    taken["metadata"].update(resourceVersion="12", generation=2)
    taken["spec"]["template"]["spec"]["containers"].append({"name": "fluent-bit", "image": "x"})
    assert [a.kind for a in state.plans.plan(taken)] == [Kind.CONFLICT]


async def test_a_pass_waits_ten_times_the_last_pass_s_cpu_whichever_policy_s_up_to_a_cap(
    monkeypatch: Any,
) -> None:
    """Under a rollout's storm of status changes passes would run back to back, and a hundred
    policies' passes would each take their own tenth of the loop."""
    waits: list[float] = []

    async def wait_at_most(self: Flag, seconds: float) -> bool:
        waits.append(seconds)
        return False

    monkeypatch.setattr(Flag, "wait_at_most", wait_at_most)
    pacer = Pacer()
    async with pacer.turn(Flag(), full=True):  # one policy's pass
        pacer.spent(0.01)
    async with pacer.turn(Flag(), full=True):  # another's
        pacer.spent(10.0)
    async with pacer.turn(Flag(), full=False):  # a workload's event: per-event work, no wait
        pass
    async with pacer.turn(Flag(), full=True):
        pass
    assert waits == [0.0, pytest.approx(10 * 0.01, abs=0.01), pytest.approx(MAX_REST, abs=0.01)]


async def test_passes_take_turns_in_order_and_an_edit_does_not_queue() -> None:
    pacer = Pacer()
    order: list[str] = []

    async def plan(name: str, urgent: Flag) -> None:
        async with pacer.turn(urgent, full=True):
            order.append(name)
            pacer.spent(0.001)

    urgent = Flag()
    urgent.set()
    async with pacer.turn(Flag(), full=True):  # a pass under way
        queued = [asyncio.ensure_future(plan(name, Flag())) for name in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(plan("edited", urgent), timeout=5)  # while a, b and c queue
        assert order == ["edited"]
    await asyncio.gather(*queued)
    assert order == ["edited", "a", "b", "c"]


async def test_a_spec_change_ends_the_wait_for_a_turn_and_a_status_change_does_not() -> None:
    """An edit of the policy must not wait out the pace set for full passes."""
    state, _ = runtime(FakeApi())
    worker = state.worker("logs")
    await state.run_pass(worker)  # the worker has seen generation 0
    assert not worker.urgent.is_set()

    state.cache.put_policy({**POLICY_OBJECT, "status": {"matchedWorkloads": 1}})
    state.policy_changed("logs")  # its own status write: same generation
    assert worker.wake.is_set() and not worker.urgent.is_set()

    state.pacer.spent(3600)  # the next full pass is MAX_REST seconds away
    worker.full = True  # its resync, say
    waiting = asyncio.ensure_future(state.run_pass(worker))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    edited = copy.deepcopy(POLICY_OBJECT)
    edited["metadata"]["generation"] = 2
    state.cache.put_policy(edited)
    state.policy_changed("logs")
    await asyncio.wait_for(waiting, timeout=MAX_REST / 2)  # the wait ended on the edit


async def test_a_new_policy_s_first_pass_waits_for_the_policies_applied_with_it() -> None:
    """Else the loser of a clash injects before the winner arrives, and takes it back."""
    api = FakeApi()
    state, _ = runtime(api)
    state.listings.listed(WorkloadKind.DEPLOYMENT)
    loser = asyncio.ensure_future(state.run_worker("logs"))
    await asyncio.sleep(SETTLE / 2)
    winner = copy.deepcopy(POLICY_OBJECT)  # the same container, a higher priority
    winner["metadata"]["name"] = "fluent"
    winner["spec"]["priority"] = 10
    state.cache.put_policy(winner)
    state.policy_changed("fluent")
    winning = asyncio.ensure_future(state.run_worker("fluent"))
    await asyncio.sleep(SETTLE * 4)
    await stop(loser)
    await stop(winning)
    assert api.applies == [("fluent", False)]


async def test_a_standby_writes_nothing() -> None:
    api = FakeApi()
    state, _ = runtime(api)
    switch(state).on = False
    state.listings.listed(WorkloadKind.DEPLOYMENT)
    worker = asyncio.ensure_future(state.run_worker("logs"))
    await asyncio.sleep(1.5)
    await stop(worker)
    assert api.applies == [] and api.statuses == []


async def test_the_first_complete_listing_calls_the_process_hook_once() -> None:
    calls: list[bool] = []
    state, _ = runtime(FakeApi())
    state.on_first_listing = lambda: calls.append(state.listings.complete(DEPLOYMENTS))
    key = Key.of(DEPLOYMENT)
    state.workloads_listed(WorkloadKind.DEPLOYMENT, [key])
    state.workloads_listed(WorkloadKind.DEPLOYMENT, [key])  # a relist after the watch expired
    assert calls == [False]  # once, before the workers may count on the cache
    assert state.listings.complete(DEPLOYMENTS)


async def test_cleanup_releases_what_a_deleted_policy_added_and_a_standby_leaves_orphans() -> None:
    api = FakeApi()
    state, _ = runtime(api)
    assert await execute(state) == [Outcome.WRITTEN]
    assert "fluent-bit" in [c["name"] for c in pod(api.stored["web"])]
    injected = dict(state.cache.workloads())[Key("shop", "web")]

    switch(state).on = False
    state.cleanup.remove_orphans(injected, ["logs"])  # the policy is gone; a standby writes nothing
    await asyncio.sleep(0.1)
    assert len(api.applies) == 1
    assert await state.cleanup.remove_everywhere("logs") == ["shop/web: fenced"]
    assert len(api.applies) == 1

    switch(state).on = True
    assert await state.cleanup.remove_everywhere("logs") == []
    assert [c["name"] for c in pod(api.stored["web"])] == ["app"]


def pod(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


async def test_a_pass_over_many_deployments_lets_the_loop_run_between_its_slices(
    monkeypatch: Any,
) -> None:
    """On the one loop, a pass that never yielded would hold up the watches, the writes and
    /healthz for as long as it plans."""
    monkeypatch.setattr("sidecar_operator.engine.passes.SLICE_SECONDS", 0.0)  # yield at each look
    state, _ = runtime(FakeApi(), *(named(f"app-{index}") for index in range(1000)))
    ticks = 0
    planning = True

    async def other_work() -> None:
        nonlocal ticks
        while planning:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    await asyncio.sleep(0)
    try:
        planned = await state.passes.prepare(state.worker("logs"))
    finally:
        planning = False
        await other
    assert len(planned.writes) == 1000  # every Deployment planned, and the budget allows all
    assert ticks >= 1000 // engine_passes.SLICE_CHECK  # the other task ran between slices


async def test_a_pass_that_saw_its_policy_change_meanwhile_decides_nothing() -> None:
    """Its plans are partly of the old spec: the change woke the worker for a whole new pass."""
    state, _ = runtime(FakeApi())
    real_fill = state.passes._fill

    async def fill_then_edit(*args: Any) -> Any:
        result = await real_fill(*args)
        edited = copy.deepcopy(POLICY_OBJECT)
        edited["metadata"]["generation"] = 2
        edited["spec"]["containers"][0]["image"] = "fluent-bit:4"
        state.cache.put_policy(edited)
        return result

    state.passes._fill = fill_then_edit  # type: ignore[method-assign,assignment]
    planned = await state.passes.prepare(state.worker("logs"))
    assert planned.status is None and planned.writes == []


async def test_a_deployment_event_wakes_the_policies_that_match_it_or_own_fields_on_it() -> None:
    state, _ = runtime(FakeApi())
    for name in ("metrics", "proxy"):
        other = copy.deepcopy(POLICY_OBJECT)
        other["metadata"]["name"] = name
        other["spec"]["selector"] = {"matchLabels": {"team": "search"}}  # not the Deployment's
        state.cache.put_policy(other)
    logs, metrics, proxy = (state.worker(name) for name in ("logs", "metrics", "proxy"))
    carrying = copy.deepcopy(DEPLOYMENT)
    carrying["metadata"]["resourceVersion"] = "11"
    carrying["metadata"]["managedFields"] = [
        {
            "manager": field_manager("metrics"),
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:volumes": {}}}}},
        }
    ]
    state.workload_changed(carrying, deleted=False)
    assert logs.wake.is_set()  # selects it
    assert metrics.wake.is_set()  # no longer selects it, but has fields to take back
    assert not proxy.wake.is_set()  # neither: a rollout elsewhere must not wake it


async def test_writes_in_flight_are_bounded_across_every_policys_batches(
    monkeypatch: Any,
) -> None:
    """A hundred policies rolling out at once each sent their own 128: 12,800 requests queued
    on the session's connections until they timed out."""
    monkeypatch.setattr("sidecar_operator.engine.writer.WRITERS", 4)
    api = FakeApi()
    in_flight, most = 0, 0
    real_apply = api.apply

    async def slow_apply(body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.001)
        try:
            return await real_apply(body, policy=policy, force=force)
        finally:
            in_flight -= 1

    monkeypatch.setattr(api, "apply", slow_apply)
    state, _ = runtime(api, *(named(f"app-{index}") for index in range(20)))
    batches = [
        execute(state, *(named(f"app-{index}") for index in range(start, start + 10)))
        for start in (0, 10)
    ]
    outcomes = await asyncio.gather(*batches)
    assert [o for batch in outcomes for o in batch] == [Outcome.WRITTEN] * 20
    assert most == 4  # the bound is shared: two batches did not make it eight


async def test_an_idle_worker_sleeps_until_its_aggregated_events_are_due(monkeypatch: Any) -> None:
    """A hundred idle workers that woke every second to find nothing to do took a tenth of the
    operator's CPU at rest: a worker sleeps until its resync, held-back status or Events."""
    monkeypatch.setattr(reporting, "EVENT_INTERVAL", 0.5)
    state, posted = runtime(FakeApi(), named("web"))
    worker = state.worker("logs")
    wakes = 0
    wait_at_most = worker.wake.wait_at_most

    async def counted(seconds: float | None) -> bool:
        nonlocal wakes
        wakes += 1
        return await wait_at_most(seconds)

    monkeypatch.setattr(worker.wake, "wait_at_most", counted)
    state.listings.listed(WorkloadKind.DEPLOYMENT)
    task = asyncio.ensure_future(state.run_worker("logs"))
    await asyncio.sleep(SETTLE + 0.2)
    assert posted.count(("Normal", "SidecarsInjected")) == 1
    assert posted.count(("Normal", "Injected")) == 0  # held for EVENT_INTERVAL
    state.workload_changed(named("api"), deleted=False)  # a new Deployment: the pass injects
    await asyncio.sleep(0.5)
    assert posted.count(("Normal", "SidecarsInjected")) == 2
    assert posted.count(("Normal", "Injected")) == 1  # both, due and posted without a poke
    idle = wakes
    await asyncio.sleep(2.5)
    await stop(task)
    assert wakes - idle <= 1  # nothing due until the resync, a minute away


async def test_a_worker_cancelled_as_it_is_woken_stops() -> None:
    """Kopf cancels a worker when its policy goes or its replica stands by; a cancellation that
    came as the worker's flag was set was swallowed (`asyncio.wait_for` on Python 3.11), and the
    worker ran on: a test that stopped one hung until its timeout."""
    flag = Flag()

    async def worker() -> None:
        while True:
            await flag.wait_at_most(10)
            flag.clear()

    for _ in range(20):
        task = asyncio.ensure_future(worker())
        await asyncio.sleep(0)  # waiting on the flag
        flag.set()
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=1)
        assert done and task.cancelled()


async def test_a_placeholder_naming_a_new_annotation_lists_every_workload_again() -> None:
    """Until listed again the snapshots lack it: no pass may run (a default would be written)."""
    state, _ = runtime(FakeApi())
    relisted: list[bool] = []
    state.relist = lambda: relisted.append(state.listings.complete(DEPLOYMENTS))
    state.listings.listed(WorkloadKind.DEPLOYMENT)
    owner = {"name": "OWNER", "value": "{{ workload.annotations['owner'] | default 'x' }}"}
    named = copy.deepcopy(POLICY_OBJECT)
    named["spec"]["containers"] = [{**named["spec"]["containers"][0], "env": [owner]}]
    state.policy_seen(named, deleted=False)
    assert relisted == [False]
    # The listing brings the workload at the version held before, with its annotations.
    listed = copy.deepcopy(DEPLOYMENT)
    listed["metadata"]["annotations"] = {"owner": "ana", "other": "x"}
    state.workload_changed(listed, deleted=False)
    state.workloads_listed(WorkloadKind.DEPLOYMENT, [Key("shop", "web")])
    held = state.cache.workload(Key("shop", "web"))
    assert held is not None and held["metadata"]["annotations"] == {"owner": "ana"}
    state.policy_seen(named, deleted=False)  # nothing new to keep: no listing
    assert relisted == [False]


async def test_a_stable_revision_setting_a_new_pod_annotation_lists_every_workload_again() -> None:
    """A rollout in steps plans the stable revision's content for the workloads not yet
    covered: the annotations it sets on the pod template must be in the snapshots too."""
    state, _ = runtime(FakeApi())
    relisted: list[bool] = []
    state.relist = lambda: relisted.append(state.listings.complete(DEPLOYMENTS))
    state.listings.listed(WorkloadKind.DEPLOYMENT)
    content = copy.deepcopy(POLICY_OBJECT["spec"])
    content["podMetadata"] = {"annotations": {"prometheus.io/scrape": "true"}}
    revision = {
        "metadata": {
            "name": "logs-abc",
            "labels": {HISTORY_POLICY_LABEL: "logs", HISTORY_REVISION_LABEL: "abc"},
        },
        "data": {key: content[key] for key in ("containers", "podMetadata")},
        "revision": 1,
    }
    state.revision_seen(revision, deleted=False)
    assert relisted == [False]
    assert "prometheus.io/scrape" in state.cache.annotation_keys
    state.revision_seen(revision, deleted=False)
    assert relisted == [False]


async def test_an_operator_serving_other_policies_never_takes_their_sidecars_for_leftovers() -> (
    None
):
    """`--shard`: the policies another operator serves exist; what they added is theirs. Only
    a policy that is gone leaves orphans, whoever served it."""
    api = FakeApi()
    serving_all, _ = runtime(api)
    assert await execute(serving_all) == [Outcome.WRITTEN]  # `logs` (unlabelled) injected
    injected = api.stored["web"]

    sharded = Runtime(
        api,
        lambda ref, **_: None,
        leadership=Switch(),
        operator_namespace=None,
        resync_seconds=60,
        shard="blue",
    )
    blue = copy.deepcopy(POLICY_OBJECT)
    blue["metadata"].update(name="blue", labels={SHARD_LABEL: "blue"})
    sharded.policy_seen(copy.deepcopy(POLICY_OBJECT), deleted=False)
    sharded.policy_seen(blue, deleted=False)
    sharded.policies_listed([("", "logs"), ("", "blue")])
    sharded.workload_changed(copy.deepcopy(injected), deleted=False)
    sharded.workloads_listed(WorkloadKind.DEPLOYMENT, [Key.of(injected)])
    sharded.cleanup.sweep()
    await asyncio.sleep(0.1)
    assert sorted(sharded.cache.policies()) == ["blue"]
    assert api.applies == [("logs", False)]  # nothing removed: `logs` is served elsewhere

    relabelled = copy.deepcopy(blue)
    relabelled["metadata"]["labels"] = {SHARD_LABEL: "green"}
    sharded.policy_seen(relabelled, deleted=False)  # moved to another operator: not deleted
    assert sharded.cache.policies() == {} and sharded.cache.gone(["blue", "logs"]) == []

    sharded.policy_seen(copy.deepcopy(POLICY_OBJECT), deleted=True)
    sharded.cleanup.sweep()
    await asyncio.sleep(0.1)
    assert api.applies[1:] == [("logs", False)]  # gone: its leftovers are removed
    assert [c["name"] for c in pod(api.stored["web"])] == ["app"]


async def test_another_operator_s_policy_deleted_while_no_watch_ran_is_forgotten() -> None:
    """A relisting without it: from then on, what it added is left over."""
    state, _ = runtime(FakeApi())  # serves the unlabelled `logs`
    blue = copy.deepcopy(POLICY_OBJECT)
    blue["metadata"].update(name="blue", labels={SHARD_LABEL: "blue"})
    state.policy_seen(blue, deleted=False)
    assert state.cache.gone(["blue", "logs"]) == [] and "blue" not in state.workers
    state.policies_listed([("", "logs")])
    assert state.cache.gone(["blue", "logs"]) == ["blue"]
    assert state.cache.policy("logs") is not None
