"""One named local cluster: its directory, the files it keeps there (certificates, kubeconfig,
pid and log files) and the processes it started. `lifecycle` brings it up and down."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sidecar_operator.devcluster import binaries, pki

START_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Go's collector took a sixth of the API server's CPU under a rollout of 5000 Deployments; a
# throwaway cluster on a developer's machine can spend memory instead. An exported GOGC wins.
GOGC = "400"


class ClusterError(RuntimeError):
    """Bringing the cluster up failed; the message names the component and its log."""


def say(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the `export KUBECONFIG=` line."""
    print(f"dev: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Cluster:
    """One named local cluster and the files it keeps in its directory."""

    name: str
    directory: Path

    @classmethod
    def named(cls, name: str) -> Cluster:
        return cls(name, binaries.cache_root() / "clusters" / name)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def stages_file(self) -> Path:
        return self.directory / "kwok-stages.yaml"

    @property
    def state_file(self) -> Path:
        return self.directory / "cluster.json"

    @property
    def pki(self) -> pki.Pki:
        return pki.Pki(self.directory / "pki")

    def pid_file(self, component: str) -> Path:
        return self.directory / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.directory / f"{component}.log"

    def export_line(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig.resolve()}"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise `up` and `down` of one cluster across processes (parallel test workers)."""
        lock_path = self.directory.parent / f"{self.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- processes -------------------------------------------------------------------------

    def running_pids(self) -> dict[str, int]:
        """The components whose pid file names a live process that is still ours."""
        found = {}
        for component in START_ORDER:
            pid = _read_pid(self.pid_file(component))
            if pid is not None and _is_ours(pid, self.directory):
                found[component] = pid
        return found

    def stop_processes(self) -> None:
        """Killed, not asked: the cluster's data is deleted next, and asked (SIGTERM) etcd and
        the API server took the whole 15 s grace to go, each `dev down` and every test run's
        end."""
        pids = self.running_pids()
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(pid) for pid in pids.values()):
            time.sleep(0.05)
        for component in START_ORDER:
            self.pid_file(component).unlink(missing_ok=True)

    def start(self, component: str, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start one component detached from us, logging to its own file."""
        with self.log_file(component).open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env={"GOGC": GOGC, **os.environ},
                start_new_session=True,
            )
        self.pid_file(component).write_text(f"{process.pid}\n")
        return process

    def fail(self, component: str, problem: str) -> ClusterError:
        tail = _tail(self.log_file(component), 40)
        return ClusterError(
            f"{component} {problem}; last lines of {self.log_file(component)}:\n{tail}"
        )


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_ours(pid: int, directory: Path) -> bool:
    """A pid file can outlive its process; only a process started in the cluster's directory
    counts, so a recycled pid is never signalled."""
    if not alive(pid):
        return False
    try:
        return Path(f"/proc/{pid}/cwd").resolve() == directory.resolve()
    except OSError:
        return False


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
