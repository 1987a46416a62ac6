"""A policy's pod labels and annotations (`spec.podMetadata`) on the real control plane, driven
with kubectl: set and owned by the policy's field manager, put back when removed by hand, given
back exactly, a clash with the app's own value a conflict, and set by admission on the first
pod."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sidecar_operator.api.kinds import WorkloadKind, dig
from sidecar_operator.core.ownership import field_manager, ownership
from tests.kube import Kubectl, eventually
from tests.scenario import Policies, condition, events, ready
from tests.test_admission import admitted, app  # noqa: F401 (`admitted`: a fixture)
from tests.test_kinds import workload

pytestmark = pytest.mark.usefixtures("operator")

SIDECAR = {"name": "exporter", "image": "prom/statsd-exporter:v0.27.1"}
SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "9102"}


def metadata(kubectl: Kubectl, kind: WorkloadKind, name: str) -> dict[str, Any]:
    """The pod template's metadata as stored."""
    stored = kubectl.json(kind.value.lower(), name)
    return dict(dig(stored, (*kind.template_path, "metadata")))


def managed(kubectl: Kubectl, kind: str, name: str) -> dict[str, Any]:
    """The workload with the field managers' entries."""
    return dict(kubectl.json(kind, name, "--show-managed-fields"))


def with_template(kind: WorkloadKind, name: str, **annotations: str) -> str:
    manifest = workload(kind, name)
    template = dig(manifest, kind.template_path)
    template["metadata"]["labels"]["team"] = "payments"
    if annotations:
        template["metadata"]["annotations"] = annotations
    return yaml.safe_dump(manifest)


def test_set_owned_repaired_and_given_back_exactly(kubectl: Kubectl, policies: Policies) -> None:
    kinds = [WorkloadKind.DEPLOYMENT, WorkloadKind.CRON_JOB]
    before = {}
    for kind in kinds:
        name = f"{kind.value.lower()}-m"
        # The app already sets one of the keys, to the policy's value: shared, and kept.
        kubectl.apply(with_template(kind, name, **{"prometheus.io/scrape": "true"}))
        before[kind] = metadata(kubectl, kind, name)
    policy = policies.apply(
        initContainers=[{**SIDECAR, "restartPolicy": "Always"}],
        kinds=[kind.value for kind in kinds],
        podMetadata={
            "labels": {"exporter": "on", "owner": "{{ workload.labels['team'] | default 'x' }}"},
            "annotations": {**SCRAPE, "example.com/from": "{{ workload.kind }}"},
        },
    )
    eventually(
        lambda: ready(policies, policy, matched=2), timeout=120, what="both workloads updated"
    )
    for kind in kinds:
        name = f"{kind.value.lower()}-m"
        found = metadata(kubectl, kind, name)
        assert found["labels"] == {"app": name, "team": "payments", "exporter": "on", "owner": "x"}
        assert found["annotations"] == {**SCRAPE, "example.com/from": kind.value}
        owned = ownership(managed(kubectl, kind.value.lower(), name), policy)
        assert owned.pod_labels == {"exporter", "owner"}
        assert owned.pod_annotations == {*SCRAPE, "example.com/from"}

    generation = kubectl.json("deployment", "deployment-m")["metadata"]["generation"]
    kubectl(
        "patch",
        "deployment",
        "deployment-m",
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/template/metadata/annotations/prometheus.io~1port"}]',
    )
    eventually(
        lambda: (
            metadata(kubectl, WorkloadKind.DEPLOYMENT, "deployment-m")["annotations"].get(
                "prometheus.io/port"
            )
            == "9102"
        ),
        what="the annotation removed by hand put back",
    )
    stored = managed(kubectl, "deployment", "deployment-m")
    assert stored["metadata"]["generation"] == generation + 2  # the removal, the repair
    assert field_manager(policy) in {e["manager"] for e in stored["metadata"]["managedFields"]}

    policies.delete(policy)
    for kind in kinds:
        assert metadata(kubectl, kind, f"{kind.value.lower()}-m") == before[kind]


def test_a_clash_with_the_apps_own_value_is_a_conflict_while_the_others_roll_out(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(
        with_template(WorkloadKind.DEPLOYMENT, "own-port", **{"prometheus.io/port": "80"})
    )
    kubectl.apply(with_template(WorkloadKind.DEPLOYMENT, "no-port"))
    kept = metadata(kubectl, WorkloadKind.DEPLOYMENT, "own-port")
    policy = policies.apply(containers=[SIDECAR], podMetadata={"annotations": SCRAPE})
    status = eventually(
        lambda: (
            (s := policies.status(policy)).get("updatedWorkloads") == 1
            and s.get("conflicts") == 1
            and s
        ),
        what="one updated, one conflict",
    )
    message = condition(status, "Degraded")["message"]
    assert "pod annotation prometheus.io/port is already set to '80'" in message
    assert metadata(kubectl, WorkloadKind.DEPLOYMENT, "own-port") == kept
    pod = kubectl.json("deployment", "own-port")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["app"]  # all or nothing
    assert metadata(kubectl, WorkloadKind.DEPLOYMENT, "no-port")["annotations"] == SCRAPE
    warned = eventually(
        lambda: [e for e in events(kubectl, "Deployment", "own-port") if e["type"] == "Warning"],
        what="the conflict's Event",
    )
    assert "prometheus.io/port" in warned[0]["message"]


@pytest.mark.usefixtures("admitted")
def test_admission_sets_them_on_the_first_pod(kubectl: Kubectl, policies: Policies) -> None:
    policy = policies.apply(
        containers=[SIDECAR],
        podMetadata={"labels": {"exporter": "on"}, "annotations": SCRAPE},
    )
    eventually(lambda: ready(policies, policy, matched=0), what="the policy Ready")
    kubectl("create", "-f", "-", input=yaml.safe_dump(app("admitted-m")))
    created = kubectl.json("deployment", "admitted-m")  # as admission left it, at creation
    template = created["spec"]["template"]["metadata"]
    assert template["labels"]["exporter"] == "on"
    assert template["annotations"] == SCRAPE
    eventually(lambda: ready(policies, policy, matched=1), what="adopted")
    adopted = managed(kubectl, "deployment", "admitted-m")
    assert adopted["metadata"]["generation"] == created["metadata"]["generation"]
    assert ownership(adopted, policy).pod_annotations == set(SCRAPE)
