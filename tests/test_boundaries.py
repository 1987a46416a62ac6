"""What a policy must not reach: the system namespaces and the operator's own, Deployments that
opt out (by annotation or label), and annotations that only look like the operator's."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import OPERATOR_NAMESPACE
from tests.kube import Kubectl, eventually
from tests.scenario import (
    FLUENT_BIT,
    LOG_VOLUME,
    Policies,
    condition,
    deployment,
    events,
    has_container,
    names,
    pod_spec,
    ready,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_an_empty_namespace_selector_leaves_system_and_operator_namespaces_alone(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies
) -> None:
    label = f"everywhere-{uuid.uuid4().hex[:6]}"
    labels = {"sidecar-test": label}
    kubectl_admin("create", "namespace", OPERATOR_NAMESPACE, check=False)
    protected = [kubectl_admin.in_namespace(ns) for ns in ("kube-system", OPERATOR_NAMESPACE)]
    for where in (kubectl, *protected):
        where.apply(deployment(label, labels=labels))
    try:
        name = policies.apply(
            selector={"matchLabels": labels},
            namespaceSelector={},
            containers=[{"name": "agent", "image": "busybox:1.36"}],
        )
        eventually(lambda: ready(policies, name, matched=1), what="only the test's Deployment")
        assert has_container(kubectl, label, "agent")
        for where in protected:
            assert names(pod_spec(where, label), "containers") == ["app"]

        # Named explicitly, a protected namespace is matched.
        policies.apply(
            name,
            selector={"matchLabels": labels},
            namespaceSelector={
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": [kubectl.namespace or "", OPERATOR_NAMESPACE],
                    }
                ]
            },
            containers=[{"name": "agent", "image": "busybox:1.36"}],
        )
        eventually(lambda: has_container(protected[1], label, "agent"), what="named: matched")
        assert names(pod_spec(protected[0], label), "containers") == ["app"]
    finally:
        for where in protected:
            where("delete", "deployment", label, "--ignore-not-found", "--wait=false")


def test_the_opt_out_label_keeps_a_deployment_out_and_takes_sidecars_back_out(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(
        deployment("opted-out", labels={"sidecar-test": "yes", "sidecars.dev/inject": "false"})
    )
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=1), what="only web matched")
    assert names(pod_spec(kubectl, "opted-out"), "containers") == ["app"]

    kubectl("label", "deployment", "web", "sidecars.dev/inject=false")
    eventually(lambda: not has_container(kubectl, "web", "fluent-bit"), what="removal")
    assert names(pod_spec(kubectl, "web"), "volumes") == []
    eventually(lambda: policies.status(name).get("matchedWorkloads") == 0, what="unmatched")


def test_a_copied_revision_annotation_is_not_taken_for_the_policy_s(
    kubectl: Kubectl, policies: Policies
) -> None:
    """A manifest copied from a Deployment that had the sidecars carries their annotation; on a
    Deployment the policy does not select, nothing of it is the policy's to remove."""
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    stray = {f"policy.sidecars.dev/{name}": "deadbeef00", "policy.sidecars.dev/gone": "abc"}
    kubectl.apply(deployment("copied", labels={"sidecar-test": "no"}, annotations=stray))
    kubectl.apply(deployment("web"))  # a pass and its writes happen meanwhile
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")
    kubectl("rollout", "status", "deployment/copied", "--timeout=60s")
    before = kubectl.json("deployment", "copied")["metadata"]["resourceVersion"]

    time.sleep(12)  # more than two resync passes (--resync-seconds 5)
    after = kubectl.json("deployment", "copied")
    assert after["metadata"]["resourceVersion"] == before
    assert after["metadata"]["annotations"][f"policy.sidecars.dev/{name}"] == "deadbeef00"
    ours = [
        e
        for e in events(kubectl, "Deployment", "copied")
        if e.get("source", {}).get("component") == "sidecar-operator"
    ]
    assert len(ours) <= 1, ours


def test_a_sidecar_the_namespace_pod_security_level_refuses_is_a_reported_conflict(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, namespace: str
) -> None:
    """Pod Security admits the Deployment but would refuse its Pods: no rollout is started."""
    kubectl_admin("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    hardened = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    app = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "nginx:1.27", "securityContext": hardened}],
    }
    kubectl.apply(deployment("web", pod=app))
    before = pod_spec(kubectl, "web")
    loose = policies.apply(containers=[{"name": "agent", "image": "busybox:1.36"}])
    status = eventually(lambda: (s := policies.status(loose)).get("conflicts") == 1 and s)
    message = condition(status, "Degraded")["message"]
    assert "enforces the restricted Pod Security level" in message and "agent" in message
    assert pod_spec(kubectl, "web") == before

    strict = policies.apply(
        containers=[{"name": "strict-agent", "image": "busybox:1.36", "securityContext": hardened}]
    )
    eventually(lambda: ready(policies, strict, matched=1), what="the hardened sidecar injected")
    assert has_container(kubectl, "web", "strict-agent")


def test_an_opt_out_in_any_case_is_honoured_and_another_value_is_named(
    kubectl: Kubectl, policies: Policies
) -> None:
    """`"False"` was silently no opt-out: the Deployment got the sidecars."""
    for name, value in (("title", "False"), ("upper", "FALSE"), ("unclear", "no")):
        kubectl.apply(deployment(name, annotations={"sidecars.dev/inject": value}))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=1), what="only the unclear one matched")
    assert has_container(kubectl, "unclear", "fluent-bit")
    for opted_out in ("title", "upper"):
        assert names(pod_spec(kubectl, opted_out), "containers") == ["app"]
    warning = eventually(
        lambda: events(kubectl, "Deployment", "unclear", reason="UnclearOptOut"),
        what="a Warning naming the value",
    )
    assert warning[0]["type"] == "Warning" and "'no'" in warning[0]["message"]


def test_a_sidecar_port_the_app_has_on_the_host_network_is_a_reported_conflict(
    kubectl: Kubectl, policies: Policies
) -> None:
    """On the host's network every container port is a host port: the Deployment took the
    sidecar, its ReplicaSet could make no Pod, and the policy said RollingOut until its deadline."""
    app = {
        "hostNetwork": True,
        "containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 9100}]}],
    }
    kubectl.apply(deployment("on-host", pod=app))
    kubectl.apply(deployment("web"))
    exporter = {"name": "exporter", "image": "busybox:1.36", "ports": [{"containerPort": 9100}]}
    name = policies.apply(containers=[exporter])
    status = eventually(
        lambda: (
            (s := policies.status(name)).get("conflicts") == 1
            and s.get("readyWorkloads") == 1
            and s
        ),
        what="web injected, on-host a conflict",
    )
    message = condition(status, "Degraded")["message"]
    assert "on-host" in message and "host port TCP//9100" in message
    assert names(pod_spec(kubectl, "on-host"), "containers") == ["app"]
    eventually(
        lambda: events(kubectl, "Deployment", "on-host", reason="SidecarConflict"),
        what="the Deployment's Event",
    )
