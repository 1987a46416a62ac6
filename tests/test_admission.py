"""Admission on the real control plane: a workload created while a policy exists is stored with
its sidecars (one ReplicaSet), the policy's field manager then owns them alone, the owner's
re-apply keeps them, removal gives the owner's template back, and nothing blocks a deploy."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import OperatorProcess, free_port, webhook_on_host
from tests.kube import Kubectl, eventually
from tests.scenario import (
    FLUENT_BIT,
    LOG_MOUNT,
    LOG_VOLUME,
    Policies,
    events,
    names,
    pod_spec,
    ready,
)

SIDECAR_KEY = 'k:{"name":"fluent-bit"}'
INJECTED = "SidecarsInjected"


@pytest.fixture
def admitted(kubectl_admin: Kubectl, namespace: str, admission: str) -> Iterator[str]:
    """This test's namespace, covered by the webhook."""
    kubectl_admin("label", "namespace", namespace, f"{admission}=yes")
    yield namespace


def app(name: str = "web", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"sidecar-test": "yes"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
            },
        },
    }


def create(kubectl: Kubectl, how: str, manifest: dict[str, Any]) -> None:
    text = yaml.safe_dump(manifest)
    if how == "create":
        kubectl("create", "-f", "-", input=text)
    elif how == "client-side apply":
        kubectl("apply", "-f", "-", input=text)
    else:
        kubectl("apply", "--server-side", "--field-manager=gitops", "-f", "-", input=text)


def replica_sets(kubectl: Kubectl) -> list[dict[str, Any]]:
    return list(kubectl.json("replicasets")["items"])


def sidecar_owners(kubectl: Kubectl, name: str) -> set[str]:
    stored = kubectl.json("deployment", name, "--show-managed-fields")
    owners = set()
    for entry in stored["metadata"]["managedFields"]:
        containers = (
            entry.get("fieldsV1", {})
            .get("f:spec", {})
            .get("f:template", {})
            .get("f:spec", {})
            .get("f:containers", {})
        )
        if SIDECAR_KEY in containers:
            owners.add(entry["manager"])
    return owners


@pytest.mark.usefixtures("admitted")
@pytest.mark.parametrize("how", ["create", "client-side apply", "server-side apply"])
def test_a_new_deployment_starts_with_its_sidecars_and_the_policy_alone_owns_them(
    kubectl: Kubectl, policies: Policies, how: str
) -> None:
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], volumeMounts=[LOG_MOUNT])
    eventually(lambda: ready(policies, name, matched=0), what="the policy Ready")
    create(kubectl, how, app())

    (first,) = eventually(lambda: replica_sets(kubectl), what="the first ReplicaSet")
    pod = first["spec"]["template"]["spec"]
    assert names(pod, "containers") == ["app", "fluent-bit"]
    assert pod["containers"][0]["volumeMounts"] == [{**LOG_MOUNT}]
    eventually(lambda: sidecar_owners(kubectl, "web") == {f"sidecars.dev/{name}"}, what="adopted")
    eventually(lambda: ready(policies, name, matched=1), what="counted Ready")
    assert len(replica_sets(kubectl)) == 1  # no second rollout

    if how != "create":  # the owner applies again, without the sidecars, and scales
        create(kubectl, how, app(replicas=2))
        stored = kubectl.json("deployment", "web")
        assert stored["spec"]["replicas"] == 2
        assert names(stored["spec"]["template"]["spec"], "containers") == ["app", "fluent-bit"]
        assert len(replica_sets(kubectl)) == 1

    policies.delete(name)
    assert pod_spec(kubectl, "web")["containers"] == [
        {
            "name": "app",
            "image": "nginx:1.27",
            "imagePullPolicy": "IfNotPresent",
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
        }
    ]
    assert "volumes" not in pod_spec(kubectl, "web")


@pytest.mark.usefixtures("admitted")
def test_a_paused_policy_adds_nothing_at_admission(kubectl: Kubectl, policies: Policies) -> None:
    paused = {"maxConcurrent": 1, "paused": True}
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], updateStrategy=paused)
    eventually(lambda: policies.status(name).get("observedGeneration"), what="seen")
    create(kubectl, "create", app())
    assert names(pod_spec(kubectl, "web"), "containers") == ["app"]


BROKEN = {**FLUENT_BIT, "image": "fluent/fluent-bit:never-ready"}


def revision(kubectl: Kubectl, deployment: str, policy: str) -> str | None:
    annotations = kubectl.json("deployment", deployment)["metadata"].get("annotations") or {}
    return annotations.get(f"policy.sidecars.dev/{policy}")


def owned_by_replica_sets(kubectl: Kubectl, deployment: str) -> int:
    return sum(
        1
        for rs in replica_sets(kubectl)
        if rs["metadata"]["ownerReferences"][0]["name"] == deployment
    )


@pytest.mark.usefixtures("admitted")
@pytest.mark.parametrize("how", ["replace", "client-side apply"])
def test_an_owners_update_keeps_the_revision_it_carries_while_the_budget_is_used_up(
    kubectl: Kubectl, policies: Policies, how: str
) -> None:
    """The new revision is stuck on one Deployment (its sidecar never gets ready) with
    maxConcurrent 1: an owner's update of another rolls its app out with the sidecars it
    carries, even when it leaves them out of a replace, and the policy still owns them alone."""
    budget = {"maxConcurrent": 1}
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], updateStrategy=budget)
    eventually(lambda: ready(policies, name, matched=0), what="the policy Ready")
    for deployment in ("web-0", "web-1"):
        kubectl("apply", "-f", "-", input=yaml.safe_dump(app(deployment)))
    eventually(lambda: ready(policies, name, matched=2), what="both injected and Ready")
    old = revision(kubectl, "web-0", name)

    policies.apply(name, containers=[BROKEN], volumes=[LOG_VOLUME], updateStrategy=budget)
    new = eventually(
        lambda: {d: r for d in ("web-0", "web-1") if (r := revision(kubectl, d, name)) != old},
        what="the new revision on one Deployment",
    )
    (stuck,) = new
    (other,) = {"web-0", "web-1"} - set(new)

    manifest = app(other)
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    text = yaml.safe_dump(manifest)
    kubectl("replace" if how == "replace" else "apply", "-f", "-", input=text)

    stored = kubectl.json("deployment", other)
    containers = stored["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("app", "nginx:1.28"),
        ("fluent-bit", FLUENT_BIT["image"]),
    ]
    assert revision(kubectl, other, name) == old
    assert sidecar_owners(kubectl, other) == {f"sidecars.dev/{name}"}
    # The owner's update is the only rollout since its creation: two ReplicaSets, not three.
    eventually(lambda: owned_by_replica_sets(kubectl, other) == 2, what="the owner's rollout")
    time.sleep(2)
    assert revision(kubectl, other, name) == old  # the controller holds it back too
    assert owned_by_replica_sets(kubectl, other) == 2
    assert revision(kubectl, stuck, name) != old


@pytest.fixture
def own_webhook_port() -> int:
    return free_port()


@pytest.fixture
def own_operator_args(webhook_certs: Path, own_webhook_port: int) -> tuple[str, ...]:
    return (f"--webhook-port={own_webhook_port}", f"--webhook-certs={webhook_certs}")


@pytest.fixture
def own_admission(
    own_operator: OperatorProcess, own_webhook_port: int, kubectl_admin: Kubectl, namespace: str
) -> Iterator[OperatorProcess]:
    """`own_operator`, serving admission for this test's namespace alone."""
    configuration = webhook_on_host(
        own_webhook_port, f"own-{namespace}", {"kubernetes.io/metadata.name": namespace}
    )
    kubectl_admin.apply(json.dumps(configuration))
    yield own_operator
    kubectl_admin("delete", "mutatingwebhookconfiguration", f"own-{namespace}")


def test_with_the_operator_down_creates_go_through_and_get_their_sidecars_after(
    kubectl: Kubectl, policies: Policies, own_admission: OperatorProcess
) -> None:
    operator = own_admission
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=0), what="the policy Ready")
    create(kubectl, "create", app("admitted"))  # served: stored with its sidecar
    assert "fluent-bit" in names(pod_spec(kubectl, "admitted"), "containers")
    operator.stop()
    try:
        create(kubectl, "create", app())  # the webhook does not answer: Ignore lets it in
        assert names(pod_spec(kubectl, "web"), "containers") == ["app"]
    finally:
        operator.start()
    eventually(lambda: "fluent-bit" in names(pod_spec(kubectl, "web"), "containers"), what="late")
    assert sidecar_owners(kubectl, "web") == {f"sidecars.dev/{name}"}
    injected = eventually(
        lambda: events(kubectl, "Deployment", "web", reason=INJECTED),
        what="the Event",
    )
    assert "after the workload was created: its first pods ran" in injected[0]["message"]
    counted = [
        line
        for line in operator.metrics().splitlines()
        if line.startswith("sidecar_operator_injected_after_creation_total{")
        and f'policy="{name}"' in line
    ]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) == 1


@pytest.mark.usefixtures("operator")
def _review(webhook_port: int, webhook_certs: Path, body: Any) -> tuple[int, dict[str, Any]]:
    eventually(lambda: _listening(webhook_port), what="the webhook served")
    context = ssl.create_default_context(cafile=str(webhook_certs / "ca.crt"))
    request = urllib.request.Request(
        f"https://localhost:{webhook_port}/inject.sidecars.dev",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("localhost", port), timeout=1).close()
    except OSError:
        return False
    return True


def _request(obj: Any, *, group: str = "apps", resource: str = "deployments") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b5a6e1c0-0000-4000-8000-000000000001",
            "kind": {"group": group, "version": "v1", "kind": "Whatever"},
            "resource": {"group": group, "version": "v1", "resource": resource},
            "operation": "CREATE",
            "userInfo": {"username": "someone"},
            "object": obj,
        },
    }


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize(
    "review",
    [
        _request(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
            group="",
            resource="pods",
        ),
        _request(
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"}},
            resource="replicasets",
        ),
        _request(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d"},
                "spec": {"template": "not a template"},
            }
        ),
        _request(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {},
                "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}},
            }
        ),
    ],
    ids=["a pod", "an unknown kind", "a broken template", "no name or namespace"],
)
def test_a_review_the_operator_cannot_use_is_allowed_unchanged(
    webhook_port: int, webhook_certs: Path, review: dict[str, Any]
) -> None:
    status, answer = _review(webhook_port, webhook_certs, review)
    assert status == 200
    assert answer["response"]["uid"] == review["request"]["uid"]
    assert answer["response"]["allowed"] is True
    assert "patch" not in answer["response"]


@pytest.mark.usefixtures("operator")
def test_a_body_that_is_no_review_fails_the_call_and_denies_nothing(
    webhook_port: int, webhook_certs: Path
) -> None:
    """Without the request's resource and operation it is no review: the call fails, and the
    configuration's failurePolicy Ignore lets the workload in."""
    status, answer = _review(webhook_port, webhook_certs, {"request": {"uid": "1"}})
    assert status >= 400 and answer == {}


@dataclass
class Replica:
    process: OperatorProcess
    port: int


@pytest.fixture
def replicas(
    kubectl_admin: Kubectl, namespace: str, tmp_path: Path
) -> Iterator[tuple[list[Replica], str]]:
    """Two replicas of a shard with no policy (named for this test's namespace) in a peering of
    their own, serving the webhook with a certificate from a Secret in this test's namespace,
    for a configuration of their own that selects no namespace."""
    configuration = f"{namespace}-webhook"
    rule = {
        "apiGroups": ["apps"],
        "apiVersions": ["v1"],
        "resources": ["deployments"],
        "operations": ["CREATE"],
    }
    service = {"name": "sidecar-operator-webhook", "namespace": namespace, "path": "/x"}
    webhook = {
        "name": "inject.sidecars.dev",
        "clientConfig": {"service": service},
        "rules": [rule],
        "namespaceSelector": {"matchLabels": {"selects": "nothing"}},
        "failurePolicy": "Ignore",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    }
    kubectl_admin.apply(
        yaml.safe_dump(
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": configuration},
                "webhooks": [webhook],
            }
        )
    )
    peering = f"certificate-{namespace}"
    started = []
    for index in range(2):
        port = _port()
        process = OperatorProcess(
            kubectl_admin.kubeconfig,
            tmp_path / f"replica-{index}.log",
            f"--peering={peering}",
            f"--shard={namespace}",
            f"--operator-namespace={namespace}",
            f"--webhook-port={port}",
            "--webhook-secret=webhook-certificate",
            f"--webhook-configuration={configuration}",
        )
        started.append(Replica(process, port))
    try:
        yield started, configuration
    finally:
        for replica in started:
            replica.process.stop()
        kubectl_admin("delete", "mutatingwebhookconfiguration", configuration)
        kubectl_admin("delete", "clusterkopfpeering", peering, "--ignore-not-found")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _served_certificate(port: int, ca: Path, host: str) -> bytes | None:
    """The certificate the webhook on this port serves, verified for the Service's name."""
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except OSError:
        return None


def test_replicas_share_one_certificate_and_the_ca_bundle_never_flips(
    replicas: tuple[list[Replica], str], kubectl_admin: Kubectl, namespace: str, tmp_path: Path
) -> None:
    (first, second), configuration = replicas
    system = kubectl_admin.in_namespace(namespace)
    host = f"sidecar-operator-webhook.{namespace}.svc"

    def ca_bundle() -> str:
        webhook = kubectl_admin.json("mutatingwebhookconfiguration", configuration)["webhooks"][0]
        return str(webhook["clientConfig"].get("caBundle") or "")

    def serving(replica: Replica) -> bytes | None:
        return _served_certificate(replica.port, ca, host)

    first.process.start()
    bundle = eventually(ca_bundle, what="the caBundle set by the first replica")
    secret = system.json("secret", "webhook-certificate")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(secret["data"]["ca.crt"]))
    assert base64.b64decode(bundle) == ca.read_bytes()

    second.process.start()
    served = [eventually(lambda r=r: serving(r), what="serving") for r in (first, second)]
    assert served[0] == served[1]  # one certificate, verified by the one CA for the Service
    first.process.stop()
    first.process.start()  # a restarted replica takes the same Secret
    eventually(lambda: serving(first), what="serving again")
    assert ca_bundle() == bundle
    assert (
        system.json("secret", "webhook-certificate")["metadata"]["uid"] == secret["metadata"]["uid"]
    )
