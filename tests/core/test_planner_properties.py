"""Properties of the pure core, over generated Deployments and policies, using the model of the
API server's apply in `core.ssa` (itself checked against the real API server in the integration
tests)."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, ssa
from sidecar_operator.core.ownership import field_manager, ownership

PATHS = ["/data", "/cache", "/var/log/app", "/etc/config"]
# Strings a sidecar passes on: plain, with per-workload values (one the workload may lack, with
# and without a default), and an escaped brace.
VALUES = [
    "plain",
    "{{ workload.name }}",
    "{{ workload.namespace }}-{{ workload.labels['tier'] }}",
    "{{ workload.labels['team'] | default 'x' }}",
    "{{ workload.labels['team'] }}",
    "\\{{ literal }}",
]
# Pod label values: plain, per workload, one the workload may lack.
LABEL_VALUES = [
    "web",
    "{{ workload.name }}",
    "{{ workload.labels['team'] | default 'none' }}",
    "{{ workload.labels['team'] }}",
]

# The strategies, made once: Hypothesis works out each new strategy object's properties on its
# first draw, and making them inside the composites made that most of these tests' CPU.
APP_VOLUMES = st.lists(st.sampled_from(["data", "cache"]), unique=True, max_size=2)
APP_IMAGES = st.sampled_from(["nginx", "app:1"])
APP_PATHS = st.lists(st.sampled_from(PATHS), unique=True, max_size=2)
APP_CONTAINERS = st.lists(
    st.sampled_from(["app", "worker", "side-a"]), unique=True, min_size=1, max_size=3
)
APP_INIT_CONTAINERS = st.lists(st.sampled_from(["migrate", "init-a"]), unique=True, max_size=2)
TEAMS = st.sampled_from(["payments", ""])
APP_ANNOTATIONS = st.dictionaries(
    st.sampled_from(["prometheus.io/scrape", "owner"]), st.sampled_from(["true", "a"])
)
WHO = st.sampled_from(VALUES)
ARGS = st.lists(WHO, max_size=2)
POLICY_COUNTS = st.integers(min_value=1, max_value=3)
POLICY_VOLUMES = st.lists(st.sampled_from(["logs", "data", "tmp"]), unique=True, max_size=2)
PRIORITIES = st.integers(min_value=0, max_value=2)
SIDECAR_IMAGES = st.sampled_from(["fluent-bit:3", "envoy:1"])
SIDECARS = st.lists(st.sampled_from(["side-a", "side-b", "proxy"]), unique=True, max_size=2)
INIT_SIDECARS = st.lists(st.sampled_from(["init-a", "sync"]), unique=True, max_size=1)
SIDECAR_PATHS = st.lists(st.sampled_from(PATHS), unique=True, max_size=1)
POD_LABELS = st.dictionaries(st.sampled_from(["team", "app"]), st.sampled_from(LABEL_VALUES))
POD_ANNOTATIONS = st.dictionaries(
    st.sampled_from(["prometheus.io/scrape", "owner"]),
    st.sampled_from(["true", "{{ workload.labels['team'] | default 'none' }}"]),
)


@st.composite
def app_deployments(draw: st.DrawFn) -> dict[str, Any]:
    volumes = draw(APP_VOLUMES)

    def container(name: str) -> dict[str, Any]:
        item: dict[str, Any] = {"name": name, "image": draw(APP_IMAGES)}
        if volumes:
            paths = draw(APP_PATHS)
            if paths:
                item["volumeMounts"] = [
                    {"name": draw(st.sampled_from(volumes)), "mountPath": p} for p in paths
                ]
        return item

    names = draw(APP_CONTAINERS)
    init_names = draw(APP_INIT_CONTAINERS)
    pod: dict[str, Any] = {"containers": [container(n) for n in names]}
    if init_names:
        pod["initContainers"] = [container(n) for n in init_names]
    if volumes:
        pod["volumes"] = [{"name": v, "emptyDir": {}} for v in volumes]
    labels = {"tier": "web"}
    if draw(st.booleans()):
        labels["team"] = draw(TEAMS)
    template: dict[str, Any] = {"metadata": {"labels": {"app": "web"}}, "spec": pod}
    annotations = draw(APP_ANNOTATIONS)
    if annotations:
        template["metadata"]["annotations"] = annotations
    deployment = {
        "metadata": {"name": "app", "namespace": "shop", "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    # The app's manifest owns what it set, as `kubectl apply` leaves it.
    deployment["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Update", "fieldsV1": ssa.fields_v1(deployment)}
    ]
    return deployment


def passed_on(draw: st.DrawFn) -> dict[str, Any]:
    """What a sidecar passes on: nothing, or an env value and args (`VALUES`)."""
    if not draw(st.booleans()):
        return {}
    return {
        "env": [{"name": "WHO", "value": draw(WHO)}],
        "args": draw(ARGS),
    }


@st.composite
def policy_sets(draw: st.DrawFn) -> list[Policy]:
    count = draw(POLICY_COUNTS)
    policies = []
    for index in range(count):
        volumes = draw(POLICY_VOLUMES)
        spec: dict[str, Any] = {
            "selector": {},
            "priority": draw(PRIORITIES),
            "containers": [
                {
                    "name": n,
                    "image": draw(SIDECAR_IMAGES),
                    **passed_on(draw),
                }
                for n in draw(SIDECARS)
            ],
            "initContainers": [
                {"name": n, "image": "git-sync:4", "restartPolicy": "Always"}
                for n in draw(INIT_SIDECARS)
            ],
            "volumes": [{"name": v, "emptyDir": {}} for v in volumes],
        }
        if volumes:
            paths = draw(SIDECAR_PATHS)
            spec["volumeMounts"] = [{"name": volumes[0], "mountPath": p} for p in paths]
        labels = draw(POD_LABELS)
        annotations = draw(POD_ANNOTATIONS)
        if labels or annotations:
            spec["podMetadata"] = {"labels": labels, "annotations": annotations}
        names = [c["name"] for c in spec["containers"]]
        spec["initContainers"] = [c for c in spec["initContainers"] if c["name"] not in names]
        if not any(spec[k] for k in ("containers", "initContainers", "volumes")):
            spec["containers"] = [{"name": f"only-{index}", "image": "busybox"}]
        policies.append(
            Policy.from_object(
                {
                    "metadata": {
                        "name": f"p{index}",
                        "creationTimestamp": f"2026-01-0{index + 1}T00:00:00Z",
                    },
                    "spec": spec,
                }
            )
        )
    return policies


def converge(deployment: dict[str, Any], policies: list[Policy]) -> dict[str, Any]:
    """Plan and apply, as the operator does, until nothing is left to send."""
    for _ in range(6):
        pending = [a for a in planner.plan(deployment, {}, policies) if a.body is not None]
        if not pending:
            return deployment
        for action in pending:
            deployment = ssa.apply(deployment, field_manager(action.policy), action.body)
    raise AssertionError("did not converge")


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def template_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]


@settings(max_examples=300, deadline=None)
@given(app_deployments(), policy_sets())
def test_inject_then_remove_gives_back_the_original_template(
    deployment: dict[str, Any], policies: list[Policy]
) -> None:
    original = copy.deepcopy(template_of(deployment))
    injected = converge(deployment, policies)
    removed = converge(injected, [])
    assert template_of(removed) == original
    assert not any(
        k.startswith("policy.sidecars.dev/") for k in removed["metadata"].get("annotations", {})
    )


@settings(max_examples=300, deadline=None)
@given(app_deployments(), policy_sets())
def test_a_converged_deployment_needs_no_further_writes(
    deployment: dict[str, Any], policies: list[Policy]
) -> None:
    done = converge(deployment, policies)
    assert all(
        a.kind in (planner.Kind.IN_SYNC, planner.Kind.CONFLICT) and a.body is None
        for a in planner.plan(done, {}, policies)
    )


@settings(max_examples=300, deadline=None)
@given(app_deployments(), policy_sets())
def test_nothing_the_app_has_is_changed_reordered_or_dropped(
    deployment: dict[str, Any], policies: list[Policy]
) -> None:
    original = copy.deepcopy(pod_of(deployment))
    app_metadata = copy.deepcopy(template_of(deployment)["metadata"])
    converged = converge(deployment, policies)
    for pod_map, values in app_metadata.items():
        assert template_of(converged)["metadata"][pod_map].items() >= values.items()
    done = pod_of(converged)
    for pod_list in ("containers", "initContainers", "volumes"):
        before = original.get(pod_list, [])
        names_before = [item["name"] for item in before]
        after = [item for item in done.get(pod_list, []) if item["name"] in names_before]
        assert [item["name"] for item in after] == names_before
        for old, new in zip(before, after, strict=True):
            old_mounts, new_mounts = old.get("volumeMounts", []), new.get("volumeMounts", [])
            assert new_mounts[: len(old_mounts)] == old_mounts
            assert {k: v for k, v in new.items() if k != "volumeMounts"} == {
                k: v for k, v in old.items() if k != "volumeMounts"
            }


@settings(max_examples=300, deadline=None)
@given(app_deployments(), policy_sets())
def test_each_policy_is_all_or_nothing(deployment: dict[str, Any], policies: list[Policy]) -> None:
    done = converge(deployment, policies)
    pod = pod_of(done)
    for policy in policies:
        owned = ownership(done, policy.name)
        if owned.empty:
            continue
        names = {c["name"] for c in pod.get("containers", [])}
        init_names = {c["name"] for c in pod.get("initContainers", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])}
        assert {c.name for c in policy.spec.containers} <= names
        assert {c.name for c in policy.spec.init_containers} <= init_names
        assert {v.name for v in policy.spec.volumes} <= volumes
        assert owned.containers == {c.name for c in policy.spec.containers}
        assert owned.pod_labels == set(policy.spec.pod_labels)
        assert owned.pod_annotations == set(policy.spec.pod_annotations)
        metadata = template_of(done)["metadata"]
        for pod_map in ("labels", "annotations"):
            for key in owned.keys(pod_map):
                assert "{{" not in metadata[pod_map][key]  # rendered


@settings(max_examples=300, deadline=None)
@given(app_deployments(), policy_sets())
def test_the_plan_does_not_depend_on_the_order_policies_are_seen_in(
    deployment: dict[str, Any], policies: list[Policy]
) -> None:
    forwards = planner.plan(deployment, {}, policies)
    backwards = planner.plan(deployment, {}, list(reversed(policies)))
    assert forwards == backwards
    assert pod_of(converge(deployment, policies)) == pod_of(
        converge(deployment, list(reversed(policies)))
    )


# Literal words and the placeholders that render them on `app_deployments`' workload.
TWINS = {"app": "{{ workload.name }}", "shop": "{{ workload.namespace }}", "web": "web"}


@settings(max_examples=200, deadline=None)
@given(
    app_deployments(),
    st.lists(st.sampled_from(sorted(TWINS)), min_size=1, max_size=3),
    st.booleans(),
)
def test_rendered_values_plan_the_very_bytes_of_their_literal_text(
    deployment: dict[str, Any], words: list[str], with_pod_metadata: bool
) -> None:
    """A policy whose placeholders render to some text plans byte for byte the body a policy
    with that text written out does, but for the revision: rendering adds and moves nothing."""

    def spec(text: Any) -> dict[str, Any]:
        joined = "-".join(text(word) for word in words)
        body: dict[str, Any] = {
            "selector": {},
            "containers": [
                {
                    "name": "side-b",
                    "image": "envoy:1",
                    "args": [text(word) for word in words],
                    "env": [{"name": "WHO", "value": joined}],
                }
            ],
            "volumes": [{"name": "conf", "configMap": {"name": joined}}],
        }
        if with_pod_metadata:
            body["podMetadata"] = {"annotations": {"example.com/who": joined}}
        return body

    literal = Policy.from_object({"metadata": {"name": "p"}, "spec": spec(lambda word: word)})
    templated = Policy.from_object({"metadata": {"name": "p"}, "spec": spec(TWINS.__getitem__)})
    bodies = []
    for policy in (literal, templated):
        (action,) = planner.plan(deployment, {}, [policy])
        assert action.body is not None, action
        body = copy.deepcopy(action.body)
        assert body["metadata"].pop("annotations") == {
            "policy.sidecars.dev/p": policy.spec.revision
        }
        bodies.append(orjson.dumps(body))
    assert bodies[0] == bodies[1]
