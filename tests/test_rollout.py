"""Cluster-wide rollout on the real control plane: the concurrency budget, halting on a broken
sidecar, pausing, surviving SIGKILL, and new Deployments not waiting.

A watcher records every Deployment event in the order the API server sends them; a Deployment
is in flight from the event that shows it carrying the policy's revision until the event that
shows it rolled out. Counting over that sequence gives the concurrency the cluster really saw.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import yaml

from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import Policies, condition, events, halted, policy_events, ready
from tests.timeline import Timeline

pytestmark = pytest.mark.usefixtures("operator")

SIDECAR = {"name": "shipper", "image": "fluent/fluent-bit:3.1.9"}
BROKEN = {"name": "shipper", "image": "fluent/fluent-bit:never-ready"}


def deployments(
    kubectl: Kubectl, count: int, *, min_ready_seconds: int = 2, progress_deadline: int = 600
) -> list[str]:
    names = [f"app-{index:02d}" for index in range(count)]
    manifests = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"sidecar-test": "yes"}},
            "spec": {
                "replicas": 1,
                "minReadySeconds": min_ready_seconds,
                "progressDeadlineSeconds": progress_deadline,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                },
            },
        }
        for name in names
    ]
    kubectl.apply(yaml.safe_dump_all(manifests))
    for name in names:
        kubectl("rollout", "status", f"deployment/{name}", "--timeout=120s")
    return names


@pytest.fixture
def timeline(kubectl: Kubectl, namespace: str) -> Iterator[Timeline]:
    with Timeline(str(kubectl.kubeconfig), namespace) as recorded:
        yield recorded


def _revision(policies: Policies, name: str) -> str:
    return str(eventually(lambda: policies.status(name).get("revision"), what="revision"))


@pytest.mark.parametrize("max_concurrent", [3, "25%"])
def test_the_budget_is_never_exceeded(
    kubectl: Kubectl, policies: Policies, timeline: Timeline, max_concurrent: int | str
) -> None:
    names = deployments(kubectl, 12)
    name = policies.apply(containers=[SIDECAR], updateStrategy={"maxConcurrent": max_concurrent})
    revision = _revision(policies, name)
    eventually(lambda: ready(policies, name, matched=12), timeout=240, what="all 12 ready")

    time.sleep(1)
    assert timeline.carrying(name, revision) == set(names)
    highest = timeline.max_in_flight(name, revision)
    print(f"maxConcurrent {max_concurrent}: at most {highest} Deployments in flight")
    assert 1 <= highest <= 3


def test_an_edit_mid_rollout_keeps_to_the_budget_across_revisions(
    kubectl: Kubectl, policies: Policies, timeline: Timeline
) -> None:
    """Deployments still rolling the previous revision count until they finish. The edit comes
    when the first three are done with it and the next three roll it: those first three would
    otherwise take the budget's slots again."""
    deployments(kubectl, 10, min_ready_seconds=4)
    name = policies.apply(containers=[SIDECAR], updateStrategy={"maxConcurrent": 3})
    first = eventually(lambda: ready(policies, name, matched=10), timeout=240, what="injected")

    second = {**SIDECAR, "image": "fluent/fluent-bit:3.2.0"}
    policies.apply(name, containers=[second], updateStrategy={"maxConcurrent": 3})

    def second_batch_rolling() -> str | None:
        revision = str(policies.status(name).get("revision"))
        under_way = revision != first["revision"]
        return revision if under_way and len(timeline.carrying(name, revision)) >= 5 else None

    revision = str(eventually(second_batch_rolling, timeout=120, what="the second batch"))
    third = {**SIDECAR, "image": "fluent/fluent-bit:3.2.1"}
    policies.apply(name, containers=[third], updateStrategy={"maxConcurrent": 3})
    final = eventually(
        lambda: (s := ready(policies, name, matched=10)) and s["revision"] != revision and s,
        timeout=300,
        what="the third revision everywhere",
    )
    time.sleep(1)
    assert len(timeline.carrying(name, final["revision"])) == 10
    highest = timeline.max_in_flight_any_revision(name)
    print(f"at most {highest} Deployments in flight across revisions")
    assert 1 <= highest <= 3


def test_a_broken_sidecar_halts_the_rollout_until_fixed(
    kubectl: Kubectl, policies: Policies, timeline: Timeline
) -> None:
    deployments(kubectl, 6, min_ready_seconds=0, progress_deadline=8)
    name = policies.apply(containers=[BROKEN], updateStrategy={"maxConcurrent": 2})
    revision = _revision(policies, name)

    status = eventually(lambda: halted(policies, name), timeout=90, what="RolloutHalted")
    assert condition(status, "Progressing")["status"] == "False"
    first_batch = timeline.carrying(name, revision)
    assert len(first_batch) == 2
    # Each misses its deadline on its own clock: the first halt may name one, a moment later both.
    eventually(
        lambda: all(
            f"/{deployment_name}" in condition(policies.status(name), "Progressing")["message"]
            for deployment_name in first_batch
        ),
        timeout=30,
        what="both failing Deployments named",
    )
    warning = eventually(
        lambda: policy_events(kubectl, name, "RolloutHalted"),
        what="Warning Event",
    )
    assert warning[0]["type"] == "Warning"
    time.sleep(5)
    assert timeline.carrying(name, revision) == first_batch  # nothing further touched

    policies.apply(name, containers=[SIDECAR], updateStrategy={"maxConcurrent": 2})
    fixed = eventually(lambda: ready(policies, name, matched=6), timeout=180, what="resumed")
    assert fixed["revision"] != revision
    assert timeline.max_in_flight(name, fixed["revision"]) <= 2


def test_pausing_mid_rollout_lets_in_flight_finish_and_touches_no_more(
    kubectl: Kubectl, policies: Policies, timeline: Timeline
) -> None:
    deployments(kubectl, 6, min_ready_seconds=4)
    name = policies.apply(containers=[SIDECAR], updateStrategy={"maxConcurrent": 1})
    revision = _revision(policies, name)
    eventually(lambda: timeline.carrying(name, revision), what="the first Deployment patched")
    policies.apply(name, containers=[SIDECAR], updateStrategy={"maxConcurrent": 1, "paused": True})
    paused_at = len(timeline.carrying(name, revision))

    status = eventually(
        lambda: (
            (s := policies.status(name))
            and s.get("updatedWorkloads", 0) >= 1
            and s.get("readyWorkloads") == s.get("updatedWorkloads")
            and condition(s, "Progressing").get("reason") == "Paused"
            and s
        ),
        timeout=60,
        what="in-flight finished, Paused",
    )
    time.sleep(6)
    touched = timeline.carrying(name, revision)
    assert len(touched) <= paused_at + 1  # at most one pass already under way
    assert policies.status(name)["updatedWorkloads"] == status["updatedWorkloads"]
    assert len(touched) < 6


def test_a_killed_operator_resumes_within_the_budget(
    kubectl: Kubectl, policies: Policies, timeline: Timeline, own_operator: OperatorProcess
) -> None:
    names = deployments(kubectl, 12, min_ready_seconds=3)
    name = policies.apply(containers=[SIDECAR], updateStrategy={"maxConcurrent": 3})
    revision = _revision(policies, name)
    eventually(
        lambda: len(timeline.carrying(name, revision)) >= 4,
        timeout=60,
        what="a few Deployments patched",
    )
    own_operator.stop(signal.SIGKILL)
    try:
        killed_at = timeline.carrying(name, revision)
        assert len(killed_at) < 12
    finally:
        own_operator.start()
    eventually(lambda: ready(policies, name, matched=12), timeout=240, what="all 12 ready")
    time.sleep(1)
    assert timeline.carrying(name, revision) == set(names)
    assert timeline.max_in_flight(name, revision) <= 3


def test_a_new_deployment_gets_the_sidecar_without_waiting_for_the_budget(
    kubectl: Kubectl, policies: Policies, timeline: Timeline
) -> None:
    deployments(kubectl, 3, min_ready_seconds=0, progress_deadline=600)
    name = policies.apply(containers=[BROKEN], updateStrategy={"maxConcurrent": 1})
    revision = _revision(policies, name)
    eventually(lambda: timeline.carrying(name, revision), what="the budget used up")
    time.sleep(2)
    assert len(timeline.carrying(name, revision)) == 1  # the broken one never finishes

    kubectl.apply(
        yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "newcomer", "labels": {"sidecar-test": "yes"}},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "newcomer"}},
                    "template": {
                        "metadata": {"labels": {"app": "newcomer"}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
                    },
                },
            }
        )
    )
    eventually(
        lambda: "newcomer" in timeline.carrying(name, revision),
        timeout=30,
        what="the new Deployment injected at once",
    )


def test_a_deployment_its_owner_paused_is_written_and_waits_without_holding_the_budget(
    kubectl: Kubectl, policies: Policies, timeline: Timeline
) -> None:
    """Under `kubectl rollout pause` a Deployment rolls out nothing: counted in flight, it held
    the one slot of `maxConcurrent: 1` for as long as it stayed paused, and nothing said why."""
    names = deployments(kubectl, 3, min_ready_seconds=1)
    kubectl("rollout", "pause", f"deployment/{names[0]}")
    name = policies.apply(containers=[SIDECAR], updateStrategy={"maxConcurrent": 1})
    revision = _revision(policies, name)

    status = eventually(
        lambda: (s := policies.status(name)).get("readyWorkloads") == 2 and s,
        timeout=120,
        what="the other two rolled out",
    )
    assert status["updatedWorkloads"] == 3
    assert timeline.carrying(name, revision) == set(names)  # the paused one written too
    message = condition(status, "Progressing")["message"]
    assert "paused by their owners" in message and f"/{names[0]}" in message
    waiting = eventually(
        lambda: events(kubectl, "Deployment", names[0], reason="SidecarsWaitForResume"),
        what="the Event saying why it waits",
    )
    assert "kubectl rollout resume" in waiting[0]["message"]

    kubectl("rollout", "resume", f"deployment/{names[0]}")
    eventually(lambda: ready(policies, name, matched=3), timeout=120, what="resumed: all ready")
