"""The benchmark's own local cluster, named "bench": every scenario gets a fresh one (torn down
first, in case a run was interrupted, and at the end), so nothing one left behind is counted in
the next."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.kube import Api
from sidecar_operator import devcluster
from sidecar_operator.devcluster import binaries

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "crds" / "sidecarpolicies.sidecars.dev.yaml"
KUBECTL = Path(sys.executable).with_name("kubectl")
NAME = "bench"
POLICIES = "/apis/sidecars.dev/v1alpha1/sidecarpolicies"


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")


async def established(api: Api) -> None:
    """Not `kubectl wait`: it fails outright while a new CRD has no conditions yet."""
    for _ in range(300):
        crd = await api.request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sidecarpolicies.sidecars.dev",
        )
        conditions = crd.get("status", {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the SidecarPolicy CRD was not Established within 60s")


@contextlib.asynccontextmanager
async def fresh() -> AsyncIterator[tuple[devcluster.Cluster, Api]]:
    """The cluster with the CRD established, and a client for it."""
    cluster = devcluster.Cluster.named(NAME)
    devcluster.down(cluster)
    devcluster.up(cluster)
    try:
        kubectl(cluster.kubeconfig, "apply", "--server-side", "-f", str(CRD_FILE))
        async with Api(cluster) as api:
            await established(api)
            yield cluster, api
    finally:
        devcluster.down(cluster)


async def policies_gone(api: Api, timeout: float) -> None:
    """Until no SidecarPolicy is left: the finalizer's release is a removal's last write, and on
    a small cluster the Deployments settle before it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (await api.request("GET", POLICIES))["items"]:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"SidecarPolicies still exist after {timeout:.0f}s")


def operator_log(name: str) -> Path:
    """Outside the repository, and emptied: a run's log holds that run only."""
    log = binaries.cache_root() / "bench" / f"operator-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    return log
