"""One local control plane per test session, one namespace per test."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from tests.kube import CRD_FILE, Kubectl, dev, kubeconfig_from


@pytest.fixture(scope="session")
def kubectl_admin() -> Iterator[Kubectl]:
    """Bring the local cluster up (or reuse a running one); stop it after only if we started it."""
    was_running = dev("env", check=False).returncode == 0
    result = dev("up", check=False)
    if result.returncode != 0:
        pytest.fail(f"`sidecar-operator dev up` failed:\n{result.stderr}", pytrace=False)
    yield Kubectl(kubeconfig_from(result.stdout.strip().splitlines()[-1]))
    if not was_running:
        dev("down")


@pytest.fixture
def namespace(kubectl_admin: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (without waiting)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:5]}"
    kubectl_admin("create", "namespace", name)
    yield name
    kubectl_admin("delete", "namespace", name, "--wait=false")


@pytest.fixture
def kubectl(kubectl_admin: Kubectl, namespace: str) -> Kubectl:
    """kubectl scoped to this test's namespace."""
    return kubectl_admin.in_namespace(namespace)


@pytest.fixture(scope="session")
def crd_installed(kubectl_admin: Kubectl) -> Kubectl:
    """The SidecarPolicy CRD from crds/, applied server-side as the README says."""
    kubectl_admin("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl_admin(
        "wait", "--for=condition=Established", "crd/sidecarpolicies.sidecars.dev", "--timeout=60s"
    )
    return kubectl_admin
