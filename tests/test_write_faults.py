"""Carrying out plans, against a fake API that injects faults (the real API server is used for
everything else)."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from sidecar_operator import merge, reconcile, render
from sidecar_operator.kubeapi import ApiError, LoopThread
from sidecar_operator.ownership import field_manager
from sidecar_operator.reconcile import Runtime

POLICY_OBJECT: dict[str, Any] = {
    "metadata": {"name": "logs", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"selector": {}, "containers": [{"name": "fluent-bit", "image": "fluent-bit:3"}]},
}
DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "10", "uid": "u1"},
    "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
}


class FakeApi:
    """Applies like the API server (per `merge`), after failing with the given errors."""

    def __init__(self, *failures: ApiError) -> None:
        self.failures = list(failures)
        self.stored = copy.deepcopy(DEPLOYMENT)
        self.applies: list[tuple[str, bool]] = []
        self.statuses: list[dict[str, Any]] = []

    async def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]:
        self.applies.append((policy, force))
        if self.failures:
            raise self.failures.pop(0)
        self.stored = merge.apply(self.stored, field_manager(policy), body)
        self.stored["metadata"]["resourceVersion"] = str(
            int(self.stored["metadata"]["resourceVersion"]) + 1
        )
        return copy.deepcopy(self.stored)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.stored)

    def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)


LOOP = LoopThread("test-writes")


def runtime(api: FakeApi) -> tuple[Runtime, list[tuple[str, str]]]:
    posted: list[tuple[str, str]] = []

    def events(ref: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        posted.append((type, reason))

    state = Runtime(api, events, loop=LOOP, operator_namespace=None, resync_seconds=60)
    state.cache.put_policy(POLICY_OBJECT)
    state.cache.put_deployment(DEPLOYMENT)
    return state, posted


def first_action(state: Runtime) -> render.Action:
    return next(a for a in state.plan(DEPLOYMENT) if a.policy == "logs")


def test_a_409_is_retried_with_fresh_state_and_never_forced() -> None:
    api = FakeApi(ApiError(409, 'Apply failed with 1 conflict: conflict with "kubectl-edit"'))
    state, _ = runtime(api)
    assert state.execute_all([(first_action(state), DEPLOYMENT)]) == ["written"]
    assert api.applies == [("logs", False), ("logs", False)]
    assert [c["name"] for c in api.stored["spec"]["template"]["spec"]["containers"]] == [
        "app",
        "fluent-bit",
    ]


def test_a_conflict_that_persists_is_reported_not_forced() -> None:
    conflict = ApiError(409, "Apply failed with 1 conflict")
    api = FakeApi(conflict, conflict, conflict)
    state, posted = runtime(api)
    assert state.execute_all([(first_action(state), DEPLOYMENT)]) == ["conflict"]
    assert all(not force for _, force in api.applies) and len(api.applies) == 3
    assert ("Warning", "SidecarConflict") in posted and ("Warning", "Conflict") in posted
    assert api.stored == DEPLOYMENT


def test_a_rejected_patch_is_a_conflict_until_the_policy_changes() -> None:
    api = FakeApi(ApiError(422, 'Deployment.apps "web" is invalid'))
    state, _ = runtime(api)
    assert state.execute_all([(first_action(state), DEPLOYMENT)]) == ["rejected"]
    state.run_pass(state.worker("logs"))
    assert len(api.applies) == 1  # the same content is not sent again
    assert api.statuses[-1]["conflicts"] == 1
    assert "the API server rejected the change" in api.statuses[-1]["conditions"][2]["message"]


def test_a_plan_outlives_status_changes_but_not_a_spec_change() -> None:
    """A rollout changes each Deployment's status many times; re-planning on each cost a core."""
    state, _ = runtime(FakeApi())
    deployment = copy.deepcopy(DEPLOYMENT)
    deployment["metadata"]["generation"] = 1
    planned = state.plan(deployment)
    assert [a.kind for a in planned] == [render.Kind.APPLY]

    rolling = copy.deepcopy(deployment)
    rolling["metadata"]["resourceVersion"] = "11"
    rolling["status"] = {"observedGeneration": 1, "updatedReplicas": 1}
    assert state.plan(rolling) is planned

    taken = copy.deepcopy(rolling)
    taken["metadata"].update(resourceVersion="12", generation=2)
    taken["spec"]["template"]["spec"]["containers"].append({"name": "fluent-bit", "image": "x"})
    assert [a.kind for a in state.plan(taken)] == [render.Kind.CONFLICT]


def test_a_pass_rests_ten_times_its_cpu_time_up_to_the_cap(monkeypatch: Any) -> None:
    """Under a rollout's storm of status changes passes would run back to back."""
    clock = iter([0.0, 0.01, 10.0, 11.0])  # CPU seconds at the start and end of each pass
    monkeypatch.setattr(reconcile.time, "thread_time", lambda: next(clock))
    api = FakeApi()
    state, _ = runtime(api)
    state.listed.set()
    rests: list[float] = []

    def rest(worker: reconcile.Worker, seconds: float, stopped: object) -> None:
        rests.append(seconds)
        worker.poke()  # something changed meanwhile: pass again at once

    monkeypatch.setattr(reconcile.Worker, "rest", rest)
    state.run_worker("logs", lambda: len(rests) == 2)
    assert rests == [10 * 0.01, reconcile.MAX_REST]
    assert api.applies == [("logs", False)]  # the second pass found the Deployment in sync


def test_a_spec_change_cuts_the_rest_short_and_a_status_change_does_not() -> None:
    """An edit of the policy must not wait out the pace set for a rollout's status churn."""
    state, _ = runtime(FakeApi())
    worker = state.worker("logs")
    state.run_pass(worker)  # the worker has seen generation 0
    assert not worker.urgent.is_set()

    state.cache.put_policy({**POLICY_OBJECT, "status": {"matchedDeployments": 1}})
    state.policy_changed("logs")  # its own status write: same generation
    assert worker.wake.is_set() and not worker.urgent.is_set()

    edited = copy.deepcopy(POLICY_OBJECT)
    edited["metadata"]["generation"] = 2
    state.cache.put_policy(edited)
    state.policy_changed("logs")
    assert worker.urgent.is_set()

    resting = threading.Thread(target=worker.rest, args=(3600, lambda: False), daemon=True)
    resting.start()
    resting.join(timeout=60)
    assert not resting.is_alive()  # the hour's rest ended on the edit


def test_a_rest_ends_when_the_daemon_stops() -> None:
    state, _ = runtime(FakeApi())
    stop = threading.Event()
    resting = threading.Thread(
        target=state.worker("logs").rest, args=(3600, stop.is_set), daemon=True
    )
    resting.start()
    stop.set()
    resting.join(timeout=60)
    assert not resting.is_alive()


def test_a_batch_reports_each_outcome_in_order_and_raises_an_unexpected_error() -> None:
    api = FakeApi(ApiError(404, "not found"))
    state, _ = runtime(api)
    action = first_action(state)
    assert state.execute_all([(action, DEPLOYMENT), (action, DEPLOYMENT)]) == ["gone", "written"]

    api = FakeApi(ApiError(500, "etcdserver: request timed out"))
    state, _ = runtime(api)
    with pytest.raises(ApiError, match="request timed out"):  # to the worker: Kopf restarts it
        state.execute_all([(first_action(state), DEPLOYMENT)])


def test_the_first_complete_listing_calls_the_process_hook_once() -> None:
    calls: list[bool] = []
    state = Runtime(
        FakeApi(),
        lambda ref, **_: None,
        loop=LOOP,
        operator_namespace=None,
        resync_seconds=60,
        on_first_listing=lambda: calls.append(state.listed.is_set()),
    )
    key = (DEPLOYMENT["metadata"]["namespace"], DEPLOYMENT["metadata"]["name"])
    state.deployments_listed([key])
    state.deployments_listed([key])  # a relist after the watch expired
    assert calls == [False]  # once, before the workers may count on the cache
    assert state.listed.is_set()
