"""Installing the operator from manifests/ (kustomize), and its RBAC proven by running with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import OperatorProcess
from tests.kube import REPO, Kubectl, eventually, refused, service_account_kubeconfig
from tests.scenario import (
    FLUENT_BIT,
    LOG_VOLUME,
    Policies,
    deployment,
    has_container,
    ready,
)
from tests.tools import CHART, Helm

MANIFESTS = str(REPO / "manifests")
NAMESPACE = "sidecar-operator-system"
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:sidecar-operator"


# Installs cluster-wide objects, and a webhook whose pods never run on kwok: every create
# elsewhere would wait for it to time out.
pytestmark = pytest.mark.exclusive


@pytest.fixture(scope="module")
def installed(crd_installed: Kubectl) -> Iterator[Kubectl]:
    crd_installed("apply", "--server-side", "--force-conflicts", "-k", MANIFESTS)
    yield crd_installed
    # All but the CRDs (the session's policies) goes: on kwok the operator's pods never run,
    # and their webhook would make every later create wait for the call to time out; and the
    # chart's tests install the same cluster-wide objects under Helm.
    rendered = yaml.safe_load_all(crd_installed("kustomize", MANIFESTS).stdout)
    removed = [d for d in rendered if d and d["kind"] != "CustomResourceDefinition"]
    crd_installed(
        "delete", "-f", "-", "--ignore-not-found", "--wait=false", input=yaml.safe_dump_all(removed)
    )


def test_the_manifests_render_and_pass_a_server_side_dry_run(installed: Kubectl) -> None:
    # Dry-run checks an upgrade: on a first install the namespace does not exist yet, and a
    # dry run creates nothing for the objects in it to go into.
    rendered = list(yaml.safe_load_all(installed("kustomize", MANIFESTS).stdout))
    kinds = {doc["kind"] for doc in rendered}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "Role",
        "RoleBinding",
    } <= kinds
    installed("apply", "--server-side", "--dry-run=server", "--force-conflicts", "-k", MANIFESTS)


def test_the_cluster_role_has_no_wildcards_and_workloads_only_read_and_patch(
    crd_installed: Kubectl,
) -> None:
    rendered = yaml.safe_load_all(crd_installed("kustomize", MANIFESTS).stdout)
    role = next(
        doc
        for doc in rendered
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"] == "sidecar-operator"
    )
    workloads = {"deployments", "statefulsets", "daemonsets", "cronjobs"}
    granted = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        if workloads & set(rule["resources"]):
            assert sorted(rule["verbs"]) == ["get", "list", "patch", "watch"]
            granted |= set(rule["resources"])
        if "events" in rule["resources"]:  # posted, never updated; core/v1 only
            assert rule["apiGroups"] == [""] and rule["verbs"] == ["create"]
    assert granted == workloads


def test_the_operator_deployment_runs_under_restricted_pod_security(installed: Kubectl) -> None:
    system = installed.in_namespace(NAMESPACE)
    labels = installed.json("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    system("rollout", "status", "deployment/sidecar-operator", "--timeout=120s")
    pods = system.json("pods", "-l", "app.kubernetes.io/name=sidecar-operator")["items"]
    assert len(pods) == 2
    assert all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
        for pod in pods
    )


@pytest.fixture
def operator_as_service_account(
    installed: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> Iterator[Kubectl]:
    """The session's operator swapped for one that has only the ClusterRole from manifests/."""
    eventually(
        lambda: (
            installed(
                "auth",
                "can-i",
                "watch",
                "deployments",
                "-A",
                f"--as={SERVICE_ACCOUNT}",
                check=False,
            ).stdout.strip()
            == "yes"
        ),
        what="the ClusterRoleBinding in force",
    )
    kubeconfig = service_account_kubeconfig(
        installed, NAMESPACE, "sidecar-operator", tmp_path / "sa-kubeconfig"
    )
    limited = OperatorProcess(
        kubeconfig,
        tmp_path / "operator-sa.log",
        "--peering=sidecar-operator",
        f"--operator-namespace={NAMESPACE}",  # as the Deployment sets it: its revision history
    )
    operator.stop()
    limited.start()
    try:
        yield Kubectl(kubeconfig)
    finally:
        limited.stop()
        operator.start()
        errors = refused(limited.log())
        assert errors == [], "\n".join(errors[:5])


def test_the_operator_injects_updates_and_removes_with_its_cluster_role(
    operator_as_service_account: Kubectl, kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    first = eventually(lambda: ready(policies, name, matched=1), what="injected and Ready")
    assert has_container(kubectl, "web", "fluent-bit")

    newer = {**FLUENT_BIT, "image": "fluent/fluent-bit:3.2.10"}
    policies.apply(name, containers=[newer], volumes=[LOG_VOLUME])
    second = eventually(
        lambda: (
            (s := ready(policies, name, matched=1)) and s["revision"] != first["revision"] and s
        ),
        what="updated and Ready",
    )
    assert second["updatedWorkloads"] == 1

    policies.delete(name)
    assert not has_container(kubectl, "web", "fluent-bit")
    peering = operator_as_service_account.json("clusterkopfpeering", "sidecar-operator")
    assert peering["status"], "the operator keeps itself alive in its peering object"


def test_the_cluster_role_cannot_read_secrets_or_write_pods(
    installed: Kubectl, tmp_path: Path, namespace: str
) -> None:
    limited = Kubectl(
        service_account_kubeconfig(
            installed, NAMESPACE, "sidecar-operator", tmp_path / "kubeconfig"
        )
    )
    secrets = limited("get", "secrets", "-A", check=False)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()
    pod = limited("run", "intruder", "--image=busybox:1.36", "-n", namespace, check=False)
    assert pod.returncode != 0 and "forbidden" in pod.stderr.lower()
    for verb, resource, namespace_, answer in (
        ("get", "secrets/sidecar-operator-webhook", NAMESPACE, "yes"),
        ("get", "secrets/another", NAMESPACE, "no"),
        ("patch", "mutatingwebhookconfigurations/sidecar-operator", None, "yes"),
        ("patch", "mutatingwebhookconfigurations/another", None, "no"),
    ):
        where = [f"--namespace={namespace_}"] if namespace_ else []
        granted = installed(
            "auth", "can-i", verb, resource, f"--as={SERVICE_ACCOUNT}", *where, check=False
        )
        assert granted.stdout.strip() == answer, (verb, resource)
    for verb, resource in (
        ("get", "secrets"),
        ("create", "pods"),
        ("delete", "deployments"),
        ("update", "deployments"),
        ("delete", "statefulsets"),
        ("create", "jobs"),
        ("update", "cronjobs"),
    ):
        answer = installed(
            "auth", "can-i", verb, resource, f"--as={SERVICE_ACCOUNT}", "-A", check=False
        )
        assert answer.stdout.strip() == "no", (verb, resource)


def test_reading_policies_joins_view_and_writing_them_is_for_platform_admins(
    installed: Kubectl, namespace: str
) -> None:
    """Creating a SidecarPolicy runs an image in every selected Pod: a cluster-admin power."""
    viewer, namespace_admin, platform = (
        f"{role}-{namespace}" for role in ("viewer", "ns-admin", "platform")
    )
    installed("create", "clusterrolebinding", viewer, "--clusterrole=view", f"--user={viewer}")
    installed(
        "create",
        "rolebinding",
        namespace_admin,
        "--clusterrole=admin",
        f"--user={namespace_admin}",
        f"--namespace={namespace}",
    )
    installed(
        "create",
        "clusterrolebinding",
        platform,
        "--clusterrole=sidecarpolicies-edit",
        f"--user={platform}",
    )
    try:

        def can(user: str, verb: str) -> str:
            answer = installed(
                "auth", "can-i", verb, "sidecarpolicies", f"--as={user}", check=False
            )
            return answer.stdout.strip()

        eventually(lambda: can(viewer, "list") == "yes", what="view aggregated")
        assert can(viewer, "create") == "no"
        assert can(namespace_admin, "create") == "no"
        assert can(platform, "create") == "yes" and can(platform, "delete") == "yes"
    finally:
        installed("delete", "clusterrolebinding", viewer, platform, "--ignore-not-found")


def test_an_install_from_the_manifests_moves_under_helm(installed: Kubectl) -> None:
    """Last of the module: what docs/operating.md tells whoever moves from kustomize to Helm."""
    installer = Helm(installed, NAMESPACE)
    installer(
        "install",
        "sidecar-operator",
        str(CHART),
        "--take-ownership",
        "--force-conflicts",
        "--wait",
        "--timeout=3m",
    )
    for obj in installer.objects():
        where = obj["metadata"].get("namespace")
        held = installed.json(
            obj["kind"].lower(), obj["metadata"]["name"], *(["-n", where] if where else [])
        )
        assert held["metadata"]["annotations"]["meta.helm.sh/release-name"] == "sidecar-operator"
    installer("uninstall", "sidecar-operator", "--wait")
    gone = installed("get", "clusterrole", "sidecar-operator", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    installed("get", "crd", "sidecarpolicies.sidecars.dev")
