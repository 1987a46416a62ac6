"""Two replicas in one peering, as the manifests run them: one writes, the other stands by and
takes over when the first is killed, stops, or is cut off from the API server; and the standby,
which answers admission too, decides from current policies.

Each test runs replicas of its own: a shard named for its namespace (serving only its policies,
which `policies` labels), in a peering of its own, beside the other tests and the session's
operator.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar_operator.api.names import SHARD_LABEL
from tests.conftest import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    free_port,
    webhook_on_host,
)
from tests.kube import Kubectl, eventually
from tests.proxy import Relay
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
    """Every request this replica sent that changes something, but for its peering record
    (reads and watches change nothing: a standby watches as the active replica does)."""
    return sum(
        value
        for labels, value in _samples(replica.metrics(), "sidecar_operator_api_requests_total")
        if labels["method"] not in ("GET", "WATCH") and labels["resource"] != "clusterkopfpeerings"
    )


class Shard:
    """The test's own replicas: one shard, one peering, both named for its namespace."""

    def __init__(self, kubectl: Kubectl, namespace: str, tmp_path: Path) -> None:
        self.kubectl = kubectl
        self.name = namespace
        self.peering = f"ha-{namespace}"
        self.tmp_path = tmp_path

    def replica(
        self, name: str, *args: str, kubeconfig: Path | None = None, pod_name: bool = False
    ) -> OperatorProcess:
        """Named in the peering by host and process, or as in a pod by `name`."""
        return OperatorProcess(
            kubeconfig or self.kubectl.kubeconfig,
            self.tmp_path / f"{name}.log",
            f"--peering={self.peering}",
            f"--operator-namespace={OPERATOR_NAMESPACE}",
            f"--shard={self.name}",
            *args,
            env={"POD_NAME": name} if pod_name else None,
        )


@pytest.fixture
def shard(
    kubectl_admin: Kubectl, policies: Policies, namespace: str, tmp_path: Path
) -> Iterator[Shard]:
    """The test deletes its policies while a replica runs (their finalizers are its shard's)."""
    policies.labels[SHARD_LABEL] = namespace
    made = Shard(kubectl_admin, namespace, tmp_path)
    yield made
    kubectl_admin("delete", "clusterkopfpeering", made.peering, "--ignore-not-found")


def _taken_over(replica: OperatorProcess, since: float) -> float:
    eventually(lambda: active(replica), timeout=60, interval=0.2, what="the standby to take over")
    return time.monotonic() - since


def test_one_replica_writes_and_the_standby_takes_over(
    kubectl: Kubectl, policies: Policies, shard: Shard
) -> None:
    """The first replica is active; the test kills it, starts it again (now the younger, so it
    stands by) and stops the second gracefully."""
    operator, second = shard.replica("first"), shard.replica("second")
    operator.start()
    eventually(lambda: active(operator), what="the first replica active")
    second.start()
    try:
        eventually(lambda: standing_by(second), what="the second replica standing by")
        kubectl.apply(deployment("web"))
        name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
        eventually(lambda: ready(policies, name, matched=1), what="served by the first")
        time.sleep(6)  # a resync pass or more
        assert active(operator) and not active(second)
        assert writes(second) == 0 and writes(operator) > 0
        # Only the active replica speaks of the policy: sums over both count it once.
        for family in ("sidecar_operator_policy_workloads", "sidecar_operator_policy_condition"):
            assert [v for s, v in _samples(operator.metrics(), family) if s["policy"] == name]
            assert not [v for s, v in _samples(second.metrics(), family) if s["policy"] == name]

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
        if operator.pid is None and second.pid is None:
            operator.start()
        policies.delete_all()
        second.stop()
        operator.stop()
        print(f"replicas' logs: {operator.log_path}, {second.log_path}")


def test_the_standby_admits_from_current_policies(
    kubectl: Kubectl,
    kubectl_admin: Kubectl,
    policies: Policies,
    shard: Shard,
    namespace: str,
    webhook_certs: Path,
) -> None:
    """Every replica answers admission (the Service spreads calls over them), but a standby's
    Kopf watches are paused: it admitted from an empty or old cache, and half of all new
    workloads rolled out twice, their first pods without their sidecars."""
    port = free_port()
    operator = shard.replica("active")
    standby = shard.replica("standby", f"--webhook-port={port}", f"--webhook-certs={webhook_certs}")
    configuration = webhook_on_host(
        port, f"standby-{namespace}", {"kubernetes.io/metadata.name": namespace}
    )
    operator.start()
    eventually(lambda: active(operator), what="the first replica active")
    standby.start()
    try:
        eventually(lambda: standing_by(standby), what="the second replica standing by")
        kubectl_admin.apply(json.dumps(configuration))
        name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
        revision = eventually(lambda: policies.status(name).get("revision"), what="revision")
        for created, image in (("first", FLUENT_BIT["image"]), ("second", "fluent/fluent-bit:3.2")):
            if created == "second":  # an edit, and a workload created right after it
                policies.apply(
                    name, containers=[{**FLUENT_BIT, "image": image}], volumes=[LOG_VOLUME]
                )
                eventually(
                    lambda: policies.status(name).get("revision") not in (None, revision),
                    what="the edit seen",
                )
            kubectl.apply(deployment(created))
            stored = kubectl.json("deployment", created)
            assert stored["metadata"]["generation"] == 1
            containers = stored["spec"]["template"]["spec"]["containers"]
            sidecar = [c for c in containers if c["name"] == "fluent-bit"]
            assert sidecar and sidecar[0]["image"] == image, f"{created}: admitted {sidecar}"
            time.sleep(3)  # the active replica adopts: ownership only, no second ReplicaSet
            replica_sets = [
                r["metadata"]["name"]
                for r in kubectl.json("replicasets")["items"]
                if r["metadata"]["ownerReferences"][0]["name"] == created
            ]
            assert len(replica_sets) == 1, replica_sets
        assert writes(standby) == 0
    finally:
        kubectl_admin(
            "delete", "mutatingwebhookconfiguration", f"standby-{namespace}", "--ignore-not-found"
        )
        policies.delete_all()
        standby.stop()
        operator.stop()
        print(f"replicas' logs: {operator.log_path}, {standby.log_path}")


def test_an_active_replica_cut_off_from_the_api_server_stops_writing_before_the_takeover(
    kubectl_admin: Kubectl, shard: Shard, tmp_path: Path
) -> None:
    """A replica that could not read the peering kept its last decision: a partitioned active
    replica and the one taking over could both write. (The shard has no policy, so neither
    writes anything but its record.)"""
    config = json.loads(kubectl_admin.kubeconfig.read_text())
    server = config["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    with Relay((host, int(port))) as relay:
        config["clusters"][0]["cluster"]["server"] = f"https://{host}:{relay.port}"
        relayed = tmp_path / "relayed.kubeconfig"
        relayed.write_text(json.dumps(config))
        first = shard.replica("first", kubeconfig=relayed, pod_name=True)
        second = shard.replica("second", pod_name=True)
        first.start()
        try:
            eventually(lambda: active(first), what="the first replica active")
            second.start()
            eventually(lambda: standing_by(second), what="the second standing by")
            relay.cut.set()
            cut = time.monotonic()
            stopped = took_over = 0.0
            while time.monotonic() - cut < 40 and not (stopped and took_over):
                if not stopped and not active(first):
                    stopped = time.monotonic() - cut
                if not took_over and active(second):
                    took_over = time.monotonic() - cut
                time.sleep(0.1)
            print(
                f"cut off: stopped writing after {stopped:.1f}s, taken over after {took_over:.1f}s"
            )
            assert stopped and took_over, (stopped, took_over)
            assert stopped < took_over <= 20
        finally:
            first.stop(signal.SIGKILL)
            second.stop()
            print(f"logs: {first.log_path}, {second.log_path}")
