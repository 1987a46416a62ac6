"""One local control plane and one operator per test run (shared by pytest-xdist's workers:
`tests.shared`), one namespace per test."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar_operator.api.names import SHARD_LABEL
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
from tests.shared import ROOT_VARIABLE, Shared, Turns, stop_pid
from tests.zygote import Zygote

# Apart from the `dev` cluster that `make demo` uses, so a running demo and its operator never
# see the tests' objects.
TEST_CLUSTER = os.environ.get("SIDECAR_OPERATOR_TEST_CLUSTER", "test")
# The session's operator runs as the manifests run it: in a peering (so that a second replica
# can be started beside it), with an own namespace that no policy reaches without naming it.
PEERING = "sidecar-operator-tests"
OPERATOR_NAMESPACE = "sidecar-operator-tests"
ADMISSION_CONFIGURATION = "sidecar-operator-tests"
ADMITTED = "sidecars.dev/test-admission"  # the namespaces the tests' webhook covers


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the run's controlling process; workers inherit it
        os.environ[ROOT_VARIABLE] = tempfile.mkdtemp(prefix="sidecar-operator-tests-")


def pytest_unconfigure(config: pytest.Config) -> None:
    """After the last test of every worker: stop what the run shared (`tests.shared`)."""
    if hasattr(config, "workerinput"):
        return
    shared = Shared(Path(os.environ[ROOT_VARIABLE]))
    cluster = shared.get("cluster")
    if cluster is None:
        return
    admin = Kubectl(Path(cluster["kubeconfig"]))
    if shared.get("admission") is not None:
        admin("delete", "mutatingwebhookconfiguration", ADMISSION_CONFIGURATION, check=False)
    operator = shared.get("operator")
    if operator is not None and operator.get("pid"):
        stop_pid(operator["pid"])
        print(f"operator log: {operator['log']}")
    if cluster["started"]:
        dev("down", "--name", TEST_CLUSTER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the cluster first, the rest after (each group in file order). Side by side
    (hack/test.sh hands pytest-xdist's workers one test at a time) the cluster's tests, which
    mostly wait on rollouts and takeovers, spread over every worker, and the core's, which only
    compute, fill the cores as they end rather than leave them idle behind the last long wait."""
    items.sort(key=lambda item: "kubectl_admin" not in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def shared() -> Shared:
    return Shared(Path(os.environ[ROOT_VARIABLE]))


@pytest.fixture(autouse=True)
def turn(shared: Shared, request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on the cluster run beside each other; one marked `exclusive` runs alone."""
    if "kubectl_admin" not in request.fixturenames:
        yield  # the core's, a fake API's, or a cluster of its own
        return
    with Turns(shared).turn(request.node.get_closest_marker("exclusive") is not None):
        yield


@pytest.fixture(scope="session")
def kubectl_admin(shared: Shared) -> Kubectl:
    """Bring the local cluster up (or reuse a running one); the run stops it after only if it
    started it."""

    def up() -> dict[str, Any]:
        was_running = dev("env", "--name", TEST_CLUSTER, check=False).returncode == 0
        result = dev("up", "--name", TEST_CLUSTER, check=False)
        if result.returncode != 0:
            pytest.fail(f"`sidecar-operator dev up` failed:\n{result.stderr}", pytrace=False)
        kubeconfig = kubeconfig_from(result.stdout.strip().splitlines()[-1])
        return {"kubeconfig": str(kubeconfig), "started": not was_running}

    return Kubectl(Path(shared.once("cluster", up)["kubeconfig"]))


@pytest.fixture
def namespace(kubectl_admin: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, deleted afterwards (without waiting)."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:5]}"
    kubectl_admin.api.create_namespace(name)
    yield name
    kubectl_admin.api.delete("namespaces", name)


@pytest.fixture
def kubectl(kubectl_admin: Kubectl, namespace: str) -> Kubectl:
    """kubectl scoped to this test's namespace."""
    return kubectl_admin.in_namespace(namespace)


@pytest.fixture(scope="session")
def crd_installed(kubectl_admin: Kubectl, shared: Shared) -> Kubectl:
    """The CRDs from crds/, applied server-side as the README says."""
    shared.once("crds", lambda: _install_crds(kubectl_admin))
    return kubectl_admin


def _install_crds(kubectl_admin: Kubectl) -> dict[str, Any]:
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
    return {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`sidecar-operator run` as a process of its own, as a user starts it (forked from a
    `Zygote` that has imported the operator already); stoppable mid-test, also by a test in
    another xdist worker than the one that started it (by its pid)."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *extra_args: str,
        env: dict[str, str] | None = None,
        ports: tuple[int, int] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_args = extra_args
        self.env = env or {}
        self.metrics_port, self.liveness_port = ports or (free_port(), free_port())
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    @pid.setter
    def pid(self, value: int | None) -> None:
        self._pid = value

    def start(self) -> None:
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        argv = [
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
        ]
        self.pid = Zygote.spawn(argv, env, self.log_path)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.pid is not None:
            stop_pid(self.pid, sig)
        self.pid = None

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def health(self) -> tuple[int, dict[str, Any]]:
        """/healthz: its HTTP status and what it reports; 0 while nothing listens."""
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, {}
        except urllib.error.URLError:
            return 0, {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def writes(self, policy: str) -> float:
        """Every write this process sent for the policy, whatever came of it."""
        pattern = re.compile(r"^sidecar_operator_writes_total\{([^}]*)\} (\S+)$")
        total = 0.0
        for line in self.metrics().splitlines():
            found = pattern.match(line)
            if found and f'policy="{policy}"' in found.group(1):
                total += float(found.group(2))
        return total


@pytest.fixture(scope="session")
def webhook_certs(kubectl_admin: Kubectl, shared: Shared) -> Path:
    """The operator on the host serves admission at https://localhost (`devcluster.admission`),
    with the PKI of the cluster `kubectl_admin` brought up."""

    def lay_out() -> dict[str, Any]:
        return {"path": str(admission_on_host.certs(Cluster.named(TEST_CLUSTER)))}

    return Path(shared.once("webhook-certs", lay_out)["path"])


@pytest.fixture(scope="session")
def webhook_port(shared: Shared) -> int:
    return int(shared.once("webhook-port", lambda: {"port": free_port()})["port"])


class SessionOperator(OperatorProcess):
    """The run's operator: whichever worker started it last, its pid is the shared record's."""

    def __init__(self, shared: Shared, record: dict[str, Any]) -> None:
        super().__init__(
            Path(record["kubeconfig"]),
            Path(record["log"]),
            *record["args"],
            ports=(record["metrics_port"], record["liveness_port"]),
        )
        self.shared = shared

    @property
    def pid(self) -> int | None:
        record = self.shared.get("operator") or {}
        return record.get("pid")

    @pid.setter
    def pid(self, value: int | None) -> None:
        record = self.shared.get("operator") or {}
        self.shared.put("operator", {**record, "pid": value})


@pytest.fixture(scope="session")
def operator(
    crd_installed: Kubectl,
    webhook_certs: Path,
    webhook_port: int,
    shared: Shared,
) -> OperatorProcess:
    def start() -> dict[str, Any]:
        # Its own namespace, as an install has it: the policies' revision history is kept there.
        crd_installed("create", "namespace", OPERATOR_NAMESPACE, check=False)
        process = OperatorProcess(
            crd_installed.kubeconfig,
            Path(tempfile.mkdtemp(prefix="operator-", dir=shared.root)) / "operator.log",
            f"--peering={PEERING}",
            f"--operator-namespace={OPERATOR_NAMESPACE}",
            f"--webhook-port={webhook_port}",
            f"--webhook-certs={webhook_certs}",
        )
        process.start()
        return {
            "kubeconfig": str(process.kubeconfig),
            "log": str(process.log_path),
            "args": list(process.extra_args),
            "metrics_port": process.metrics_port,
            "liveness_port": process.liveness_port,
            "pid": process.pid,
        }

    return SessionOperator(shared, shared.once("operator", start))


def webhook_on_host(port: int, name: str, namespaces: dict[str, str]) -> dict[str, Any]:
    """`manifests/webhook.yaml` (an installer's configuration, not Kopf's) named `name`, pointed
    at an operator on the host at `port`, for the namespaces labelled `namespaces`."""
    return admission_on_host.configuration(
        Cluster.named(TEST_CLUSTER),
        REPO / "manifests" / "webhook.yaml",
        port=port,
        name=name,
        namespace_selector={"matchLabels": namespaces},
    )


@pytest.fixture(scope="session")
def admission(
    operator: OperatorProcess,
    crd_installed: Kubectl,
    webhook_port: int,
    shared: Shared,
) -> str:
    """The webhook configuration of `manifests/webhook.yaml` (an installer's, not Kopf's),
    pointed at the operator on the host and narrowed to namespaces labelled ADMITTED: the other
    tests see the controller alone. Returns the label."""

    def configure() -> dict[str, Any]:
        configuration = webhook_on_host(webhook_port, ADMISSION_CONFIGURATION, {ADMITTED: "yes"})
        crd_installed.apply(json.dumps(configuration))
        return {}

    shared.once("admission", configure)
    return ADMITTED


@pytest.fixture
def own_operator_args() -> tuple[str, ...]:
    """More `run` flags for `own_operator`: a test module overrides this fixture."""
    return ()


@pytest.fixture
def own_operator(
    operator: OperatorProcess,
    policies: Policies,
    namespace: str,
    tmp_path: Path,
    own_operator_args: tuple[str, ...],
) -> Iterator[OperatorProcess]:
    """An operator of this test's own, started: a shard named for the test's namespace, serving
    only this test's policies (`policies` labels them), so the test may stop, kill or restart
    it beside the other tests. Standalone, in the session operator's namespace (where the
    policies' histories are kept)."""
    policies.labels[SHARD_LABEL] = namespace
    process = OperatorProcess(
        operator.kubeconfig,
        tmp_path / "operator.log",
        f"--operator-namespace={OPERATOR_NAMESPACE}",
        f"--shard={namespace}",
        *own_operator_args,
    )
    process.start()
    try:
        yield process
    finally:
        if process.pid is None:
            process.start()
        policies.delete_all()
        process.stop()


@pytest.fixture
def policies(kubectl_admin: Kubectl, namespace: str) -> Iterator[Policies]:
    """Policies for this test, deleted after it."""
    made = Policies(kubectl_admin, namespace)
    yield made
    for name in made.created:
        kubectl_admin.api.delete("sidecarpolicies", name)
