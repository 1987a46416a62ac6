"""A real Kubernetes control plane on 127.0.0.1, for development and tests.

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as background
processes, each with a pid file and a log file in the cluster's directory, and creates fake Nodes
that kwok keeps Ready (Pods scheduled onto them turn Running and Ready without a container
runtime). `down` stops exactly the processes named by those pid files and removes the directory.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar_operator.devcluster import binaries, pki, stages
from sidecar_operator.devcluster.cluster import START_ORDER, Cluster, ClusterError, alive, say

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.64.0.0/12"
NODE_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


# -- talking to the apiserver without a client library --------------------------------------


@dataclass(frozen=True)
class _Api:
    base_url: str
    context: ssl.SSLContext

    @classmethod
    def for_cluster(cls, cluster: Cluster, port: int) -> _Api:
        context = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
        context.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
        return cls(f"https://127.0.0.1:{port}", context)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            raw, status = error.read(), error.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")


def _wait(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float,
    watch: tuple[Cluster, str, subprocess.Popen[bytes]] | None = None,
) -> None:
    """Poll `check` until it holds; fail at once if the watched process dies."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, urllib.error.URLError, ssl.SSLError):
            if check():
                return
        if watch is not None:
            cluster, component, process = watch
            if process.poll() is not None:
                raise cluster.fail(component, f"exited with code {process.returncode}")
        if time.monotonic() > deadline:
            if watch is not None:
                raise watch[0].fail(watch[1], f"was not ready ({what}) after {timeout:.0f}s")
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


# -- up / down / env -----------------------------------------------------------------------


def _write_kubeconfig(cluster: Cluster, port: int) -> None:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster.name,
                "cluster": {
                    "server": f"https://127.0.0.1:{port}",
                    "certificate-authority-data": b64(cluster.pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64(cluster.pki.admin_cert),
                    "client-key-data": b64(cluster.pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": cluster.name, "context": {"cluster": cluster.name, "user": "admin"}}],
        "current-context": cluster.name,
    }
    cluster.kubeconfig.write_text(json.dumps(config, indent=2))
    cluster.kubeconfig.chmod(0o600)


def _argv(cluster: Cluster, bin_dir: Path, ports: dict[str, int]) -> dict[str, list[str]]:
    keys = cluster.pki
    kubeconfig = str(cluster.kubeconfig)
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    return {
        "etcd": [
            str(bin_dir / "etcd"),
            "--name=dev",
            f"--data-dir={cluster.directory / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=dev={peer_url}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The kubernetes Service cannot point at loopback; nothing in-cluster needs it.
            "--endpoint-reconciler-type=none",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={cluster.directory / 'apiserver-certs'}",
            f"--tls-cert-file={keys.serving_cert}",
            f"--tls-private-key-file={keys.serving_key}",
            f"--client-ca-file={keys.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={keys.service_account_pub}",
            f"--service-account-signing-key-file={keys.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
        ],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            "--leader-elect=false",
            f"--service-account-private-key-file={keys.service_account_key}",
            f"--root-ca-file={keys.ca_cert}",
            # kwok keeps no node Leases: without a long grace the node-lifecycle controller
            # marks every Node, and so every Pod, not ready within a minute.
            "--node-monitor-grace-period=8760h",
            "--node-startup-grace-period=8760h",
            # Client-side throttling, not the API server, would otherwise pace rollouts of
            # hundreds of Deployments (200 qps is ~30 Deployments rolled per second).
            "--kube-api-qps=2000",
            "--kube-api-burst=4000",
            "--concurrent-deployment-syncs=25",
            "--concurrent-replicaset-syncs=25",
            # Beta and on since 1.36: a ReplicaSet whose informer has not yet seen the
            # controller's own last write fails its sync and goes back on the queue through the
            # shared rate limiter (10 a second). Under a rollout of 1000 Deployments the
            # informers lag: 1896 syncs failed so in one bench round, and through one phase a
            # third to a half of the CPU sat idle while Pods waited. Expectations, as before
            # 1.36, keep the controller from acting twice on what it has not seen yet.
            "--feature-gates=StaleControllerConsistencyReplicaSet=false",
        ],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
            "--kube-api-qps=1000",
            "--kube-api-burst=2000",
        ],
        "kwok": [
            str(bin_dir / "kwok"),
            f"--kubeconfig={kubeconfig}",
            f"--config={cluster.stages_file}",
            "--manage-all-nodes=true",
            f"--cidr={POD_CIDR}",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ],
    }


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": dict(NODE_ANNOTATION),
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
    }


def _schedulable_nodes(api: _Api) -> int:
    """Nodes that are Ready and no longer carry the not-ready taint the apiserver adds at creation
    (the node-lifecycle controller lifts it once kwok's heartbeat arrives)."""
    status, body = api.request("GET", "/api/v1/nodes")
    if status != 200:
        return 0

    def schedulable(node: dict[str, Any]) -> bool:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        tainted = any(
            t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", [])
        )
        return ready and not tainted

    return sum(1 for node in body.get("items", []) if schedulable(node))


def is_up(cluster: Cluster) -> bool:
    """Every component runs and the apiserver answers ready."""
    if len(cluster.running_pids()) != len(START_ORDER) or not cluster.state_file.exists():
        return False
    port = json.loads(cluster.state_file.read_text())["ports"]["apiserver"]
    try:
        status, _ = _Api.for_cluster(cluster, port).request("GET", "/readyz")
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
    return status == 200


def up(cluster: Cluster, *, nodes: int = 3, timeout: float = 180) -> bool:
    """Bring the cluster up, or reuse it when it already runs. Returns True if it was started."""
    with cluster.locked():
        if is_up(cluster):
            say(f"cluster {cluster.name!r} is already running in {cluster.directory}; reusing it")
            return False
        bin_dir = binaries.ensure()
        if cluster.running_pids():
            say(f"cluster {cluster.name!r} is only partly running; restarting it")
        _remove(cluster)
        cluster.directory.mkdir(parents=True)
        try:
            _start(cluster, bin_dir, nodes=nodes, timeout=timeout)
        except BaseException:
            # Leave no half-started cluster behind; the logs stay for diagnosis.
            cluster.stop_processes()
            raise
        return True


def _start(cluster: Cluster, bin_dir: Path, *, nodes: int, timeout: float) -> None:
    started = time.monotonic()

    ports = dict(
        zip(
            ("etcd", "etcd_peer", "apiserver", "controller_manager", "scheduler", "kwok"),
            _free_ports(6),
            strict=True,
        )
    )
    pki.generate(cluster.pki.directory, service_ip=SERVICE_IP)
    _write_kubeconfig(cluster, ports["apiserver"])
    stages.write(binaries.kwok_stages(bin_dir), cluster.stages_file)
    cluster.state_file.write_text(json.dumps({"ports": ports, "bin_dir": str(bin_dir)}))
    argv = _argv(cluster, bin_dir, ports)
    api = _Api.for_cluster(cluster, ports["apiserver"])

    def etcd_healthy() -> bool:
        url = f"http://127.0.0.1:{ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")

    readiness: dict[str, Callable[[], bool]] = {
        "etcd": etcd_healthy,
        "kube-apiserver": lambda: api.request("GET", "/readyz")[0] == 200,
    }
    for component in START_ORDER:
        process = cluster.start(component, argv[component])
        check = readiness.get(component)
        if check is not None:
            _wait(
                f"{component} healthy", check, timeout=timeout, watch=(cluster, component, process)
            )
        say(f"started {component} (pid {process.pid}, log {cluster.log_file(component)})")

    for index in range(nodes):
        status, body = api.request("POST", "/api/v1/nodes", _node(f"kwok-node-{index}"))
        if status not in (201, 409):
            raise ClusterError(f"creating Node kwok-node-{index} failed ({status}): {body}")
    _wait(f"{nodes} Ready Nodes", lambda: _schedulable_nodes(api) >= nodes, timeout=timeout)
    _wait(
        "ServiceAccount default/default",
        lambda: api.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        timeout=timeout,
    )
    stopped = [name for name in START_ORDER if name not in cluster.running_pids()]
    if stopped:
        raise cluster.fail(stopped[0], "stopped while the cluster came up")
    say(f"cluster {cluster.name!r} up in {time.monotonic() - started:.1f}s with {nodes} kwok Nodes")


def restart(cluster: Cluster, component: str, *, down_for: float, timeout: float = 180) -> None:
    """Stop one component, keep it down `down_for` seconds, start it again with the same
    arguments: an outage of the API server or etcd, for the operator to ride out."""
    if component not in START_ORDER:
        raise ClusterError(f"unknown component {component!r}; one of {', '.join(START_ORDER)}")
    with cluster.locked():
        if not is_up(cluster):
            raise ClusterError(f"cluster {cluster.name!r} is not running")
        state = json.loads(cluster.state_file.read_text())
        ports, bin_dir = state["ports"], Path(state["bin_dir"])
        # Killed, not asked: the API server drains its watches for a minute when asked.
        pid = cluster.running_pids()[component]
        os.kill(pid, signal.SIGKILL)
        _wait(f"{component} stopped", lambda: not alive(pid), timeout=timeout)
        say(f"killed {component}; starting it again in {down_for:g}s")
        time.sleep(down_for)
        process = cluster.start(component, _argv(cluster, bin_dir, ports)[component])
        api = _Api.for_cluster(cluster, ports["apiserver"])
        _wait(
            "kube-apiserver ready",
            lambda: api.request("GET", "/readyz")[0] == 200,
            timeout=timeout,
            watch=(cluster, component, process),
        )
        say(f"started {component} again (pid {process.pid})")


def _remove(cluster: Cluster) -> None:
    cluster.stop_processes()
    shutil.rmtree(cluster.directory, ignore_errors=True)


def down(cluster: Cluster) -> None:
    """Stop every process `up` started (by pid file) and delete the cluster's data."""
    with cluster.locked():
        running = cluster.running_pids()
        _remove(cluster)
        say(f"cluster {cluster.name!r} down; stopped {len(running)} processes")
