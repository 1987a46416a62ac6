"""Odd but valid input, and writes the cluster refuses: each reaches the user as a result or a
reported conflict, never as a worker that crashes and retries."""

from __future__ import annotations

import uuid

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
    eventually(
        lambda: [
            e for e in events(kubectl, "Deployment", "web") if e["reason"] == "SidecarConflict"
        ],
        what="Warning Event",
    )


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

        status = eventually(
            lambda: (
                (s := policies.status(name)).get("conflicts") == 1
                and s.get("readyDeployments") == 4
                and s
            ),
            timeout=90,
            what="four injected, one reported",
        )
        assert condition(status, "Degraded")["status"] == "True"
        assert "log shipping is not allowed" in condition(status, "Degraded")["message"]
        assert all(has_container(kubectl, f"web-{index}", "fluent-bit") for index in range(4))
        assert not has_container(kubectl, "refused", "fluent-bit")
        warning = eventually(
            lambda: [
                e
                for e in events(kubectl, "Deployment", "refused")
                if e["reason"] == "SidecarConflict"
            ],
            what="Warning Event on the refused Deployment",
        )
        assert "log shipping is not allowed" in warning[0]["message"]
        injected = [
            e for e in events(kubectl, "Deployment", "web-0") if e["reason"] == "SidecarsInjected"
        ]
        assert injected, "the batch's Events were posted"
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
