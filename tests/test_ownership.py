"""What is the policy's and what is not, on the real control plane: an app's own container with a
sidecar's name is the app's (even with the policy's annotation copied beside it); a removal the
API server would refuse is held where the user sees it, until the user resolves it; what a policy
deleted without its finalizer left behind is removed when the operator starts, whatever kinds
other policies target."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import (
    FLUENT_BIT,
    GIT_SYNC,
    LOG_VOLUME,
    Policies,
    condition,
    deployment,
    events,
    names,
    pod_spec,
    policy_events,
    ready,
)

pytestmark = pytest.mark.usefixtures("operator")


SHIPPER = {"name": "shipper", "image": "fluent/fluent-bit:3.1.9"}
APP_WITH_OWN_SHIPPER = {
    "containers": [
        {"name": "app", "image": "nginx:1.27"},
        {"name": "shipper", "image": "mine:1"},
    ]
}


def test_an_app_container_named_like_the_sidecar_stays_the_app_s_despite_a_copied_annotation(
    kubectl: Kubectl, policies: Policies
) -> None:
    """Taken for what admission had added, it was forced to the policy's image, reported as
    Ready, and its removal was refused for good, holding the policy's deletion."""
    name = policies.apply(containers=[SHIPPER])
    revision = eventually(lambda: policies.status(name).get("revision"), what="a revision")
    copied = {f"policy.sidecars.dev/{name}": revision}
    kubectl.apply(deployment("web", pod=APP_WITH_OWN_SHIPPER, annotations=copied))
    status = eventually(
        lambda: (s := policies.status(name)).get("conflicts") == 1 and s, what="a conflict"
    )
    assert (
        "container shipper is already defined by the Deployment"
        in (condition(status, "Degraded")["message"])
    )
    assert status["readyWorkloads"] == 0
    time.sleep(6)  # a resync pass: still the app's
    containers = pod_spec(kubectl, "web")["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        (c["name"], c["image"]) for c in APP_WITH_OWN_SHIPPER["containers"]
    ]
    warnings = events(kubectl, "Deployment", "web", reason="SidecarConflict")
    assert warnings

    policies.delete(name)  # at once: there is nothing of the policy's to remove
    containers = pod_spec(kubectl, "web")["containers"]
    assert [c["image"] for c in containers] == ["nginx:1.27", "mine:1"]


def removals_blocked(operator: OperatorProcess, policy: str) -> float:
    found = re.search(
        rf'^sidecar_operator_removals_blocked_total\{{policy="{policy}"\}} (\S+)$',
        operator.metrics(),
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


def test_a_removal_the_api_server_would_refuse_is_held_where_the_user_sees_it(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    """The app's GitOps manifest also lists the sidecar, to set `stdin` on it: releasing the
    policy's fields would leave that container, declared by the GitOps manager, with stdin and no
    image. The API server refuses that for ever; the deletion waits, saying so, until the user
    acts."""
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=1), what="injected")
    manifest = yaml.safe_load(deployment("web"))
    pod = manifest["spec"]["template"]["spec"]
    pod["containers"].append({"name": "fluent-bit", "stdin": True})
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
    )

    kubectl_admin("delete", "sidecarpolicy", name, "--wait=false")
    status = eventually(
        lambda: (
            condition(policies.status(name), "Degraded").get("reason") == "RemovalBlocked"
            and policies.status(name)
        ),
        what="the blocked removal on the policy",
    )
    message = condition(status, "Degraded")["message"]
    assert "gitops also declares container fluent-bit (with stdin) but not its image" in message
    assert condition(status, "Ready")["reason"] == "Terminating"
    # Events are posted after the status, aggregated (`reporting.Reporter.flush`).
    eventually(lambda: policy_events(kubectl, name, "RemovalBlocked"), what="the policy's Event")
    blocked = eventually(
        lambda: events(kubectl, "Deployment", "web", reason="SidecarRemovalBlocked"),
        what="the Deployment's Event",
    )
    assert "that manager's manifest" in blocked[0]["message"]
    assert removals_blocked(operator, name) >= 1
    assert "fluent-bit" in names(pod_spec(kubectl, "web"), "containers")  # nothing half-removed

    # What docs/operating.md says to do: take it out of that manager's manifest; the policy
    # then lets go of the rest.
    pod["containers"].pop()
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
    )
    eventually(
        lambda: kubectl_admin.find("sidecarpolicy", name) is None,
        what="the deletion to complete",
    )
    pod = pod_spec(kubectl, "web")
    assert names(pod, "containers") == ["app"] and names(pod, "volumes") == []
    annotations = kubectl.json("deployment", "web")["metadata"].get("annotations") or {}
    assert f"policy.sidecars.dev/{name}" not in annotations


@pytest.mark.exclusive
def test_what_a_policy_deleted_behind_the_operator_s_back_left_is_removed_at_start_up(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, operator: OperatorProcess
) -> None:
    """The policy was deleted while the operator was down and its finalizer removed by hand. No
    other policy targets CronJobs, so none watches them: the operator started and did nothing
    until some policy happened to target that kind again."""
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "labels": {"sidecar-test": "yes"}},
        "spec": {
            "schedule": "0 3 * * *",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "containers": [{"name": "job", "image": "busybox:1.36"}],
                        }
                    }
                }
            },
        },
    }
    kubectl.apply(yaml.safe_dump(cron))
    name = policies.apply(kinds=["CronJob"], initContainers=[GIT_SYNC])
    eventually(lambda: ready(policies, name, matched=1), what="the CronJob injected")

    operator.stop()
    try:
        kubectl_admin("delete", "sidecarpolicy", name, "--wait=false")
        unfinalized = {"metadata": {"finalizers": None}}
        kubectl_admin("patch", "sidecarpolicy", name, "--type=merge", "-p", json.dumps(unfinalized))
        eventually(
            lambda: kubectl_admin.find("sidecarpolicy", name) is None,
            what="the policy gone without its finalizer",
        )
    finally:
        operator.start()

    def template() -> dict[str, object]:
        job = kubectl.json("cronjob", "nightly")["spec"]["jobTemplate"]["spec"]
        return dict(job["template"]["spec"])

    eventually(lambda: "initContainers" not in template(), timeout=60, what="the orphan removed")
    annotations = kubectl.json("cronjob", "nightly")["metadata"].get("annotations") or {}
    assert f"policy.sidecars.dev/{name}" not in annotations
