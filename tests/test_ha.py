"""Two replicas in one peering, as the manifests run them: one writes, the other stands by and
takes over when the first is killed or stops.

The session's operator is the first replica; the test starts a second beside it, kills the
first, starts it again (now the younger, so it stands by) and stops the second gracefully, so
the session's operator is the active one again at the end.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from tests.conftest import OPERATOR_NAMESPACE, PEERING, OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import FLUENT_BIT, LOG_VOLUME, Policies, deployment, has_container, ready


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            found.append((labels, float(line.rsplit(" ", 1)[1])))
    return found


def scraped(replica: OperatorProcess) -> str:
    """Its metrics, or nothing yet while it starts."""
    try:
        return replica.metrics()
    except OSError:
        return ""


def active(replica: OperatorProcess) -> bool:
    return any(value == 1 for _, value in _samples(scraped(replica), "sidecar_operator_active"))


def standing_by(replica: OperatorProcess) -> bool:
    """Up, and has seen its peers: the gauge is 0 and its log says so."""
    samples = _samples(scraped(replica), "sidecar_operator_active")
    return bool(samples) and samples[0][1] == 0 and '"Standby"' in replica.log()


def writes(replica: OperatorProcess) -> float:
    """Every request this replica sent that changes something, but for its peering record."""
    return sum(
        value
        for labels, value in _samples(replica.metrics(), "sidecar_operator_api_requests_total")
        if labels["method"] != "GET" and labels["resource"] != "clusterkopfpeerings"
    )


def _taken_over(replica: OperatorProcess, since: float) -> float:
    eventually(lambda: active(replica), timeout=60, interval=0.2, what="the standby to take over")
    return time.monotonic() - since


def test_one_replica_writes_and_the_standby_takes_over(
    kubectl: Kubectl,
    policies: Policies,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    second = OperatorProcess(
        operator.kubeconfig,
        tmp_path / "second.log",
        f"--peering={PEERING}",
        f"--operator-namespace={OPERATOR_NAMESPACE}",
    )
    eventually(lambda: active(operator), what="the session's operator active")
    second.start()
    try:
        eventually(lambda: standing_by(second), what="the second replica standing by")
        kubectl.apply(deployment("web"))
        name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
        eventually(lambda: ready(policies, name, matched=1), what="served by the first")
        time.sleep(6)  # a resync pass or more
        assert active(operator) and not active(second)
        assert writes(second) == 0 and writes(operator) > 0

        killed = time.monotonic()
        operator.stop(signal.SIGKILL)
        kubectl.apply(deployment("while-killed"))
        took = _taken_over(second, killed)
        eventually(lambda: has_container(kubectl, "while-killed", "fluent-bit"), what="served")
        print(f"takeover after SIGKILL: {took:.1f}s")

        operator.start()  # now the younger: it stands by
        eventually(lambda: standing_by(operator), what="the restarted replica standing by")
        assert active(second)
        kubectl.apply(deployment("after-restart"))
        eventually(lambda: has_container(kubectl, "after-restart", "fluent-bit"), what="served")
        assert writes(operator) == 0

        stopped = time.monotonic()
        second.stop(signal.SIGTERM)
        took = _taken_over(operator, stopped)
        print(f"takeover after a graceful stop: {took:.1f}s")
        kubectl.apply(deployment("after-stop"))
        eventually(lambda: has_container(kubectl, "after-stop", "fluent-bit"), what="served")
    finally:
        second.stop()
        if operator.process is None:
            operator.start()
        print(f"second replica's log: {second.log_path}")
