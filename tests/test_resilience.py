"""Serving every policy however many there are, and riding out an API server outage."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_CLUSTER, OperatorProcess
from tests.kube import SIDECAR_OPERATOR, Kubectl, eventually
from tests.scenario import (
    FLUENT_BIT,
    LOG_VOLUME,
    Policies,
    deployment,
    has_container,
    names,
    pod_spec,
    ready,
)

pytestmark = pytest.mark.usefixtures("operator")

POLICIES = 40
DEPLOYMENTS = 4


def test_every_policy_is_served_however_many_there_are(
    kubectl: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    """Each policy's worker held one of Kopf's threads for good: on two cores six were served.
    Every worker is a coroutine on the one loop now: no thread per policy."""
    for index in range(DEPLOYMENTS):
        kubectl.apply(deployment(f"web-{index}"))
    specs = {
        f"many-{kubectl.namespace}-{index:02d}": {
            "containers": [{"name": f"sidecar-{index:02d}", "image": "busybox:1.36"}],
            "updateStrategy": {"maxConcurrent": "100%"},
        }
        for index in range(POLICIES)
    }
    policies.apply_all(specs)

    def unserved() -> list[str]:
        return [name for name in specs if not ready(policies, name, matched=DEPLOYMENTS)]

    eventually(lambda: not unserved(), timeout=240, what=f"all {POLICIES} policies Ready")
    expected = ["app"] + [f"sidecar-{index:02d}" for index in range(POLICIES)]
    for index in range(DEPLOYMENTS):
        assert sorted(names(pod_spec(kubectl, f"web-{index}"), "containers")) == sorted(expected)
    assert operator.pid is not None
    threads = len(list(Path(f"/proc/{operator.pid}/task").iterdir()))
    assert threads < 10 < POLICIES, f"{threads} threads serve {POLICIES} policies"


@pytest.mark.exclusive
def test_an_api_server_outage_is_ridden_out_without_a_restart(
    kubectl: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    kubectl.apply(deployment("before"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")
    log_before = len(operator.log())

    outage = subprocess.Popen(
        [
            SIDECAR_OPERATOR,
            "dev",
            "restart",
            "kube-apiserver",
            "--name",
            TEST_CLUSTER,
            "--down-for",
            "15",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Meanwhile /healthz answers, and says what is going on.
        code, report = eventually(
            lambda: (
                (h := operator.health())
                and "deployments: reconnecting" in str(h[1].get("workloads", ""))
                and h
            ),
            timeout=30,
            what="/healthz reporting the lost watch",
        )
        # Healthy all the same; whether it still says active depends on how long ago it last
        # confirmed its peering record: a replica that cannot, writes nothing.
        assert code == 200 and report["role"] in ("active", "standby")
    finally:
        output, _ = outage.communicate(timeout=300)
    assert outage.returncode == 0, output
    back = time.monotonic()
    eventually(lambda: operator.health()[1].get("role") == "active", what="active again")

    kubectl.apply(deployment("after"))
    eventually(lambda: has_container(kubectl, "after", "fluent-bit"), timeout=60, what="injection")
    print(f"a new Deployment injected {time.monotonic() - back:.1f}s after the outage")
    eventually(
        lambda: "deployments: watching" in str(operator.health()[1].get("workloads")),
        what="watching",
    )
    # The API server's watch cache takes a while to fill after a restart; events wait for it.
    status = eventually(
        lambda: ready(policies, name, matched=2), timeout=180, what="status caught up"
    )
    assert status["matchedWorkloads"] == 2
    since = operator.log()[log_before:]
    assert "failed with an exception" not in since, since[-3000:]  # no worker crashed
