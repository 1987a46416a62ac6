"""Rolling out in waves on the real control plane, driven with kubectl and the `kubectl
sidecars` plugin as a user would: a canary set first, a pause until promoted, then the rest;
the stable revision everywhere else (drift repair, new workloads, admission); an edit that
starts over; abort and undo; history; a policy from before history was kept; a GitOps loop that
neither undoes nor fights promotion and abort; a SIGKILL during a timed pause. (`make chaos`'s
waves trial, in `make test` small, adds SIGKILLs and takeovers in every step.)"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import OperatorProcess
from tests.kube import BIN, KUBECTL, Kubectl, eventually, run
from tests.scenario import Policies, condition, deployment, policy_events, ready
from tests.timeline import Timeline

pytestmark = pytest.mark.usefixtures("operator")

V1 = {"name": "shipper", "image": "fluent/fluent-bit:3.1.9"}
V2 = {**V1, "image": "fluent/fluent-bit:3.2.0"}
V3 = {**V1, "image": "fluent/fluent-bit:3.2.1"}


def rollout(kubectl: Kubectl, *args: str, check: bool = True) -> Any:
    """`kubectl sidecars rollout ...`: kubectl finds the plugin on the PATH, as after `pip
    install`."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubectl.kubeconfig),
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    return run([KUBECTL, "sidecars", "rollout", *args], env=env, check=check, timeout=240)


def images(kubectl: Kubectl) -> dict[str, str]:
    """Each Deployment's sidecar image ("" without one)."""
    found = {}
    for item in kubectl.json("deployments")["items"]:
        containers = item["spec"]["template"]["spec"]["containers"]
        found[item["metadata"]["name"]] = next(
            (c["image"] for c in containers if c["name"] == "shipper"), ""
        )
    return found


def deployments(kubectl: Kubectl, names: list[str], **labels: str) -> None:
    """Created, and running: injection into a workload with no pod running disrupts nothing, so
    it does not wait for the budget (`rollout.paced`), and on a loaded machine the policy's first
    pass can come before kwok has started the pods."""
    manifests = [
        yaml.safe_load(deployment(name, labels={"sidecar-test": "yes", **labels}, replicas=1))
        for name in names
    ]
    kubectl.apply(yaml.safe_dump_all(manifests))
    kubectl(
        "wait",
        "--for=condition=Available",
        "--timeout=180s",
        *(f"deployment/{name}" for name in names),
    )


@pytest.fixture
def spread(kubectl_admin: Kubectl, namespace: str) -> Iterator[dict[str, Kubectl]]:
    """The test's namespace (staging) and two more, all selected by one label."""
    group = f"waves-{uuid.uuid4().hex[:6]}"
    names = {"staging": namespace, "shop": f"{group}-shop", "search": f"{group}-search"}
    for role, name in names.items():
        if role != "staging":
            kubectl_admin("create", "namespace", name)
        kubectl_admin("label", "namespace", name, f"waves={group}")
    kubectl_admin("label", "namespace", namespace, "stage=staging")
    yield {role: kubectl_admin.in_namespace(name) for role, name in names.items()} | {
        "group": Kubectl(kubectl_admin.kubeconfig, group)
    }
    for role, name in names.items():
        if role != "staging":
            kubectl_admin("delete", "namespace", name, "--wait=false")


CANARY_STEPS = [
    {"name": "canary", "namespaceSelector": {"matchLabels": {"stage": "staging"}}, "pause": {}},
    {"percent": 50},
    {"percent": 100},
]


def test_a_canary_then_the_rest_once_promoted_and_the_stable_revision_everywhere_else(
    spread: dict[str, Kubectl], policies: Policies, kubectl_admin: Kubectl, admission: str
) -> None:
    staging, shop, search = spread["staging"], spread["shop"], spread["search"]
    group = spread["group"].namespace
    deployments(staging, [f"s{i}" for i in range(4)])
    deployments(shop, [f"a{i}" for i in range(8)])
    deployments(search, [f"b{i}" for i in range(8)])
    selecting = {"namespaceSelector": {"matchLabels": {"waves": group}}}
    name = policies.apply(containers=[V1], **selecting)
    first = eventually(lambda: ready(policies, name, matched=20), timeout=180, what="v1 everywhere")

    kubectl_admin("annotate", "sidecarpolicy", name, "kubernetes.io/change-cause=fluent-bit 3.2")
    policies.apply(name, containers=[V2], **selecting, updateStrategy={"steps": CANARY_STEPS})
    status = eventually(
        lambda: (
            (s := policies.status(name))
            and condition(s, "Progressing").get("reason") == "WaitingForPromotion"
            and s
        ),
        timeout=120,
        what="the canary step done, waiting for promotion",
    )
    assert status["currentStep"] == 0 and status["currentRevision"] == first["revision"]
    assert status["updateRevision"] == status["revision"] != first["revision"]
    assert status["steps"][0] == {"name": "canary", "covered": 4, "updated": 4, "ready": 4}
    assert set(images(staging).values()) == {V2["image"]}
    assert set(images(shop).values()) == set(images(search).values()) == {V1["image"]}
    waiting = rollout(staging, "status", name, "--no-watch").stdout
    assert "step 1/3 (canary) done, waiting for promotion" in waiting
    wide = kubectl_admin("get", "sidecarpolicy", name, "-o", "wide").stdout
    assert "STEP" in wide and wide.split()[-1] == "0"

    # Mid-canary: a new workload gets its group's revision, from the controller and from
    # admission, and a hand edit of a stable one is repaired to the stable content.
    deployments(shop, ["late"])
    deployments(staging, ["late"])
    kubectl_admin("label", "namespace", search.namespace or "", f"{admission}=yes")
    deployments(search, ["admitted"])
    stored = search.json("deployment", "admitted")
    assert stored["metadata"]["generation"] == 1
    assert images(search)["admitted"] == V1["image"]  # on its first pods
    eventually(lambda: images(shop)["late"] == V1["image"], what="the stable revision")
    eventually(lambda: images(staging)["late"] == V2["image"], what="the canary's revision")
    edit = [{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "evil:1"}]
    shop("patch", "deployment", "a0", "--type=json", "-p", json.dumps(edit))
    eventually(lambda: images(shop)["a0"] == V1["image"], what="repaired to the stable content")

    assert rollout(staging, "promote", name).returncode == 0
    done = rollout(staging, "status", name, "--timeout", "180")
    assert "successfully rolled out" in done.stdout
    final = policies.status(name)
    assert final["currentRevision"] == final["updateRevision"] == status["revision"]
    assert final["currentStep"] == 2 and final["matchedWorkloads"] == 23
    for kubectl in (staging, shop, search):
        assert set(images(kubectl).values()) == {V2["image"]}
    eventually(
        lambda: (
            policy_events(staging, name, "StepFinished")
            and policy_events(staging, name, "StepStarted")
        ),
        what="the steps' Events",
    )
    history = rollout(staging, "history", name).stdout
    assert "fluent-bit 3.2" in history and "stable" in history


def test_an_edit_during_a_paused_step_starts_over_and_keeps_to_the_budget(
    kubectl: Kubectl, policies: Policies, timeline: Timeline
) -> None:
    names = [f"app-{i:02d}" for i in range(12)]
    deployments(kubectl, names)
    strategy = {"maxConcurrent": 2}
    name = policies.apply(containers=[V1], updateStrategy=strategy)
    eventually(lambda: ready(policies, name, matched=12), timeout=180, what="v1 everywhere")

    steps = [{"percent": 10, "pause": {}}, {"percent": 50, "pause": {}}, {"percent": 100}]
    policies.apply(name, containers=[V2], updateStrategy={**strategy, "steps": steps})

    def waiting_at(step: int) -> dict[str, Any] | None:
        s = policies.status(name)
        reason = condition(s, "Progressing").get("reason")
        return s if reason == "WaitingForPromotion" and s.get("currentStep") == step else None

    eventually(lambda: waiting_at(0), timeout=120, what="the first step done")
    rollout(kubectl, "promote", name)
    half = eventually(lambda: waiting_at(1), timeout=180, what="half of them done")
    assert sorted(images(kubectl).values()).count(V2["image"]) == 6

    policies.apply(name, containers=[V3], updateStrategy={**strategy, "steps": steps})
    again = eventually(
        lambda: (s := waiting_at(0)) and s["revision"] != half["revision"] and s,
        timeout=180,
        what="the new revision's first step done",
    )
    eventually(
        lambda: sorted(images(kubectl).values()) == sorted([V3["image"]] * 2 + [V1["image"]] * 10),
        timeout=180,
        what="the abandoned revision's workloads back on the stable one",
    )
    assert again["currentRevision"] == half["currentRevision"]
    time.sleep(1)
    highest = timeline.max_in_flight_any_revision(name)
    assert 1 <= highest <= 2, highest


def test_an_edit_as_soon_as_a_revision_is_everywhere_keeps_it_as_the_stable_one(
    kubectl: Kubectl, policies: Policies
) -> None:
    """Edited with steps before its first rollout was complete (the pods still rolling): every
    workload carries that revision, which is therefore the stable one, and those outside the
    first step keep it. They were stripped of the sidecar, the status still naming nothing."""
    slow = []  # rolled out 20 s after their pods are ready: the first rollout is not complete
    for index in range(6):
        manifest = yaml.safe_load(deployment(f"w{index}", replicas=1))
        manifest["spec"]["minReadySeconds"] = 20
        slow.append(manifest)
    kubectl.apply(yaml.safe_dump_all(slow))
    name = policies.apply(containers=[V1])
    eventually(
        lambda: sorted(images(kubectl).values()) == [V1["image"]] * 6,
        interval=0.1,
        what="v1 written everywhere",
    )
    steps = [{"percent": 50, "pause": {}}, {"percent": 100}]
    policies.apply(name, containers=[V2], updateStrategy={"steps": steps})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        seen = images(kubectl)
        assert "" not in seen.values(), seen
        status = policies.status(name)
        if condition(status, "Progressing").get("reason") == "WaitingForPromotion":
            break
        time.sleep(0.2)
    assert sorted(images(kubectl).values()) == sorted([V2["image"]] * 3 + [V1["image"]] * 3)
    assert status["currentRevision"] != ""


@pytest.fixture
def timeline(kubectl: Kubectl, namespace: str) -> Iterator[Timeline]:
    with Timeline(str(kubectl.kubeconfig), namespace) as recorded:
        yield recorded


def test_abort_undo_and_a_history_kept_to_its_limit(kubectl: Kubectl, policies: Policies) -> None:
    deployments(kubectl, ["web", "api"])
    limited = {"revisionHistoryLimit": 1}
    name = policies.apply(containers=[V1], **limited)
    for sidecar in (V2, V3):
        eventually(lambda: ready(policies, name, matched=2), timeout=120, what="rolled out")
        policies.apply(name, containers=[sidecar], **limited)
    eventually(lambda: ready(policies, name, matched=2), timeout=120, what="v3 everywhere")
    history = rollout(kubectl, "history", name).stdout
    numbers = [line.split()[0] for line in history.splitlines()[2:]]
    assert numbers == ["2", "3"], history  # the stable one and one more: 1 was pruned

    # Abort a canary: every workload back to the stable revision, held until the spec changes.
    steps = [{"percent": 50, "pause": {}}, {"percent": 100}]
    four = {**V1, "image": "fluent/fluent-bit:4.0.0"}
    policies.apply(name, containers=[four], **limited, updateStrategy={"steps": steps})
    eventually(
        lambda: sorted(images(kubectl).values()) == sorted([four["image"], V3["image"]]),
        timeout=120,
        what="one canary",
    )
    aborted = rollout(kubectl, "abort", name)
    assert "aborted" in aborted.stdout
    eventually(lambda: set(images(kubectl).values()) == {V3["image"]}, what="back to stable")
    assert condition(policies.status(name), "Progressing")["reason"] == "Aborted"
    assert rollout(kubectl, "status", name, check=False).returncode == 1

    # Undo to a revision two back: its content goes back into the spec, and rolls out (it is
    # not the stable one, so through the steps: the half first, then promoted).
    back = rollout(kubectl, "undo", name, "--to-revision", "2")
    assert "rolled back to revision 2" in back.stdout
    spec = kubectl.json("sidecarpolicy", name)["spec"]
    assert spec["containers"][0]["image"] == V2["image"]
    eventually(
        lambda: (
            condition(policies.status(name), "Progressing").get("reason") == "WaitingForPromotion"
        ),
        what="its first step",
    )
    rollout(kubectl, "promote", name, "--full")
    eventually(lambda: set(images(kubectl).values()) == {V2["image"]}, timeout=120, what="v2")
    assert "successfully rolled out" in rollout(kubectl, "status", name).stdout


def test_a_policy_from_before_history_keeps_what_its_workloads_carry(
    kubectl: Kubectl,
    kubectl_admin: Kubectl,
    policies: Policies,
    own_operator: OperatorProcess,
) -> None:
    """Rolled out by a release that kept no history: no currentRevision, no ControllerRevision.
    An edit with steps then: the workloads the first step does not cover keep what they carry,
    never stripped, though its content is gone."""
    deployments(kubectl, ["a", "b", "c", "d"])
    deployments(kubectl, ["canary"], canary="yes")
    name = policies.apply(containers=[V1])
    eventually(lambda: ready(policies, name, matched=5), timeout=120, what="v1 everywhere")

    own_operator.stop()
    try:
        kubectl_admin("delete", "controllerrevisions", "-A", "-l", f"sidecars.dev/policy={name}")
        fields = ("currentRevision", "updateRevision", "currentStep", "stepsHash", "steps")
        status = kubectl_admin.json("sidecarpolicy", name).get("status", {})
        patch = [{"op": "remove", "path": f"/status/{f}"} for f in fields if f in status]
        kubectl_admin(
            "patch",
            "sidecarpolicy",
            name,
            "--subresource=status",
            "--type=json",
            "-p",
            json.dumps(patch),
        )
        steps = [{"selector": {"matchLabels": {"canary": "yes"}}, "pause": {}}, {"percent": 100}]
        policies.apply(name, containers=[V2], updateStrategy={"steps": steps})
    finally:
        own_operator.start()
    eventually(lambda: images(kubectl)["canary"] == V2["image"], timeout=90, what="the canary")
    time.sleep(6)  # a resync pass
    assert {n: i for n, i in images(kubectl).items() if n != "canary"} == dict.fromkeys(
        "abcd", V1["image"]
    )
    assert "currentRevision" not in policies.status(name)
    rollout(kubectl, "promote", name)
    eventually(lambda: set(images(kubectl).values()) == {V2["image"]}, timeout=120, what="v2")
    eventually(
        lambda: policies.status(name).get("currentRevision") == policies.status(name)["revision"],
        what="v2 the stable revision",
    )


def test_a_gitops_loop_on_the_spec_neither_undoes_promotion_nor_abort(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, namespace: str
) -> None:
    deployments(kubectl, [f"app-{i}" for i in range(4)])
    name = policies.apply(containers=[V1])
    eventually(lambda: ready(policies, name, matched=4), timeout=120, what="v1 everywhere")
    steps = [{"percent": 25, "pause": {}}, {"percent": 100}]
    wanted = {"image": V2}
    stop = threading.Event()

    def manifest() -> str:
        return yaml.safe_dump(
            policies.document(name, containers=[wanted["image"]], updateStrategy={"steps": steps})
        )

    def argo() -> None:  # re-applies the spec from Git, server-side, under its own manager
        while not stop.wait(0.5):
            kubectl_admin(
                "apply",
                "--server-side",
                "--field-manager=argocd",
                "--force-conflicts",
                "-f",
                "-",
                input=manifest(),
                check=False,
            )

    loop = threading.Thread(target=argo, daemon=True)
    loop.start()
    try:
        eventually(
            lambda: (
                condition(policies.status(name), "Progressing").get("reason")
                == "WaitingForPromotion"
            ),
            what="the canary waiting",
        )
        rollout(kubectl, "promote", name)
        eventually(lambda: set(images(kubectl).values()) == {V2["image"]}, timeout=120, what="v2")

        wanted["image"] = V3
        eventually(
            lambda: sorted(images(kubectl).values()) == sorted([V3["image"]] + [V2["image"]] * 3),
            timeout=120,
            what="one canary on v3",
        )
        rollout(kubectl, "abort", name)
        eventually(lambda: set(images(kubectl).values()) == {V2["image"]}, what="back on v2")
        time.sleep(4)  # the loop goes on applying v3: still aborted, still on v2
        assert condition(policies.status(name), "Progressing")["reason"] == "Aborted"
        assert set(images(kubectl).values()) == {V2["image"]}
    finally:
        stop.set()
        loop.join()


def test_a_timed_pause_keeps_its_clock_through_a_sigkill(
    kubectl: Kubectl, policies: Policies, own_operator: OperatorProcess
) -> None:
    deployments(kubectl, [f"app-{i}" for i in range(4)])
    name = policies.apply(containers=[V1])
    eventually(lambda: ready(policies, name, matched=4), timeout=120, what="v1 everywhere")
    steps = [{"percent": 25, "pause": {"duration": "30s"}}, {"percent": 100}]
    policies.apply(name, containers=[V2], updateStrategy={"steps": steps})
    paused = eventually(
        lambda: (
            (s := policies.status(name))
            and condition(s, "Progressing").get("reason") == "StepPaused"
            and s
        ),
        what="the timed pause",
    )
    done_at = paused["stepDoneTime"]
    own_operator.stop(signal.SIGKILL)
    own_operator.start()
    time.sleep(5)
    after = policies.status(name)
    assert after["stepDoneTime"] == done_at  # the clock is the status's, not the process's
    assert after["currentStep"] == 0
    eventually(lambda: set(images(kubectl).values()) == {V2["image"]}, timeout=120, what="v2")
