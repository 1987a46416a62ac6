"""A policy's pod labels and annotations (`spec.podMetadata`) at the core: set, owned, repaired,
given back exactly, and never taken from the app."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from sidecar_operator.api.models import Policy
from sidecar_operator.core import admission, planner, ssa, workloads
from sidecar_operator.core.ownership import foreign, ownership
from sidecar_operator.core.types import Change, Kind
from sidecar_operator.state import snapshot
from tests.core.test_planner import FLUENT_BIT, only
from tests.core.test_planner_properties import converge

SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "2020"}


def metrics(name: str = "metrics", **pod_metadata: Any) -> Policy:
    return Policy.from_object(
        {
            "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {
                "selector": {},
                "containers": [FLUENT_BIT],
                "podMetadata": pod_metadata or {"annotations": SCRAPE},
            },
        }
    )


def app(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment as `kubectl apply` leaves it: its manager owns the template's keys."""
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "web", "team": "shop"}},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]},
    }
    if annotations:
        template["metadata"]["annotations"] = annotations
    workload: dict[str, Any] = {
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "labels": {"team": "shop"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    workload["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Apply", "fieldsV1": ssa.fields_v1(workload)}
    ]
    return workload


def template_metadata(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workloads.pod_template(workload).get("metadata") or {})


def test_set_owned_and_given_back_exactly() -> None:
    policy = metrics(labels={"sidecar": "{{ workload.labels['team'] }}"}, annotations=SCRAPE)
    before = app()
    done = converge(before, [policy])
    assert template_metadata(done) == {
        "labels": {"app": "web", "team": "shop", "sidecar": "shop"},
        "annotations": SCRAPE,
    }
    owned = ownership(done, "metrics")
    assert owned.pod_labels == {"sidecar"} and owned.pod_annotations == set(SCRAPE)
    assert only(planner.plan(done, {}, [policy])).kind is Kind.IN_SYNC
    assert template_metadata(converge(done, [])) == template_metadata(before)


def test_a_key_removed_by_hand_is_put_back_without_force() -> None:
    policy = metrics()
    done = converge(app(), [policy])
    edited = copy.deepcopy(done)
    del edited["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
    for entry in edited["metadata"]["managedFields"]:  # the API server forgets it was set
        fields = entry["fieldsV1"].get("f:spec", {}).get("f:template", {}).get("f:metadata", {})
        fields.get("f:annotations", {}).pop("f:prometheus.io/port", None)
    action = only(planner.plan(edited, {}, [policy]))
    assert action.kind is Kind.APPLY and action.change is Change.REPAIR and not action.force
    assert template_metadata(converge(edited, [policy]))["annotations"] == SCRAPE


def test_the_apps_own_value_is_a_conflict_and_left_as_it_is() -> None:
    before = app({"prometheus.io/scrape": "false"})
    action = only(planner.plan(before, {}, [metrics()]))
    assert action.kind is Kind.CONFLICT and action.body is None
    assert "pod annotation prometheus.io/scrape is already set to 'false'" in action.conflict
    assert "(kubectl)" in action.conflict  # who holds it


def test_the_apps_own_key_with_the_same_value_is_shared_and_stays_after_removal() -> None:
    before = app({"prometheus.io/scrape": "true"})
    done = converge(before, [metrics()])
    assert template_metadata(done)["annotations"] == SCRAPE
    removed = converge(done, [])
    assert template_metadata(removed)["annotations"] == {"prometheus.io/scrape": "true"}


def test_a_selector_label_is_a_conflict_even_with_the_same_value() -> None:
    action = only(planner.plan(app(), {}, [metrics(labels={"app": "web"})]))
    assert action.kind is Kind.CONFLICT
    assert "pod label app is in the Deployment's selector" in action.conflict


def test_a_rendered_label_value_the_api_refuses_is_a_conflict() -> None:
    long_name = app()
    long_name["metadata"]["name"] = "w" * 70
    action = only(planner.plan(long_name, {}, [metrics(labels={"who": "{{ workload.name }}"})]))
    assert action.kind is Kind.CONFLICT
    assert "podMetadata.labels['who'] renders" in action.conflict
    assert "not a valid label value" in action.conflict


def test_the_higher_priority_policy_takes_a_key_both_set() -> None:
    low = metrics("low", annotations={"owner": "a"})
    high = Policy.from_object(
        {
            "metadata": {"name": "high", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "spec": {"selector": {}, "priority": 5, "podMetadata": {"annotations": {"owner": "b"}}},
        }
    )
    actions = {a.policy: a for a in planner.plan(app(), {}, [low, high])}
    assert actions["high"].kind is Kind.APPLY
    assert actions["low"].kind is Kind.CONFLICT
    assert "already set to 'b' by policy high" in actions["low"].conflict


def test_a_policy_without_pod_metadata_keeps_its_revision_and_body() -> None:
    plain = Policy.from_object(
        {"metadata": {"name": "p"}, "spec": {"selector": {}, "containers": [FLUENT_BIT]}}
    )
    assert "podMetadata" not in plain.spec.to_api()
    body = only(planner.plan(app(), {}, [plain])).body or {}
    assert "metadata" not in body["spec"]["template"]


def test_admission_sets_the_keys_and_the_controller_adopts_them() -> None:
    policy = metrics(labels={"sidecar": "on"})
    workload = app()
    admitted = admission.admitted(workload, {}, [policy], operator_namespace=None)
    assert admitted is not None
    patch = admission.json_patch(workload, admitted, updated=False)
    patched = jsonpatch.apply_patch(workload, patch)
    assert template_metadata(patched) == template_metadata(admitted)
    assert template_metadata(patched)["labels"]["sidecar"] == "on"
    stored = copy.deepcopy(patched)  # the API server records no manager for it
    action = only(planner.plan(stored, {}, [policy]))
    assert action.kind is Kind.APPLY and action.change is Change.ADOPT and not action.force


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_a_snapshot_keeps_the_labels_the_annotations_named_and_who_holds_them(kind: str) -> None:
    workload = app({"prometheus.io/scrape": "true", "big": "x" * 60_000})
    if kind == "CronJob":
        workload["kind"] = "CronJob"
        template = workload["spec"].pop("template")
        del workload["spec"]["selector"]
        workload["spec"]["jobTemplate"] = {"spec": {"template": template}}
        workload["metadata"]["managedFields"][0]["fieldsV1"] = ssa.fields_v1(workload)
    kept = snapshot.compact(workload, annotations=frozenset({"prometheus.io/scrape"}))
    assert template_metadata(kept) == {
        "labels": {"app": "web", "team": "shop"},
        "annotations": {"prometheus.io/scrape": "true"},
    }
    assert foreign(kept).keys == foreign(workload).keys
    assert ("annotations", "big") in foreign(kept).keys
    assert planner.plan(kept, {}, [metrics()]) == planner.plan(workload, {}, [metrics()])


def test_a_replace_held_by_the_budget_keeps_the_keys_the_policy_set() -> None:
    """An owner's `kubectl replace` from a manifest without the policy's keys, while the new
    revision waits for the budget: admission puts back what the workload carried, keys too."""
    v1, v2 = metrics(annotations={"a": "1"}), metrics(annotations={"a": "2"})
    old = converge(app(), [v1])
    new = app()  # the manifest: no sidecar, no key of the policy's
    new["metadata"]["managedFields"] = [
        e for e in old["metadata"]["managedFields"] if e["manager"] == "kubectl"
    ]
    admitted = admission.admitted(
        new, {}, [v2], operator_namespace=None, old=old, may_roll=lambda _: False
    )
    assert admitted is not None
    assert template_metadata(admitted)["annotations"] == {"a": "1"}
    assert ownership(admitted, "metrics").pod_annotations == {"a"}
    patch = admission.json_patch(new, admitted, updated=True)
    assert template_metadata(jsonpatch.apply_patch(new, patch)) == template_metadata(admitted)
