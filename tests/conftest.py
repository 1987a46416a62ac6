"""One local control plane per test session, one namespace per test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar_operator.devcluster import Cluster
from sidecar_operator.devcluster import admission as admission_on_host
from tests.kube import (
    CRD_FILE,
    PEERING_CRD_FILE,
    REPO,
    SIDECAR_OPERATOR,
    Kubectl,
    dev,
    eventually,
    kubeconfig_from,
)
from tests.scenario import Policies

# Apart from the `dev` cluster that `make demo` uses, so a running demo and its operator never
# see the tests' objects.
TEST_CLUSTER = os.environ.get("SIDECAR_OPERATOR_TEST_CLUSTER", "test")
# The session's operator runs as the manifests run it: in a peering (so that a second replica
# can be started beside it), with an own namespace that no policy reaches without naming it.
PEERING = "sidecar-operator-tests"
OPERATOR_NAMESPACE = "sidecar-operator-tests"
ADMISSION_CONFIGURATION = "sidecar-operator-tests"
ADMITTED = "sidecars.dev/test-admission"  # the namespaces the tests' webhook covers


@pytest.fixture(scope="session")
def kubectl_admin() -> Iterator[Kubectl]:
    """Bring the local cluster up (or reuse a running one); stop it after only if we started it."""
    was_running = dev("env", "--name", TEST_CLUSTER, check=False).returncode == 0
    result = dev("up", "--name", TEST_CLUSTER, check=False)
    if result.returncode != 0:
        pytest.fail(f"`sidecar-operator dev up` failed:\n{result.stderr}", pytrace=False)
    yield Kubectl(kubeconfig_from(result.stdout.strip().splitlines()[-1]))
    if not was_running:
        dev("down", "--name", TEST_CLUSTER)


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
    """The CRDs from crds/, applied server-side as the README says."""
    for path in (CRD_FILE, PEERING_CRD_FILE):
        kubectl_admin("apply", "--server-side", "--force-conflicts", "-f", str(path))

    def established() -> bool:
        for name in ("sidecarpolicies.sidecars.dev", "clusterkopfpeerings.kopf.dev"):
            crd = kubectl_admin.json("crd", name)
            conditions = crd.get("status", {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return False
        return True

    # Not `kubectl wait`: it fails outright while a new CRD has no conditions yet.
    eventually(established, what="the CRD to be Established")
    return kubectl_admin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`sidecar-operator run` as a subprocess, as a user starts it; stoppable mid-test."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *extra_args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = extra_args
        self.env = env or {}
        self.metrics_port = free_port()
        self.liveness_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    SIDECAR_OPERATOR,
                    "run",
                    "--resync-seconds",
                    "5",
                    "--log-format",
                    "json",
                    "--metrics-port",
                    str(self.metrics_port),
                    "--liveness-port",
                    str(self.liveness_port),
                    *self.extra_args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: its HTTP status and what it reports."""
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def webhook_certs(kubectl_admin: Kubectl) -> Path:
    """The operator on the host serves admission at https://localhost (`devcluster.admission`),
    with the PKI of the cluster `kubectl_admin` brought up."""
    return admission_on_host.certs(Cluster.named(TEST_CLUSTER))


@pytest.fixture(scope="session")
def webhook_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def operator(
    crd_installed: Kubectl,
    webhook_certs: Path,
    webhook_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    # Its own namespace, as an install has it: the policies' revision history is kept there.
    crd_installed("create", "namespace", OPERATOR_NAMESPACE, check=False)
    process = OperatorProcess(
        crd_installed.kubeconfig,
        tmp_path_factory.mktemp("operator") / "operator.log",
        f"--peering={PEERING}",
        f"--operator-namespace={OPERATOR_NAMESPACE}",
        f"--webhook-port={webhook_port}",
        f"--webhook-certs={webhook_certs}",
    )
    process.start()
    yield process
    process.stop()
    print(f"operator log: {process.log_path}")


@pytest.fixture(scope="session")
def admission(
    operator: OperatorProcess, crd_installed: Kubectl, webhook_certs: Path, webhook_port: int
) -> Iterator[str]:
    """The webhook configuration of `manifests/webhook.yaml` (an installer's, not Kopf's),
    pointed at the operator on the host and narrowed to namespaces labelled ADMITTED: the other
    tests see the controller alone. Yields the label."""
    configuration = admission_on_host.configuration(
        Cluster.named(TEST_CLUSTER),
        REPO / "manifests" / "webhook.yaml",
        port=webhook_port,
        name=ADMISSION_CONFIGURATION,
        namespace_selector={"matchLabels": {ADMITTED: "yes"}},
    )
    crd_installed.apply(json.dumps(configuration))
    yield ADMITTED
    crd_installed("delete", "mutatingwebhookconfiguration", ADMISSION_CONFIGURATION)


@pytest.fixture
def policies(kubectl_admin: Kubectl, namespace: str) -> Iterator[Policies]:
    """Policies for this test, deleted after it."""
    made = Policies(kubectl_admin, namespace)
    yield made
    for name in made.created:
        kubectl_admin("delete", "sidecarpolicy", name, "--ignore-not-found", "--wait=false")
