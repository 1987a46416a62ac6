"""Per-workload values on the real control plane, driven with kubectl: each workload of each kind
gets its own, a relabel updates that workload alone, a value it cannot give is its conflict
while the others roll out, admission renders them too, and deleting the policy gives every
template back exactly."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sidecar_operator.api.kinds import WorkloadKind, dig
from tests.kube import Kubectl, eventually
from tests.scenario import Policies, condition, events, ready
from tests.test_admission import admitted, app  # noqa: F401 (`admitted`: a fixture)
from tests.test_kinds import workload

pytestmark = pytest.mark.usefixtures("operator")

KINDS = [WorkloadKind.DEPLOYMENT, WorkloadKind.STATEFUL_SET, WorkloadKind.CRON_JOB]
TAGGER = {
    "name": "tagger",
    "image": "fluent/fluent-bit:3.1.9",
    "restartPolicy": "Always",  # native: a CronJob's Jobs still finish
    "args": ["--team={{ workload.labels['team'] | default 'none' }}"],
    "env": [
        {"name": "SERVICE", "value": "{{ workload.name }}"},
        {"name": "KIND", "value": "{{ workload.kind }}"},
    ],
}


def templated(kubectl: Kubectl, kind: WorkloadKind, name: str) -> dict[str, Any]:
    stored = kubectl.json(kind.value.lower(), name)
    return dict(dig(stored, (*kind.template_path, "spec")))


def tagger(kubectl: Kubectl, kind: WorkloadKind, name: str) -> dict[str, Any] | None:
    pod = templated(kubectl, kind, name)
    return next((c for c in pod.get("initContainers") or [] if c["name"] == "tagger"), None)


def labelled(kind: WorkloadKind, name: str, **labels: str) -> str:
    manifest = workload(kind, name)
    manifest["metadata"]["labels"].update(labels)
    return yaml.safe_dump(manifest)


def test_each_workload_gets_its_own_values_and_gets_its_template_back(
    kubectl: Kubectl, policies: Policies
) -> None:
    before = {}
    for kind in KINDS:
        name = f"{kind.value.lower()}-a"
        kubectl.apply(labelled(kind, name, team="payments"))
        before[kind] = templated(kubectl, kind, name)
    kubectl.apply(labelled(WorkloadKind.DEPLOYMENT, "plain"))
    policy = policies.apply(initContainers=[TAGGER], kinds=[kind.value for kind in KINDS])
    eventually(lambda: ready(policies, policy, matched=4), what="every workload injected")

    for kind in KINDS:
        found = tagger(kubectl, kind, f"{kind.value.lower()}-a")
        assert found is not None
        assert found["args"] == ["--team=payments"]
        assert found["env"] == [
            {"name": "SERVICE", "value": f"{kind.value.lower()}-a"},
            {"name": "KIND", "value": kind.value},
        ]
    plain = tagger(kubectl, WorkloadKind.DEPLOYMENT, "plain")
    assert plain is not None and plain["args"] == ["--team=none"]

    generations = {
        name: kubectl.json("deployment", name)["metadata"]["generation"]
        for name in ("deployment-a", "plain")
    }
    kubectl("label", "deployment", "plain", "team=search")
    eventually(
        lambda: (
            (t := tagger(kubectl, WorkloadKind.DEPLOYMENT, "plain")) is not None
            and t["args"] == ["--team=search"]
        ),
        what="the relabelled workload's new value",
    )
    assert (
        kubectl.json("deployment", "deployment-a")["metadata"]["generation"]
        == (generations["deployment-a"])
    )
    assert kubectl.json("deployment", "plain")["metadata"]["generation"] == (
        generations["plain"] + 1
    )

    policies.delete(policy)
    for kind in KINDS:
        assert templated(kubectl, kind, f"{kind.value.lower()}-a") == before[kind]


def test_a_workload_without_the_value_is_a_conflict_while_the_others_roll_out(
    kubectl: Kubectl, policies: Policies
) -> None:
    strict = {**TAGGER, "args": ["--team={{ workload.labels['team'] }}"]}
    kubectl.apply(labelled(WorkloadKind.DEPLOYMENT, "owned", team="payments"))
    kubectl.apply(labelled(WorkloadKind.DEPLOYMENT, "orphan"))
    policy = policies.apply(initContainers=[strict])
    status = eventually(
        lambda: (
            (s := policies.status(policy)).get("updatedWorkloads") == 1
            and s.get("conflicts") == 1
            and s
        ),
        what="one updated, one conflict",
    )
    assert (
        "{{ workload.labels['team'] }} has no value and no default"
        in (condition(status, "Degraded")["message"])
    )
    assert tagger(kubectl, WorkloadKind.DEPLOYMENT, "owned") is not None
    assert tagger(kubectl, WorkloadKind.DEPLOYMENT, "orphan") is None
    skipped = eventually(
        lambda: [e for e in events(kubectl, "Deployment", "orphan") if e["type"] == "Warning"],
        what="the conflict's Event",
    )
    assert (
        "initContainers[tagger].args[0]: {{ workload.labels['team'] }}" in (skipped[0]["message"])
    )


@pytest.mark.usefixtures("admitted")
def test_admission_renders_the_values_on_the_first_pod(
    kubectl: Kubectl, policies: Policies
) -> None:
    policy = policies.apply(initContainers=[TAGGER])
    eventually(lambda: ready(policies, policy, matched=0), what="the policy Ready")
    manifest = app("admitted")
    manifest["metadata"]["labels"]["team"] = "checkout"
    kubectl("create", "-f", "-", input=yaml.safe_dump(manifest))
    created = kubectl.json("deployment", "admitted")  # as admission left it, at creation
    (found,) = created["spec"]["template"]["spec"]["initContainers"]
    assert found["args"] == ["--team=checkout"]
    assert found["env"][0] == {"name": "SERVICE", "value": "admitted"}
    assert created["metadata"]["generation"] == 1
