"""Driving the local cluster the way a user does: the `sidecar-operator` and `kubectl` commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tests import rest

T = TypeVar("T")

BIN = Path(sys.executable).parent
SIDECAR_OPERATOR = str(BIN / "sidecar-operator")
KUBECTL = str(BIN / "kubectl")
REPO = Path(__file__).resolve().parents[1]
CRD_FILE = REPO / "crds" / "sidecarpolicies.sidecars.dev.yaml"
PEERING_CRD_FILE = REPO / "crds" / "clusterkopfpeerings.kopf.dev.yaml"
# kubectl runs about 2900 times in a `make test` and was a third of its CPU (327 of about 920 s,
# 0.11 s each). Short-lived, it gains nothing from collecting often or on a second core: `get
# crd -o json` took 0.140 s of CPU at Go's defaults, 0.106 s with these (2 cores, 6 runs each).
KUBECTL_GO = {"GOGC": "400", "GOMAXPROCS": "1"}


def run(
    argv: list[str],
    *,
    input: str | None = None,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, input=input, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def dev(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run([SIDECAR_OPERATOR, "dev", *args], check=check, timeout=timeout)


def kubeconfig_from(export_line: str) -> Path:
    prefix = "export KUBECONFIG="
    assert export_line.startswith(prefix), export_line
    return Path(export_line[len(prefix) :])


@dataclass(frozen=True)
class Kubectl:
    """kubectl bound to one kubeconfig (and, optionally, one namespace)."""

    kubeconfig: Path
    namespace: str | None = None

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [KUBECTL, f"--kubeconfig={self.kubeconfig}"]
        if self.namespace:
            argv.append(f"--namespace={self.namespace}")
        env = {**os.environ, **KUBECTL_GO}
        return run([*argv, *args], input=input, check=check, env=env, timeout=timeout)

    def json(self, *args: str) -> Any:
        """What `kubectl get -o json ARGS` prints, read over a kept connection (`tests.rest`)."""
        try:
            return self.api.get(args, self.namespace)
        except rest.Unsupported:
            return json.loads(self("get", "-o", "json", *args).stdout)

    def find(self, *args: str) -> dict[str, Any] | None:
        """As `json`, but None where `kubectl get` would fail: not found, or not answered."""
        try:
            found: dict[str, Any] = self.json(*args)
        except AssertionError:
            return None
        return found

    @property
    def api(self) -> rest.Rest:
        """The API server itself, for what a user would not type: fixtures and reads."""
        return rest.client(self.kubeconfig)

    def apply(
        self, manifest: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self("apply", "-f", "-", *args, input=manifest, check=check)

    def in_namespace(self, namespace: str) -> Kubectl:
        return Kubectl(self.kubeconfig, namespace)


def eventually(
    check: Callable[[], T], *, timeout: float = 60, interval: float = 0.5, what: str = "condition"
) -> T:
    """Poll until `check` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def service_account_kubeconfig(admin: Kubectl, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig at `path` with a token of that ServiceAccount: the operator run on the
    host with exactly the RBAC an install gives it."""
    token = admin("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    config = json.loads(admin("config", "view", "--raw", "-o", "json").stdout)
    cluster = config["clusters"][0]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {"name": "sa", "context": {"cluster": cluster["name"], "user": account}}
                ],
                "current-context": "sa",
            }
        )
    )
    return path


def refused(log: str) -> list[str]:
    """The log's lines reporting a 403: the number on its own, not inside another ("…T04:46:03.
    184033Z", a replica's pid as in "vm/25403", a resourceVersion)."""
    return [
        line for line in log.splitlines() if _STATUS_403.search(line) or "forbidden" in line.lower()
    ]


_STATUS_403 = re.compile(r"(?<![\d.])403(?![\d.])")
