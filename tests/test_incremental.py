"""A policy's tally kept event by event equals the one a full pass counts: any sequence of
workload events and passes (with their writes, against a fake API) leaves the same counts, steps,
budget and pending writes as a resync (which keeps the entries of what did not change) and as
classifying every workload again from nothing."""

from __future__ import annotations

import copy
import datetime
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core.tally import Tally
from sidecar_operator.core.types import Key
from sidecar_operator.engine import passes
from sidecar_operator.engine.runtime import Runtime
from tests.test_write_faults import DEPLOYMENT, POLICY_OBJECT, FakeApi, runtime

NAMES = [f"app-{index}" for index in range(6)]

# One workload's state as an event brings it.
state_strategy = st.fixed_dictionaries(
    {
        "selected": st.booleans(),
        "rolled_out": st.booleans(),
        "available": st.integers(0, 2),
        "owner_paused": st.booleans(),
        "deadline_missed": st.booleans(),
        "own_sidecar": st.booleans(),  # the app runs a container of the sidecar's name
        "created": st.sampled_from(["2025-06-01T00:00:00Z", "2026-06-01T00:00:00Z"]),
    }
)
event_strategy = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(NAMES), state_strategy),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.none()),
    st.tuples(st.just("pass"), st.none(), st.none()),
)


class Events:
    """Workload events as the watch brings them, each with a newer resourceVersion."""

    def __init__(self, state: Runtime, api: FakeApi) -> None:
        self.state = state
        self.api = api
        self.versions = itertools.count(100)

    def put(self, name: str, shape: dict[str, Any]) -> None:
        base = copy.deepcopy(self.api.stored.get(name) or DEPLOYMENT)
        metadata = base["metadata"]
        metadata.update(
            name=name,
            uid=f"u-{name}",
            resourceVersion=str(next(self.versions)),
            generation=int(metadata.get("generation") or 1) + 1,
            creationTimestamp=shape["created"],
            labels={"tier": "web"} if shape["selected"] else {"tier": "batch"},
        )
        spec = base["spec"]
        spec["paused"] = shape["owner_paused"]
        containers = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "app"]
        containers += [
            c for c in spec["template"]["spec"]["containers"] if c["name"] == "fluent-bit"
        ]
        if shape["own_sidecar"] and len(containers) == 1:
            containers.append({"name": "fluent-bit", "image": "the-app-s-own:1"})
        spec["template"]["spec"]["containers"] = containers
        generation = metadata["generation"]
        conditions = [{"type": "Available", "status": "True" if shape["rolled_out"] else "False"}]
        if shape["deadline_missed"]:
            conditions.append(
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
            )
        base["status"] = {
            "observedGeneration": generation if shape["rolled_out"] else generation - 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": shape["available"],
            "conditions": conditions,
        }
        self.api.stored[name] = base
        self.state.workload_changed(copy.deepcopy(base), deleted=False)

    def delete(self, name: str) -> None:
        gone = self.api.stored.pop(name, None)
        if gone is not None:
            self.state.workload_changed(gone, deleted=True)


def summary(tally: Tally) -> dict[str, Any]:
    step = tally.step()
    return {
        "entries": sorted(tally.entries),
        "counts": tally.counts(),
        "steps": tally.step_counts(),
        "matched": tally.matched,
        "in_flight": sorted(tally.in_flight),
        "failing": step.failing,
        "owner_paused": step.owner_paused,
        "conflicts": dict(tally.conflicts),
        "paced": sorted(tally.paced),
        "unpaced": sorted(tally.unpaced),
        "writes": sorted(item.key for item in step.writes),
        "waiting": step.waiting,
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event_strategy, min_size=1, max_size=25), budget=st.integers(1, 3))
async def test_incremental_counts_equal_a_full_pass(events: list[Any], budget: int) -> None:
    api = FakeApi()
    state, _ = runtime(api, *(copy.deepcopy(DEPLOYMENT),))
    policy = copy.deepcopy(POLICY_OBJECT)
    policy["spec"]["selector"] = {"matchLabels": {"tier": "web"}}
    policy["spec"]["updateStrategy"] = {"maxConcurrent": budget}
    state.cache.put_policy(policy)
    feed = Events(state, api)
    worker = state.worker("logs")
    await state.run_pass(worker)  # the first pass is a full one
    for kind, name, shape in events:
        if kind == "put":
            feed.put(name, shape)
        elif kind == "delete":
            feed.delete(name)
        else:
            await state.run_pass(worker)  # writes too: their answers are events of their own
    assert not worker.full
    await state.passes.prepare(worker)  # counts what the last events brought, incrementally
    kept = summary(state.passes.tallies["logs"])

    worker.full = True
    await state.passes.prepare(worker)  # a resync: keeps the entries nothing changed
    assert kept == summary(state.passes.tallies["logs"])

    del state.passes.tallies["logs"]
    worker.full = True
    await state.passes.prepare(worker)  # from nothing: every workload classified again
    assert kept == summary(state.passes.tallies["logs"])


async def resync_and_from_nothing(state: Runtime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The policy's tally after a resync (which keeps what it finds unchanged), then after a
    full pass from nothing."""
    worker = state.worker("logs")
    worker.full = True
    await state.passes.prepare(worker)
    resynced = summary(state.passes.tallies["logs"])
    del state.passes.tallies["logs"]
    worker.full = True
    await state.passes.prepare(worker)
    return resynced, summary(state.passes.tallies["logs"])


async def test_a_resync_classifies_again_a_workload_another_policy_s_change_altered() -> None:
    """No event of the workload: a policy of higher priority now adds a container of the same
    name, so the first policy's plan for it is a conflict, which the resync must find."""
    api = FakeApi()
    state, _ = runtime(api, copy.deepcopy(DEPLOYMENT))
    worker = state.worker("logs")
    await state.run_pass(worker)
    await state.run_pass(worker)  # counts what its write left
    revision = state.cache.policy("logs")[0].spec.revision  # type: ignore[index]
    # Its rollout complete, as its status says once written (the fake API keeps no status).
    done = {"currentRevision": revision, "updateRevision": revision}
    state.cache.put_policy({**POLICY_OBJECT, "status": done})
    await resync_and_from_nothing(state)
    assert not state.passes.tallies["logs"].conflicts
    rival = copy.deepcopy(POLICY_OBJECT)
    rival["metadata"]["name"] = "rival"
    rival["spec"]["priority"] = 10
    state.cache.put_policy(rival)
    resynced, from_nothing = await resync_and_from_nothing(state)
    assert from_nothing["conflicts"]
    assert resynced == from_nothing


async def test_a_resync_finds_a_deadline_passed_on_a_workload_nothing_else_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A StatefulSet still rolling out what the policy wrote misses the policy's deadline by
    the clock alone."""
    written = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
    stateful_set = copy.deepcopy(DEPLOYMENT)
    stateful_set["kind"] = "StatefulSet"
    api = FakeApi()
    api.stored["web"] = stateful_set
    policy = copy.deepcopy(POLICY_OBJECT)
    policy["spec"]["kinds"] = ["StatefulSet"]
    state, _ = runtime(api, copy.deepcopy(stateful_set))
    state.cache.put_policy(policy)
    monkeypatch.setattr(passes, "_now", lambda: written + datetime.timedelta(seconds=1))
    await state.run_pass(state.worker("logs"))  # injects
    rolling = copy.deepcopy(api.stored["web"])
    for entry in rolling["metadata"]["managedFields"]:
        entry["time"] = written.isoformat()
    rolling["metadata"].update(resourceVersion="100", generation=2)
    rolling["spec"]["replicas"] = 1
    rolling["status"] = {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 0}
    state.workload_changed(rolling, deleted=False)
    await state.run_pass(state.worker("logs"))
    assert not state.passes.tallies["logs"].failing
    monkeypatch.setattr(passes, "_now", lambda: written + datetime.timedelta(hours=1))
    resynced, from_nothing = await resync_and_from_nothing(state)
    assert from_nothing["failing"] == [Key("shop", "web", WorkloadKind.STATEFUL_SET)]
    assert resynced == from_nothing
