"""Which policies concern which Deployment, kept up to date change by change, always equals what
the planner finds from scratch: a pass walks only its policy's Deployments, so one missing from
the index would never be injected, updated or cleaned."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar_operator.api.names import FIELD_MANAGER_PREFIX, INJECT_KEY
from sidecar_operator.core import planner, selection
from sidecar_operator.core.types import Key, Kind
from sidecar_operator.state import concerns
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.history import Histories
from sidecar_operator.state.plans import Plans
from sidecar_operator.state.rollouts import Rollouts

POLICIES = ("logs", "proxy", "agent")
LABELS = {"tier": ("web", "db"), "team": ("a",)}
OPERATOR_NAMESPACE = "sidecar-system"
NAMESPACES = ("shop", OPERATOR_NAMESPACE)

labels = st.fixed_dictionaries(
    {}, optional={key: st.sampled_from(values) for key, values in LABELS.items()}
)


@st.composite
def deployments(draw: st.DrawFn) -> dict[str, Any]:
    managers = draw(st.lists(st.sampled_from((*POLICIES, "gone")), unique=True, max_size=2))
    deployment_labels = draw(labels)
    if draw(st.booleans()):
        deployment_labels[INJECT_KEY] = draw(st.sampled_from(("false", "true")))
    return {
        "metadata": {
            "name": draw(st.sampled_from(("web", "api"))),
            "namespace": draw(st.sampled_from(NAMESPACES)),
            "uid": "u",
            "generation": 1,
            "labels": deployment_labels,
            "managedFields": [
                {
                    "manager": f"{FIELD_MANAGER_PREFIX}{name}",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {}},
                }
                for name in managers
            ],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    # Priority, allowPrivileged and the content vary too: a plan kept across an edit of what
    # the planner reads besides the content (`planner.reads`) would differ from scratch.
    container: dict[str, Any] = {
        "name": draw(st.sampled_from(POLICIES)),
        "image": draw(st.sampled_from(("sidecar", "sidecar:2"))),
    }
    if draw(st.booleans()):
        container["securityContext"] = {"privileged": True}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": draw(labels)},
        "containers": [container],
        "priority": draw(st.sampled_from((0, 10))),
        "allowPrivileged": draw(st.booleans()),
    }
    if draw(st.booleans()):
        spec["namespaceSelector"] = {"matchLabels": draw(labels)}
    metadata: dict[str, Any] = {
        "name": draw(st.sampled_from(POLICIES)),
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    if draw(st.booleans()) and draw(st.booleans()):
        metadata["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    return {"metadata": metadata, "spec": spec}


changes = st.one_of(
    st.tuples(st.just("put_workload"), deployments()),
    st.tuples(st.just("drop_workload"), st.sampled_from(NAMESPACES), st.sampled_from(("web",))),
    st.tuples(st.just("put_namespace"), st.sampled_from(NAMESPACES), labels),
    st.tuples(st.just("drop_namespace"), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("put_policy"), policies()),
    st.tuples(st.just("drop_policy"), st.sampled_from(POLICIES)),
)


def from_scratch(cache: Cache) -> dict[str, set[tuple[str, str]]]:
    """Every policy's Deployments as the planner finds them: those it returns an action for."""
    found: dict[str, set[tuple[str, str]]] = {}
    specs = [policy for policy, _ in cache.policies().values()]
    for key, record in cache.workloads():
        for action in planner.plan(
            record,
            cache.namespace_labels(key[0]),
            specs,
            operator_namespace=OPERATOR_NAMESPACE,
        ):
            found.setdefault(action.policy, set()).add(key)
    return found


def check(cache: Cache, plans: Plans) -> None:
    """The index equals the planner's findings, and the plans made with the policies it names,
    kept across changes as a running operator keeps them, equal those made with every policy
    from scratch."""
    expected = from_scratch(cache)
    specs = [policy for policy, _ in cache.policies().values()]
    for key, record in cache.workloads():
        everyone = planner.plan(
            record, cache.namespace_labels(key[0]), specs, operator_namespace=OPERATOR_NAMESPACE
        )
        assert plans.plan(record) == everyone
    for name in {*POLICIES, "gone"}:
        held = {key for key, _ in cache.concerning(name)}
        if cache.policy(name) is None:
            # Gone without its finalizer: the planner knows nothing of it, the index keeps the
            # Deployments still carrying its fields (the orphans cleanup removes).
            expected[name] = {
                key
                for key, record in cache.workloads()
                if any(
                    entry["manager"] == f"{FIELD_MANAGER_PREFIX}{name}"
                    for entry in record["metadata"]["managedFields"]
                )
            }
        assert held == expected.get(name, set()), name
        assert all(name in cache.concerned(key) for key in held)


@settings(max_examples=400, deadline=None)
@given(st.lists(changes, max_size=30))
def test_the_index_always_equals_what_the_planner_finds_from_scratch(
    sequence: list[tuple[Any, ...]],
) -> None:
    cache = Cache(operator_namespace=OPERATOR_NAMESPACE)
    rollouts = Rollouts(cache, Histories(), operator_namespace=OPERATOR_NAMESPACE)
    plans = Plans(cache, rollouts, operator_namespace=OPERATOR_NAMESPACE)
    for version, change in enumerate(sequence):
        match change:
            case ("put_workload", body):
                body["metadata"]["resourceVersion"] = str(version + 1)
                cache.put_workload(body)
            case ("drop_workload", namespace, name):
                cache.drop_workload((namespace, name))
            case ("put_namespace", name, namespace_labels):
                cache.put_namespace(name, namespace_labels)
            case ("drop_namespace", name):
                cache.drop_namespace(name)
            case ("put_policy", body):
                cache.put_policy(body)
            case ("drop_policy", name):
                cache.drop_policy(name)
        check(cache, plans)


def test_a_status_change_keeps_the_deployment_s_policies_and_a_label_change_moves_them() -> None:
    cache = Cache()
    cache.put_policy(
        {
            "metadata": {"name": "logs", "generation": 1},
            "spec": {
                "selector": {"matchLabels": {"tier": "web"}},
                "containers": [{"name": "logs", "image": "fluent-bit"}],
            },
        }
    )
    body: dict[str, Any] = {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u",
            "resourceVersion": "1",
            "labels": {"tier": "web"},
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
        "status": {"updatedReplicas": 0},
    }
    cache.put_workload(body)
    assert cache.concerned(Key("shop", "web")) == {"logs"}
    body["metadata"]["resourceVersion"] = "2"
    body["status"] = {"updatedReplicas": 1}
    cache.put_workload(body)
    assert [key for key, _ in cache.concerning("logs")] == [Key("shop", "web")]
    body["metadata"]["resourceVersion"] = "3"
    body["metadata"]["labels"] = {"tier": "db"}
    cache.put_workload(body)
    assert cache.concerning("logs") == []
    assert cache.concerned(Key("shop", "web")) == frozenset()


def test_the_index_is_the_same_whichever_arrives_first() -> None:
    policy = {
        "metadata": {"name": "logs", "generation": 1},
        "spec": {"selector": {}, "containers": [{"name": "logs", "image": "fluent-bit"}]},
    }
    body = {
        "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "1"},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }
    first, second = Cache(), Cache()
    first.put_policy(policy)
    first.put_workload(body)
    second.put_workload(body)
    second.put_policy(policy)
    assert first.concerning("logs") == second.concerning("logs") != []


def _deployment(resource_version: str, managers: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u",
            "resourceVersion": resource_version,
            "labels": {"tier": "web"},
            "managedFields": [
                {"manager": f"{FIELD_MANAGER_PREFIX}{name}", "operation": "Apply"}
                for name in managers
            ],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }


def _policy(name: str, namespace_labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"tier": "web"}},
        "containers": [{"name": name, "image": "sidecar"}],
    }
    if namespace_labels is not None:
        spec["namespaceSelector"] = {"matchLabels": namespace_labels}
    return {"metadata": {"name": name, "generation": 1}, "spec": spec}


def test_a_dropped_namespace_leaves_only_the_policies_still_carried() -> None:
    cache = Cache()
    cache.put_policy(_policy("logs", {"team": "a"}))
    cache.put_policy(_policy("proxy", {"team": "a"}))
    cache.put_namespace("shop", {"team": "a"})
    cache.put_workload(_deployment("1", managers=("proxy",)))
    assert cache.concerned(Key("shop", "web")) == {"logs", "proxy"}
    cache.drop_namespace("shop")
    # Without its labels the namespace is selected by neither; proxy's fields are still there.
    assert cache.concerned(Key("shop", "web")) == {"proxy"}
    assert cache.concerning("logs") == []
    check(cache, _plans(cache))


def _plans(cache: Cache) -> Plans:
    rollouts = Rollouts(cache, Histories(), operator_namespace=OPERATOR_NAMESPACE)
    return Plans(cache, rollouts, operator_namespace=OPERATOR_NAMESPACE)


def test_a_policy_s_change_plans_again_only_the_workloads_it_concerns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a hundred policies, each one's rollout completing (its stable revision moving)
    planned every other policy's workloads again: a plan is kept until what it was planned
    from changes."""
    cache = Cache()
    cache.put_policy(_policy("logs", None))
    other = _policy("proxy", None)
    other["spec"]["selector"] = {"matchLabels": {"tier": "db"}}
    cache.put_policy(other)
    web = _deployment("1")
    db = _deployment("1")
    db["metadata"] |= {"name": "db", "uid": "d", "labels": {"tier": "db"}}
    for body in (web, db):
        body["metadata"]["generation"] = 1
    cache.put_workload(web)
    cache.put_workload(db)
    plans = _plans(cache)
    planned: list[str] = []
    real = planner.plan
    monkeypatch.setattr(
        planner,
        "plan",
        lambda workload, *a, **k: (
            planned.append(workload["metadata"]["name"]) or real(workload, *a, **k)
        ),
    )
    for key in (Key("shop", "web"), Key("shop", "db")):
        plans.plan(cache.workload(key))
    assert planned == ["web", "db"]
    other["spec"]["containers"][0]["image"] = "sidecar:2"
    cache.put_policy(other)
    cache.put_namespace("elsewhere", {"team": "b"})
    for key in (Key("shop", "web"), Key("shop", "db")):
        plans.plan(cache.workload(key))
    assert planned == ["web", "db", "db"]
    cache.put_namespace("shop", {"team": "b"})
    plans.plan(cache.workload(Key("shop", "web")))
    assert planned[-1] == "web"


def _agent(name: str, **spec: Any) -> dict[str, Any]:
    body = _policy(name)
    body["spec"]["containers"] = [{"name": "agent", "image": "sidecar", **spec.pop("agent", {})}]
    body["spec"] |= spec
    return body


@pytest.mark.parametrize(
    ("policies", "edit"),
    [
        # proxy comes to outrank logs on the container both add: the clash changes hands
        ((_agent("logs"), _agent("proxy")), _agent("proxy", priority=10)),
        # proxy's privileged sidecar comes to be allowed: its baseline conflict goes away
        (
            (_agent("proxy", agent={"securityContext": {"privileged": True}}),),
            _agent("proxy", agent={"securityContext": {"privileged": True}}, allowPrivileged=True),
        ),
    ],
)
def test_an_edit_that_keeps_the_content_plans_again(
    policies: tuple[dict[str, Any], ...], edit: dict[str, Any]
) -> None:
    """Plans are kept across a change of content a workload does not get (a step not covering
    it), not across a change of what else the planner reads of a policy (`planner.reads`)."""
    cache = Cache(operator_namespace=OPERATOR_NAMESPACE)
    plans = _plans(cache)
    for body in policies:
        cache.put_policy(body)
    deployment = _deployment("1")
    deployment["metadata"]["generation"] = 1
    cache.put_workload(deployment)
    key = Key("shop", "web")
    assert {a.policy: a.kind for a in plans.plan(cache.workload(key))}["proxy"] is Kind.CONFLICT
    cache.put_policy(edit)
    assert {a.policy: a.kind for a in plans.plan(cache.workload(key))}["proxy"] is Kind.APPLY
    check(cache, plans)


def test_a_policy_write_reads_the_field_managers_without_matching_the_selectors_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = Cache()
    for name in POLICIES:
        cache.put_policy(_policy(name))
    cache.put_workload(_deployment("1"))
    matched = []

    def counting(*args: Any, **kwargs: Any) -> bool:
        matched.append(args)
        return selection.workload_matches(*args, **kwargs)

    monkeypatch.setattr(concerns, "workload_matches", counting)
    cache.put_workload(_deployment("2", managers=("logs", "gone")))
    assert matched == []
    assert cache.concerned(Key("shop", "web")) == {*POLICIES, "gone"}
    cache.put_workload(_deployment("3", managers=("logs",)))
    assert [key for key, _ in cache.concerning("gone")] == []
    assert matched == []


def test_workloads_concerning_the_same_policies_share_one_set_of_their_names() -> None:
    """A frozenset is 216 bytes even for one name, and each workload held three alike."""
    cache = Cache()
    cache.put_policy(
        {
            "metadata": {"name": "logs", "generation": 1},
            "spec": {"selector": {}, "containers": [{"name": "logs", "image": "fluent-bit"}]},
        }
    )
    for name in ("web", "api"):
        cache.put_workload(
            {
                "metadata": {"name": name, "namespace": "shop", "uid": name, "labels": {}},
                "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "b"}]}}},
            }
        )
    web, api = cache.concerned(Key("shop", "web")), cache.concerned(Key("shop", "api"))
    assert web == {"logs"} and web is api
