"""Per-workload values in the planner: each workload gets its own, the revision stays the
policy's, and a value a workload cannot give is that workload's conflict alone."""

from __future__ import annotations

import copy
from typing import Any

from sidecar_operator.core import planner, ssa, values
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.core.types import Change, Kind
from sidecar_operator.state import snapshot
from tests.core.test_planner import only, policy

TAGGED = {
    "name": "log",
    "image": "fluent/fluent-bit:3.1",
    "args": ["--tag={{ workload.namespace }}/{{ workload.name }}"],
    "env": [
        {"name": "SERVICE", "value": "{{ workload.name }}"},
        {"name": "TEAM", "value": "{{ workload.labels['team'] | default 'none' }}"},
        {"name": "MODE", "value": "fixed"},
    ],
}


def workload(name: str, **labels: str) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }


def sidecar(action: planner.Action) -> dict[str, Any]:
    assert action.body is not None
    containers = action.body["spec"]["template"]["spec"]["containers"]
    return dict(containers[-1])


def test_each_workload_gets_its_own_values_under_the_policy_s_revision() -> None:
    logs = policy(containers=[TAGGED])
    web = only(planner.plan(workload("web", team="payments"), {}, [logs]))
    api = only(planner.plan(workload("api"), {}, [logs]))
    assert sidecar(web)["args"] == ["--tag=shop/web"]
    assert sidecar(web)["env"] == [
        {"name": "SERVICE", "value": "web"},
        {"name": "TEAM", "value": "payments"},
        {"name": "MODE", "value": "fixed"},
    ]
    assert sidecar(api)["env"][:2] == [
        {"name": "SERVICE", "value": "api"},
        {"name": "TEAM", "value": "none"},
    ]
    assert web.revision == api.revision == logs.spec.revision
    assert web.body is not None
    assert web.body["metadata"]["annotations"] == {"policy.sidecars.dev/logs": logs.spec.revision}
    assert logs.spec.containers[0].to_api() == TAGGED  # the policy's own content untouched


def test_rendered_content_is_in_sync_once_applied_and_a_relabel_changes_only_its_values() -> None:
    logs = policy(containers=[TAGGED])
    web = workload("web", team="payments")
    done = ssa.apply(web, field_manager("logs"), only(planner.plan(web, {}, [logs])).body or {})
    assert only(planner.plan(done, {}, [logs])).kind is Kind.IN_SYNC

    done["metadata"]["labels"]["team"] = "search"
    again = only(planner.plan(done, {}, [logs]))
    assert again.kind is Kind.APPLY and again.change is Change.UPDATE and not again.force
    assert sidecar(again)["env"][1] == {"name": "TEAM", "value": "search"}
    moved = ssa.apply(done, field_manager("logs"), again.body or {})
    assert only(planner.plan(moved, {}, [logs])).kind is Kind.IN_SYNC

    # A hand edit of a rendered value is someone's: taken back by force, as any edit.
    edited = copy.deepcopy(moved)
    edited["spec"]["template"]["spec"]["containers"][1]["args"] = ["--tag=x"]
    container = {'k:{"name":"log"}': {"f:args": {}}}
    edited["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-edit",
            "operation": "Update",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": container}}}},
        }
    )
    repair = only(planner.plan(edited, {}, [logs]))
    assert repair.change is Change.REPAIR and repair.force


def test_a_value_without_a_default_is_a_conflict_naming_the_field() -> None:
    strict = {**TAGGED, "env": [{"name": "TEAM", "value": "{{ workload.labels['team'] }}"}]}
    logs = policy(containers=[strict])
    missing = only(planner.plan(workload("web"), {}, [logs]))
    assert missing.kind is Kind.CONFLICT and missing.body is None
    assert missing.conflict == (
        "containers[log].env[TEAM].value: {{ workload.labels['team'] }} has no value and no default"
    )
    assert only(planner.plan(workload("api", team="a"), {}, [logs])).change is Change.INJECT


def test_a_rendered_name_the_api_server_would_refuse_is_a_conflict() -> None:
    logs = policy(
        containers=[{"name": "log", "image": "fluent/fluent-bit:3.1"}],
        volumes=[{"name": "conf", "configMap": {"name": "{{ workload.labels['app'] }}-conf"}}],
    )
    bad = only(planner.plan(workload("web", app="Web_App"), {}, [logs]))
    assert bad.kind is Kind.CONFLICT
    assert bad.conflict == (
        "volumes[conf].configMap.name renders 'Web_App-conf', not a valid configMap name "
        "(lowercase letters, digits, '-' and '.')"
    )
    good = only(planner.plan(workload("api", app="api"), {}, [logs]))
    assert good.body is not None
    assert good.body["spec"]["template"]["spec"]["volumes"] == [
        {"name": "conf", "configMap": {"name": "api-conf"}}
    ]


def test_a_stored_policy_the_grammar_refuses_is_a_conflict_not_a_crash() -> None:
    """Applied before placeholders existed (the CRD refuses it now)."""
    logs = policy(containers=[{**TAGGED, "args": ["--format={{.Name}}"], "env": []}])
    action = only(planner.plan(workload("web"), {}, [logs]))
    assert action.kind is Kind.CONFLICT
    assert action.conflict.startswith("containers[log].args[0]: at character 10: unknown")


def test_workloads_with_the_same_values_share_one_rendered_content() -> None:
    logs = policy(
        containers=[
            {**TAGGED, "args": [], "env": [{"name": "NS", "value": "{{ workload.namespace }}"}]}
        ]
    )
    first = values.rendered(logs.spec, workload("web"))
    assert values.rendered(logs.spec, workload("api")) is first
    assert first.revision == logs.spec.revision and first.values == ("shop",)


def test_a_policy_without_placeholders_is_not_rendered() -> None:
    plain = policy(containers=[{"name": "log", "image": "fluent/fluent-bit:3.1", "args": ["{x}"]}])
    assert values.rendered(plain.spec, workload("web")) is plain.spec


def test_a_placeholder_in_a_field_that_reads_none_is_a_conflict() -> None:
    """Never in the image or the securityContext: the workload's owner would choose what runs
    with the policy's privileges. Other braces there are the field's own."""
    for sidecar_, field in (
        ({"image": "registry/{{ workload.name }}:1"}, "containers[log].image"),
        (
            {"securityContext": {"seLinuxOptions": {"user": "{{ workload.namespace }}"}}},
            "containers[log].securityContext.seLinuxOptions.user",
        ),
        ({"resources": {"limits": {"cpu": "{{ workload.labels['cpu'] }}"}}}, None),
    ):
        logs = policy(containers=[{"name": "log", "image": "fluent/fluent-bit:3.1", **sidecar_}])
        action = only(planner.plan(workload("web", cpu="1"), {}, [logs]))
        assert action.kind is Kind.CONFLICT
        assert "placeholders are read only in env values, args, command" in action.conflict
        if field:
            assert action.conflict.startswith(f"{field}: at character ")
    go_template = {"exec": {"command": ["sh", "-c", "test {{.Ready}}"]}}
    logs = policy(containers=[{"name": "log", "image": "x:1", "livenessProbe": go_template}])
    assert only(planner.plan(workload("web"), {}, [logs])).change is Change.INJECT


def test_snapshots_keep_the_annotations_placeholders_name() -> None:
    owner = {"name": "OWNER", "value": "{{ workload.annotations['example.com/owner'] }}"}
    logs = policy(containers=[{**TAGGED, "env": [owner]}])
    assert logs.spec.annotation_keys == {"example.com/owner"}
    web = workload("web")
    web["metadata"]["annotations"] = {"example.com/owner": "ana", "big": "x" * 1000}
    kept = snapshot.compact(web, annotations=logs.spec.annotation_keys)
    assert kept["metadata"]["annotations"] == {"example.com/owner": "ana"}
    assert sidecar(only(planner.plan(kept, {}, [logs])))["env"] == [
        {"name": "OWNER", "value": "ana"}
    ]
    assert snapshot.compact(web)["metadata"]["annotations"] == {}
