"""What the policy wants against what the workload holds, on the real control plane: values the
API server drops or defaults are no drift (no write at rest), an edit by hand is repaired, and a
write the API server accepts but stores otherwise is reported once, not sent again and again."""

from __future__ import annotations

import json
import time

import pytest
from bench.workload import EVERY_DEFAULT

from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import Policies, condition, deployment, policy_events, ready

pytestmark = pytest.mark.usefixtures("operator")


def test_values_the_api_server_drops_or_defaults_write_nothing_at_rest(
    kubectl: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    for name in ("web", "api"):
        kubectl.apply(deployment(name))
    name = policies.apply(**EVERY_DEFAULT)  # what the bench's at-rest window measures too
    eventually(lambda: ready(policies, name, matched=2), what="Ready: both updated and ready")
    versions = {
        d: kubectl.json("deployment", d)["metadata"]["resourceVersion"] for d in ("web", "api")
    }
    before = operator.writes(name)
    assert before == 2  # one inject each

    time.sleep(12)  # more than two resync passes (--resync-seconds 5)
    assert operator.writes(name) == before
    for deployment_name, version in versions.items():
        assert kubectl.json("deployment", deployment_name)["metadata"]["resourceVersion"] == version
    injected = policy_events(kubectl, name, "Injected")
    assert sum(event.get("count", 1) for event in injected) == 1  # one aggregated Event


def test_an_env_value_edited_by_hand_is_put_back_even_when_it_reads_as_the_same_number(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    sidecar = {
        "name": "shipper",
        "image": "busybox:1.36",
        "env": [{"name": "LIMIT", "value": "1000"}],
    }
    name = policies.apply(containers=[sidecar])
    eventually(lambda: ready(policies, name, matched=1), what="injected")

    def limit() -> str:
        containers = kubectl.json("deployment", "web")["spec"]["template"]["spec"]["containers"]
        shipper = next(c for c in containers if c["name"] == "shipper")
        return str(shipper["env"][0]["value"])

    for edited in ("1k", "1e3"):
        patch = [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/1/env/0/value",
                "value": edited,
            }
        ]
        kubectl("patch", "deployment", "web", "--type=json", "-p", json.dumps(patch))
        eventually(lambda: limit() == "1000", what=f"{edited} repaired to 1000")


def test_a_write_the_api_server_stores_otherwise_is_reported_once_and_not_repeated(
    kubectl: Kubectl,
    kubectl_admin: Kubectl,
    policies: Policies,
    operator: OperatorProcess,
    namespace: str,
) -> None:
    """A MutatingAdmissionPolicy pins the sidecar's image to another: each write is accepted,
    and what is stored is never what the policy wants."""
    pin = f"pin-{namespace}"
    kubectl_admin.apply(_pinning_policy(pin, namespace))
    try:
        eventually(lambda: _pinned(kubectl), timeout=30, what="the admission policy in force")
        kubectl.apply(deployment("web"))
        name = policies.apply(containers=[{"name": "pinned", "image": "busybox:1.36"}])
        status = eventually(
            lambda: (s := policies.status(name)).get("conflicts") == 1 and s, what="reported"
        )
        assert (
            "stores it otherwise (container pinned: image)"
            in condition(status, "Degraded")["message"]
        )
        eventually(lambda: policy_events(kubectl, name, "Conflict"), what="the policy's Event")
        sent = operator.writes(name)
        time.sleep(12)  # two resync passes: nothing more is sent
        assert operator.writes(name) == sent == 1
    finally:
        kubectl_admin("delete", "mutatingadmissionpolicy", pin, "--ignore-not-found")
        kubectl_admin("delete", "mutatingadmissionpolicybinding", pin, "--ignore-not-found")
    # Once the cause is gone, a change to the workload lets the policy write again.
    eventually(lambda: not _pinned(kubectl), timeout=30, what="the admission policy gone")
    kubectl("rollout", "restart", "deployment/web")
    eventually(lambda: ready(policies, name, matched=1), what="written once the pin is gone")


def _pinned(kubectl: Kubectl) -> bool:
    """Whether the admission policy already rewrites images (a probe, dry-run)."""
    result = kubectl(
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=deployment(
            "probe", pod={"containers": [{"name": "pinned", "image": "busybox:1.36"}]}
        ),
    )
    image = json.loads(result.stdout)["spec"]["template"]["spec"]["containers"][0]["image"]
    return bool(image == PINNED)


PINNED = "busybox:1.35"


def _pinning_policy(name: str, namespace: str) -> str:
    """A MutatingAdmissionPolicy and its binding: in `namespace`, a container named `pinned`
    gets image PINNED."""
    documents = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "matchConditions": [
                    {
                        "name": "has-pinned",
                        "expression": "object.spec.template.spec.containers"
                        ".exists(c, c.name == 'pinned')",
                    }
                ],
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "mutations": [
                    {
                        "patchType": "ApplyConfiguration",
                        "applyConfiguration": {
                            "expression": "Object{spec: Object.spec{template: Object.spec."
                            "template{spec: Object.spec.template.spec{containers: [Object.spec."
                            "template.spec.containers{name: 'pinned', image: '" + PINNED + "'}]}}}}"
                        },
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        },
    ]
    return "\n---\n".join(json.dumps(d) for d in documents)
