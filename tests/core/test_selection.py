"""Which Deployments a policy selects."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar_operator.api.models import LabelSelector, SidecarPolicySpec
from sidecar_operator.api.names import SHARD_LABEL, finalizer
from sidecar_operator.core.selection import (
    opted_out,
    selector_matches,
    serves,
    unclear_opt_out,
    workload_matches,
)

SIDECAR = [{"name": "s", "image": "busybox"}]


def spec(**fields: Any) -> SidecarPolicySpec:
    return SidecarPolicySpec.model_validate({"containers": SIDECAR, **fields})


def deployment(
    namespace: str = "shop",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": namespace,
            "labels": labels or {},
            "annotations": annotations or {},
        }
    }


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "x"}, False),
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert selector_matches(LabelSelector.model_validate(selector), labels) is expected


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease", "ops"])
def test_protected_namespaces_need_an_explicit_namespace_selector(namespace: str) -> None:
    without = spec(selector={})
    named = spec(
        selector={}, namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    )
    labels = {"kubernetes.io/metadata.name": namespace}
    assert not workload_matches(without, deployment(namespace), labels, operator_namespace="ops")
    assert workload_matches(named, deployment(namespace), labels, operator_namespace="ops")


def test_the_opt_out_annotation_wins_over_the_selector() -> None:
    opted_out = deployment(annotations={"sidecars.dev/inject": "false"})
    assert not workload_matches(spec(selector={}), opted_out, {}, operator_namespace=None)
    opted_in = deployment(annotations={"sidecars.dev/inject": "true"})
    assert workload_matches(spec(selector={}), opted_in, {}, operator_namespace=None)


def test_namespace_selector_reads_namespace_labels() -> None:
    policy = spec(selector={}, namespaceSelector={"matchLabels": {"team": "shop"}})
    assert workload_matches(policy, deployment(), {"team": "shop"}, operator_namespace=None)
    assert not workload_matches(policy, deployment(), {"team": "search"}, operator_namespace=None)


@pytest.mark.parametrize("value", ["false", "False", "FALSE", " false "])
def test_false_in_any_case_opts_out(value: str) -> None:
    for where in ("annotations", "labels"):
        workload = deployment(**{where: {"sidecars.dev/inject": value}})  # type: ignore[arg-type]
        assert opted_out(workload) and unclear_opt_out(workload) is None


@pytest.mark.parametrize("value", ["no", "disabled", "0", ""])
def test_any_other_value_is_no_opt_out_and_is_named(value: str) -> None:
    workload = deployment(annotations={"sidecars.dev/inject": value})
    assert not opted_out(workload)
    assert unclear_opt_out(workload) == value
    assert unclear_opt_out(deployment(annotations={"sidecars.dev/inject": "True"})) is None


@pytest.mark.parametrize(
    ("shard", "labels", "served"),
    [
        (None, None, True),
        (None, {"team": "web"}, True),
        (None, {SHARD_LABEL: ""}, True),  # an empty label is no shard
        (None, {SHARD_LABEL: "blue"}, False),
        ("blue", {SHARD_LABEL: "blue"}, True),
        ("blue", {SHARD_LABEL: "green"}, False),
        ("blue", None, False),
    ],
)
def test_an_operator_serves_the_policies_of_its_shard_alone(
    shard: str | None, labels: dict[str, str] | None, served: bool
) -> None:
    assert serves(shard, labels) is served


def test_each_shard_holds_its_policies_by_a_finalizer_of_its_own() -> None:
    assert finalizer(None) == "sidecars.dev/cleanup"
    assert finalizer("blue") == "sidecars.dev/cleanup-blue"
    longest = finalizer("x" * 55).split("/", 1)[1]
    assert len(longest) <= 63  # a finalizer's name after the slash, as for a label key
