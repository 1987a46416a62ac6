"""helm and promtool, built from their pinned Go modules by hack/build-tools.sh (a no-op when
cached). A test that needs one builds it or fails with the build's output: never skipped."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.kube import REPO, Kubectl

CHART = REPO / "charts" / "sidecar-operator"
RELEASE = "sidecar-operator"  # as the docs install it


@functools.cache
def _directory() -> Path:
    built = subprocess.run(
        ["bash", str(REPO / "hack" / "build-tools.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, f"hack/build-tools.sh failed:\n{built.stderr}"
    return Path(built.stdout.strip().splitlines()[-1])


def helm() -> str:
    return str(_directory() / "helm")


def promtool() -> str:
    return str(_directory() / "promtool")


def run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs it; on failure (with `check`) the assertion shows its whole output."""
    done = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    if check:
        assert done.returncode == 0, (
            f"{Path(tool).name} {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done


class Helm:
    """helm on the cluster of `admin`'s kubeconfig, in one namespace."""

    def __init__(self, admin: Kubectl, namespace: str) -> None:
        self.admin = admin
        self.namespace = namespace

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(
            helm(),
            *args,
            f"--kubeconfig={self.admin.kubeconfig}",
            f"--namespace={self.namespace}",
            check=check,
        )

    def objects(self) -> list[dict[str, Any]]:
        manifest = self("get", "manifest", RELEASE).stdout
        return [doc for doc in yaml.safe_load_all(manifest) if doc]
