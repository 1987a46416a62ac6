"""Odd but valid input, and writes the cluster refuses: each reaches the user as a result or a
reported conflict, never as a worker that crashes and retries."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from tests.kube import Kubectl, eventually
from tests.scenario import (
    FLUENT_BIT,
    LOG_VOLUME,
    Policies,
    condition,
    deployment,
    events,
    has_container,
    pod_spec,
    ready,
)

pytestmark = pytest.mark.usefixtures("operator")


def reported(
    policies: Policies, name: str, *, ready: int, conflicts: int, timeout: float
) -> dict[str, Any]:
    """The policy's status once it shows this many Deployments ready and this many skipped."""
    return dict(
        eventually(
            lambda: (
                (s := policies.status(name)).get("conflicts") == conflicts
                and s.get("readyWorkloads") == ready
                and s
            ),
            timeout=timeout,
            what=f"{ready} ready and {conflicts} reported",
        )
    )


def conflict_event(kubectl: Kubectl, deployment_name: str) -> dict[str, Any]:
    """The Warning Event a skipped Deployment gets, once it is there."""
    found = eventually(
        lambda: events(kubectl, "Deployment", deployment_name, reason="SidecarConflict"),
        what=f"a SidecarConflict Event on {deployment_name}",
    )
    return dict(found[0])


def test_non_ascii_text_is_written_as_it_is(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("web"))
    greeting = "hello 😀 — grüße, 你好"
    sidecar = {**FLUENT_BIT, "env": [{"name": "GREETING", "value": greeting}]}
    name = policies.apply(containers=[sidecar], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")
    written = next(c for c in pod_spec(kubectl, "web")["containers"] if c["name"] == "fluent-bit")
    assert written["env"] == [{"name": "GREETING", "value": greeting}]


def test_a_container_name_the_api_server_refuses_is_a_reported_conflict(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    before = pod_spec(kubectl, "web")
    name = policies.apply(containers=[{"name": "shipper-😀", "image": "busybox:1.36"}])
    status = eventually(lambda: (s := policies.status(name)).get("conflicts") == 1 and s)
    assert condition(status, "Degraded")["status"] == "True"
    assert "rejected" in condition(status, "Degraded")["message"]
    assert pod_spec(kubectl, "web") == before
    conflict_event(kubectl, "web")


def _refusing_admission_policy(kubectl: Kubectl, namespace: str) -> str:
    """A ValidatingAdmissionPolicy refusing fluent-bit in Deployments labelled refuse=yes, with
    403 Forbidden (as webhooks do; its default, 422 Invalid, was always handled)."""
    name = f"no-shipper-{uuid.uuid4().hex[:6]}"
    kubectl.apply(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicy",
                    "metadata": {"name": name},
                    "spec": {
                        "failurePolicy": "Fail",
                        "matchConstraints": {
                            "resourceRules": [
                                {
                                    "apiGroups": ["apps"],
                                    "apiVersions": ["v1"],
                                    "operations": ["UPDATE"],
                                    "resources": ["deployments"],
                                }
                            ]
                        },
                        "validations": [
                            {
                                "expression": "!object.spec.template.spec.containers.exists("
                                "c, c.name == 'fluent-bit')",
                                "message": "log shipping is not allowed for this team",
                                "reason": "Forbidden",
                            }
                        ],
                    },
                },
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingAdmissionPolicyBinding",
                    "metadata": {"name": name},
                    "spec": {
                        "policyName": name,
                        "validationActions": ["Deny"],
                        "matchResources": {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": namespace}
                            },
                            "objectSelector": {"matchLabels": {"refuse": "yes"}},
                        },
                    },
                },
            ]
        )
    )
    return name


def test_a_write_refused_by_admission_is_that_deployment_s_problem(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, namespace: str
) -> None:
    refusal = _refusing_admission_policy(kubectl_admin, namespace)
    try:
        kubectl.apply(deployment("refused", labels={"sidecar-test": "yes", "refuse": "yes"}))
        for index in range(4):
            kubectl.apply(deployment(f"web-{index}"))
        # The binding takes a moment to be in force: wait until it refuses a (dry-run) write.
        probe = '{"spec":{"template":{"spec":{"containers":[{"name":"fluent-bit","image":"x"}]}}}}'
        eventually(
            lambda: (
                kubectl(
                    "patch", "deployment", "refused", "--dry-run=server", "-p", probe, check=False
                ).returncode
                != 0
            ),
            what="the admission policy in force",
        )
        name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])

        status = reported(policies, name, ready=4, conflicts=1, timeout=90)
        assert condition(status, "Degraded")["status"] == "True"
        assert "log shipping is not allowed" in condition(status, "Degraded")["message"]
        assert all(has_container(kubectl, f"web-{index}", "fluent-bit") for index in range(4))
        assert not has_container(kubectl, "refused", "fluent-bit")
        assert "log shipping is not allowed" in conflict_event(kubectl, "refused")["message"]
        eventually(
            lambda: events(kubectl, "Deployment", "web-0", reason="SidecarsInjected"),
            what="the batch's Events posted",
        )
    finally:
        kubectl_admin(
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            refusal,
            "--ignore-not-found",
        )


@pytest.mark.parametrize("kilobytes", [300, 900])
def test_a_large_policy_is_applied_and_deleted(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, kilobytes: int
) -> None:
    """Any spec the API server stores: Kopf kept a copy of the spec in an annotation, whose
    256 KiB limit left a 300 KB policy stuck Terminating."""
    kubectl.apply(deployment("web"))
    before = pod_spec(kubectl, "web")
    filler = "x" * 1000
    sidecar = {
        **FLUENT_BIT,
        "env": [{"name": f"SETTING_{index}", "value": filler} for index in range(kilobytes)],
    }
    name = f"big-{uuid.uuid4().hex[:8]}"
    policies.apply_all({name: {"containers": [sidecar], "volumes": [LOG_VOLUME]}}, server_side=True)
    eventually(lambda: ready(policies, name, matched=1), timeout=120, what="injected")
    assert has_container(kubectl, "web", "fluent-bit")

    policies.delete(name)  # waits for the finalizer: the removal ran
    assert pod_spec(kubectl, "web") == before
    remaining = kubectl_admin.json("sidecarpolicies")["items"]
    assert all(p["metadata"]["name"] != name for p in remaining)


def test_deployments_deleted_while_the_policy_writes_are_neither_counted_nor_cleaned_up(
    kubectl: Kubectl, policies: Policies
) -> None:
    """Found by the chaos corpus: a write answered after the watch saw the deletion put the
    Deployment back in memory, where it was counted as matched and its cleanup, refused by
    the API server, held the policy's deletion forever. That race is timing: this drives it as
    a user would, and `test_write_faults.py` reproduces it every time."""
    kubectl.apply(yaml.safe_dump_all([yaml.safe_load(deployment(f"web-{i}")) for i in range(10)]))
    before = pod_spec(kubectl, "web-0")
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    kubectl("delete", "deployment", *[f"web-{i}" for i in range(1, 10, 2)], "--wait=false")
    eventually(lambda: ready(policies, name, matched=5), timeout=90, what="five injected")
    policies.delete(name)  # waits for the finalizer: removal did not retry the deleted ones
    assert pod_spec(kubectl, "web-0") == before


def test_a_webhook_that_is_down_holds_back_only_its_deployments_and_is_reported(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, namespace: str
) -> None:
    """A validating webhook that is down (failurePolicy Fail) answers 500 for the Deployments
    it covers. Found by the chaos corpus: under the budget that Deployment took the only slot on
    every pass, nothing else rolled out, and only the operator's log said why."""
    webhook = f"down-{uuid.uuid4().hex[:6]}"
    # Running pods: injecting into a workload with none is not paced; the budget is the point.
    covered = {"sidecar-test": "yes", "covered": "yes"}
    kubectl.apply(deployment("covered", labels=covered, replicas=1))
    kubectl.apply(deployment("web", replicas=1))
    kubectl_admin.apply(
        yaml.safe_dump(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": webhook},
                "webhooks": [
                    {
                        "name": "down.sidecars.dev",
                        "admissionReviewVersions": ["v1"],
                        "sideEffects": "None",
                        "failurePolicy": "Fail",
                        "timeoutSeconds": 2,
                        "clientConfig": {"url": "https://127.0.0.1:1/validate"},
                        "rules": [
                            {
                                "apiGroups": ["apps"],
                                "apiVersions": ["v1"],
                                "operations": ["UPDATE"],
                                "resources": ["deployments"],
                            }
                        ],
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        },
                        "objectSelector": {"matchLabels": {"covered": "yes"}},
                    }
                ],
            }
        )
    )
    try:
        eventually(
            lambda: (
                kubectl(
                    "annotate", "deployment", "covered", "probe=1", "--dry-run=server", check=False
                ).returncode
                != 0
            ),
            what="the webhook in force",
        )
        name = policies.apply(
            containers=[FLUENT_BIT], volumes=[LOG_VOLUME], updateStrategy={"maxConcurrent": 1}
        )
        status = reported(policies, name, ready=1, conflicts=1, timeout=120)
        assert has_container(kubectl, "web", "fluent-bit")
        assert "failed calling webhook" in condition(status, "Degraded")["message"]
        assert "failed calling webhook" in conflict_event(kubectl, "covered")["message"]
    finally:
        kubectl_admin("delete", "validatingwebhookconfiguration", webhook, "--ignore-not-found")
    eventually(  # the webhook gone, the next try goes through: nobody had to touch anything
        lambda: ready(policies, name, matched=2),
        timeout=90,
        what="covered injected once the webhook is gone",
    )
    assert has_container(kubectl, "covered", "fluent-bit")
