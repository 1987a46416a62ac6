"""Waves at the core: which workloads each step covers, and how a rollout moves from step to
step; the planner's targets under a rollout in steps."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar_operator.api.models import Content, Policy, Step
from sidecar_operator.core import planner, ssa, stepping, waves
from sidecar_operator.core.ownership import field_manager, revision_annotation
from sidecar_operator.core.stepping import Phase, Position, StepCount
from sidecar_operator.core.types import Key, Kind
from sidecar_operator.core.waves import HOLD, Rollout
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.history import Histories
from sidecar_operator.state.plans import Plans
from sidecar_operator.state.rollouts import Rollouts

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
OLD = {"name": "shipper", "image": "fluent/fluent-bit:3.1"}
NEW = {"name": "shipper", "image": "fluent/fluent-bit:3.2"}


def policy(*steps: dict[str, Any], image: str = NEW["image"], **annotations: str) -> Policy:
    return Policy.from_object(
        {
            "metadata": {"name": "logs", "uid": "u-1", "annotations": annotations},
            "spec": {
                "selector": {},
                "containers": [{**NEW, "image": image}],
                "updateStrategy": {"steps": list(steps)},
            },
        }
    )


def workload(name: str, namespace: str = "shop", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }


def stable_content() -> Content:
    return Content.model_validate({"containers": [OLD]})


def rollout_of(spec: Policy, step: int, keys: list[Key], **changes: Any) -> Rollout:
    steps = waves.steps_of(spec)
    ranks = waves.ranks(spec.uid, keys)
    return Rollout(
        update=spec.spec,
        stable=changes.pop("stable", stable_content()),
        steps=steps,
        step=step,
        seed=spec.uid,
        cuts=waves.cuts(steps, ranks.values()),
        # As a rollout derived before some of them came: the others' ranks hashed when asked.
        ranks=dict(list(ranks.items())[::2]),
        **changes,
    )


keys_strategy = st.lists(
    st.tuples(st.sampled_from(["shop", "search", "staging"]), st.integers(0, 500)),
    min_size=1,
    max_size=60,
    unique=True,
)
steps_strategy = st.lists(
    st.one_of(
        st.builds(lambda p: {"percent": p}, st.integers(1, 100)),
        st.just({"namespaceSelector": {"matchLabels": {"stage": "staging"}}}),
        st.just({"selector": {"matchLabels": {"canary": "yes"}}}),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=150, deadline=None)
@given(raw_keys=keys_strategy, steps=steps_strategy)
def test_coverage_only_grows_through_the_steps_and_the_last_covers_all(
    raw_keys: list[tuple[str, int]], steps: list[dict[str, Any]]
) -> None:
    spec = policy(*steps)
    workloads = [
        workload(f"w{n}", namespace, **({"canary": "yes"} if n % 7 == 0 else {}))
        for namespace, n in raw_keys
    ]
    keys = [Key.of(w) for w in workloads]
    labels = {"staging": {"stage": "staging"}}
    covered_before: set[Key] = set()
    for index in range(len(waves.steps_of(spec))):
        rollout = rollout_of(spec, index, keys)
        covered = {
            Key.of(w)
            for w in workloads
            if rollout.covered(Key.of(w), w, labels.get(w["metadata"]["namespace"], {}))
        }
        assert covered >= covered_before
        covered_before = covered
    assert covered_before == set(keys)


@settings(max_examples=150, deadline=None)
@given(
    raw_keys=keys_strategy, added=st.tuples(st.sampled_from(["shop", "new"]), st.integers(501, 900))
)
def test_the_percent_order_is_stable_when_a_workload_is_added(
    raw_keys: list[tuple[str, int]], added: tuple[str, int]
) -> None:
    keys = [Key(namespace, f"w{n}") for namespace, n in raw_keys]
    more = [*keys, Key(added[0], f"w{added[1]}")]

    def order(of: list[Key]) -> list[Key]:
        return sorted(of, key=lambda key: waves.rank("u-1", key))

    assert [key for key in order(more) if key in keys] == order(keys)
    steps = (Step(percent=30), Step(percent=100))
    before_cut = waves.cuts(steps, waves.ranks("u-1", keys).values())[0]
    after_cut = waves.cuts(steps, waves.ranks("u-1", more).values())[0]
    before = {k for k in keys if waves.rank("u-1", k) < before_cut}
    after = {k for k in more if waves.rank("u-1", k) < after_cut}
    assert len(before - after) <= 1  # the newcomer takes at most the last place


def test_a_percent_step_covers_that_share_of_the_matched_workloads() -> None:
    keys = [Key("shop", f"w{n}") for n in range(20)]
    steps = (Step(percent=25), Step(percent=50), Step(percent=100))
    cuts = waves.cuts(steps, waves.ranks("u-1", keys).values())
    covered = [sum(waves.rank("u-1", k) < cut for k in keys) for cut in cuts]
    assert covered == [5, 10, 20]


def test_outside_the_current_step_the_stable_content_and_inside_the_update() -> None:
    spec = policy(
        {"namespaceSelector": {"matchLabels": {"stage": "staging"}}, "pause": {}}, {"percent": 100}
    )
    canary, stable = workload("a", "staging"), workload("b", "shop")
    rollout = rollout_of(spec, 0, [Key.of(canary), Key.of(stable)])
    assert rollout.target(Key.of(canary), canary, {"stage": "staging"}, None) is spec.spec
    assert rollout.target(Key.of(stable), stable, {}, None) == stable_content()
    # Once it carries the update revision it stays covered (its labels moved, say).
    assert rollout.target(Key.of(stable), stable, {}, spec.spec.revision) is spec.spec
    # An unknown stable content holds; nothing as stable means no sidecars.
    assert rollout_of(spec, 0, [], stable=HOLD).target(Key.of(stable), stable, {}, None) is HOLD
    assert rollout_of(spec, 0, [], stable=None).target(Key.of(stable), stable, {}, None) is None
    # Aborted, every workload goes back; back to the stable content (an undo), no steps.
    assert (
        rollout_of(spec, 0, [], aborted=True).target(
            Key.of(canary), canary, {"stage": "staging"}, None
        )
        == stable_content()
    )
    undo = rollout_of(spec, 0, [], stable=spec.spec)
    assert not undo.stepped and undo.target(Key.of(stable), stable, {}, None) is spec.spec


def test_a_new_revision_or_new_steps_start_over_at_the_first_step() -> None:
    spec = policy({"percent": 10, "pause": {}}, {"percent": 100})
    strategy = spec.spec.update_strategy
    status = {
        "updateRevision": spec.spec.revision,
        "stepsHash": strategy.steps_hash,
        "currentStep": 1,
    }
    assert Position.of(spec, status).step == 1
    assert Position.of(spec, {**status, "updateRevision": "older"}).step == 0
    assert Position.of(spec, {**status, "stepsHash": "other"}).step == 0


DONE = StepCount(4, 4, 4)
RUNNING = StepCount(4, 2, 1)


def move(
    spec: Policy, position: Position, *counts: StepCount, held: bool = False
) -> stepping.Moved:
    return stepping.advance(spec, position, counts, held=held, now=NOW)


def test_a_step_waits_for_its_workloads_then_for_promotion() -> None:
    spec = policy({"percent": 10, "pause": {}}, {"percent": 100})
    start = Position(spec.spec.revision, spec.spec.update_strategy.steps_hash)
    assert move(spec, start, RUNNING, RUNNING).phase is Phase.ROLLING
    waiting = move(spec, start, DONE, RUNNING)
    assert waiting.phase is Phase.WAITING and waiting.position.step == 0
    assert waiting.finished == (0,) and waiting.position.done_at == "2026-12-06T12:00:00Z"
    again = move(spec, waiting.position, DONE, RUNNING)
    assert again.phase is Phase.WAITING and again.finished == ()  # said once
    promoted = policy(
        {"percent": 10, "pause": {}},
        {"percent": 100},
        **{"sidecars.dev/promote": f"{spec.spec.revision}/0"},
    )
    moved = move(promoted, waiting.position, DONE, RUNNING)
    assert moved.position.step == 1 and moved.started == (1,) and moved.position.done_at is None


def test_a_promotion_of_another_revision_or_step_does_nothing() -> None:
    spec = policy(
        {"name": "canary", "percent": 10, "pause": {}},
        {"percent": 100},
        **{"sidecars.dev/promote": "0123456789/0"},
    )
    start = Position(spec.spec.revision, spec.spec.update_strategy.steps_hash)
    assert move(spec, start, DONE, RUNNING).phase is Phase.WAITING
    by_name = policy(
        {"name": "canary", "percent": 10, "pause": {}},
        {"percent": 100},
        **{"sidecars.dev/promote": f"{spec.spec.revision}/canary"},
    )
    assert move(by_name, start, DONE, RUNNING).position.step == 1


def test_a_duration_pause_runs_from_when_the_step_was_done() -> None:
    spec = policy({"percent": 10, "pause": {"duration": "10m"}}, {"percent": 100})
    done_at = (NOW - datetime.timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    paused = Position(spec.spec.revision, spec.spec.update_strategy.steps_hash, 0, done_at)
    moved = move(spec, paused, DONE, RUNNING)
    assert moved.phase is Phase.STEP_PAUSED
    assert moved.resume_at == NOW + datetime.timedelta(minutes=6)
    over = Position(paused.revision, paused.steps_hash, 0, "2026-12-06T11:45:00Z")
    assert move(spec, over, DONE, RUNNING).position.step == 1


def test_held_or_aborted_the_rollout_moves_no_further_and_all_skips_the_steps() -> None:
    spec = policy({"percent": 10}, {"percent": 50}, {"percent": 100})
    start = Position(spec.spec.revision, spec.spec.update_strategy.steps_hash)
    assert move(spec, start, DONE, RUNNING, RUNNING, held=True).position.step == 0
    assert move(spec, start, DONE, RUNNING, RUNNING).position.step == 1  # no pause: onwards
    aborted = policy(
        {"percent": 10}, {"percent": 100}, **{"sidecars.dev/abort": spec.spec.revision}
    )
    assert move(aborted, start, DONE, RUNNING).phase is Phase.ABORTED
    full = policy(
        {"percent": 10},
        {"percent": 50},
        {"percent": 100},
        **{"sidecars.dev/promote": f"{spec.spec.revision}/all"},
    )
    assert move(full, start, RUNNING, RUNNING, RUNNING).position.step == 2


def test_the_stable_revision_of_a_policy_from_before_history() -> None:
    known = {"r1": stable_content()}
    assert waves.bootstrap_stable(waves.Carried({}), known) is None
    assert waves.bootstrap_stable(waves.Carried({"": 3, "r1": 1}), known) is None
    assert waves.bootstrap_stable(waves.Carried({"r1": 3, "gone": 1}), known) == stable_content()
    assert waves.bootstrap_stable(waves.Carried({"gone": 3, "r1": 1}), known) is HOLD


def test_the_planner_gives_each_workload_its_group_s_revision() -> None:
    spec = policy(
        {"namespaceSelector": {"matchLabels": {"stage": "staging"}}, "pause": {}}, {"percent": 100}
    )
    canary, other = workload("a", "staging"), workload("b", "shop")
    rollout = rollout_of(spec, 0, [Key.of(canary), Key.of(other)])
    (to_canary,) = planner.plan(canary, {"stage": "staging"}, [spec], rollouts={"logs": rollout})
    (to_other,) = planner.plan(other, {}, [spec], rollouts={"logs": rollout})
    assert to_canary.revision == spec.spec.revision
    assert to_other.revision == stable_content().revision
    assert to_other.body is not None
    containers = to_other.body["spec"]["template"]["spec"]["containers"]
    assert containers == [OLD]

    # A workload carrying an abandoned revision goes back to stable: an update, paced.
    abandoned = policy(image="fluent/fluent-bit:9.9")
    written = ssa.apply(
        other, field_manager("logs"), planner.plan(other, {}, [abandoned])[0].body or {}
    )
    (back,) = planner.plan(written, {}, [spec], rollouts={"logs": rollout})
    assert back.kind is Kind.APPLY and back.change is not None and back.change.value == "update"
    assert back.revision == stable_content().revision

    # With nothing as stable, an uncovered workload is as it should be without sidecars.
    first = rollout_of(spec, 0, [], stable=None)
    (untouched,) = planner.plan(other, {}, [spec], rollouts={"logs": first})
    assert untouched.kind is Kind.IN_SYNC and untouched.revision == ""
    (released,) = planner.plan(written, {}, [spec], rollouts={"logs": first})
    assert released.kind is Kind.APPLY and released.body == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "b", "namespace": "shop"},
    }
    (held,) = planner.plan(
        written, {}, [spec], rollouts={"logs": rollout_of(spec, 0, [], stable=HOLD)}
    )
    assert held.kind is Kind.HOLD and held.body is None


@settings(max_examples=200, deadline=None)
@given(
    raw_keys=keys_strategy,
    steps=steps_strategy,
    pair=st.lists(
        st.tuples(
            st.sampled_from(["none", "old", "update", "hold"]), st.integers(0, 5), st.booleans()
        ),
        min_size=2,
        max_size=2,
    ),
    carried=st.sampled_from([None, "other", "update"]),
)
def test_rollouts_alike_in_what_they_decide_from_give_every_workload_the_same_target(
    raw_keys: list[tuple[str, int]],
    steps: list[dict[str, Any]],
    pair: list[tuple[str, int, bool]],
    carried: str | None,
) -> None:
    """Other policies' tallies are kept while every rollout's `decides` holds
    (`Rollouts.version`): that is only right if equal `decides` mean equal targets, for any
    workload and what it carries."""
    spec = policy(*steps)
    workloads = [
        workload(f"w{n}", namespace, **({"canary": "yes"} if n % 7 == 0 else {}))
        for namespace, n in raw_keys
    ]
    keys = [Key.of(w) for w in workloads]
    stables = {"none": None, "old": stable_content(), "update": spec.spec, "hold": HOLD}
    last = len(waves.steps_of(spec)) - 1
    a, b = (
        rollout_of(spec, min(step, last), keys, stable=stables[stable], aborted=aborted)
        for stable, step, aborted in pair
    )
    if a.decides != b.decides:
        return
    revision = spec.spec.revision if carried == "update" else carried
    labels = {"staging": {"stage": "staging"}}
    for w in workloads:
        namespace_labels = labels.get(w["metadata"]["namespace"], {})
        assert waves.target_identity(
            a.target(Key.of(w), w, namespace_labels, revision)
        ) == waves.target_identity(b.target(Key.of(w), w, namespace_labels, revision))


step_changes = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 2)),
        st.tuples(
            st.just("workload"),
            st.sampled_from(["w0", "w1", "w2", "w3", "w4", "w5"]),
            st.booleans(),  # labelled canary
            st.booleans(),  # carries the update revision
        ),
        # an edit: of the content (a new rollout from the same step) or of the priority
        st.tuples(st.just("edit"), st.sampled_from([OLD, NEW]), st.sampled_from([0, 10])),
    ),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(changes=step_changes)
def test_plans_kept_across_steps_equal_plans_made_from_scratch(
    changes: list[tuple[Any, ...]],
) -> None:
    """`state/plans` keeps a workload's plan while the target its rollouts give it holds: a
    step moving on plans again only the workloads it covers anew, an edit only those its step
    covers. Kept plans must equal the planner's, with the rollouts as they are, after any
    sequence of steps, edits and workload changes."""
    cache = Cache(operator_namespace=None)
    rollouts = Rollouts(cache, Histories(), operator_namespace=None)
    plans = Plans(cache, rollouts, operator_namespace=None)
    body: dict[str, Any] = {
        "metadata": {"name": "logs", "uid": "u-1", "generation": 1},
        "spec": {
            "selector": {},
            "containers": [NEW],
            "updateStrategy": {
                "steps": [
                    {"selector": {"matchLabels": {"canary": "yes"}}, "pause": {}},
                    {"percent": 50, "pause": {}},
                    {"percent": 100},
                ]
            },
        },
    }
    spec = Policy.from_object(body).spec
    at = {"updateRevision": spec.revision, "stepsHash": spec.update_strategy.steps_hash}
    cache.put_policy({**body, "status": {**at, "currentStep": 0}})
    step = 0
    versions = iter(range(1, 1000))
    for name in ("w0", "w1", "w2", "w3", "w4", "w5"):
        cache.put_workload(stored(workload(name), next(versions)))
    for change in changes:
        match change:
            case ("step", step):
                cache.put_policy({**body, "status": {**at, "currentStep": step}})
            case ("edit", container, priority):
                body = copy.deepcopy(body)
                body["metadata"]["generation"] += 1
                body["spec"] |= {"containers": [container], "priority": priority}
                cache.put_policy({**body, "status": {**at, "currentStep": step}})
            case ("workload", name, canary, carries):
                w = workload(name, **({"canary": "yes"} if canary else {}))
                if carries:
                    w["metadata"]["annotations"] = {revision_annotation("logs"): spec.revision}
                cache.put_workload(stored(w, next(versions)))
        current = rollouts.every()
        for key, record in cache.workloads():
            assert plans.plan(record) == planner.plan(
                record,
                cache.namespace_labels(key.namespace),
                [Policy.from_object(body)],
                rollouts=current,
            )


def stored(body: dict[str, Any], version: int) -> dict[str, Any]:
    """As the API server keeps it: versioned, so its plan may be kept."""
    body["metadata"].update(uid=f"u-{body['metadata']['name']}", generation=1)
    body["metadata"]["resourceVersion"] = str(version)
    return body
