"""StatefulSets, DaemonSets and CronJobs on the real control plane: inject, drift repair, opt-out
and exact removal; rollouts under the budget that fit each kind; a halt past
`progressDeadlineSeconds`; Jobs that must finish; and kinds listed only while a policy needs them.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml

from sidecar_operator.api.kinds import WorkloadKind, dig
from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import GIT_SYNC, Policies, condition, events, halted, ready
from tests.timeline import Timeline

NEW_KINDS = [WorkloadKind.STATEFUL_SET, WorkloadKind.DAEMON_SET, WorkloadKind.CRON_JOB]
SHIPPER = {"name": "shipper", "image": "fluent/fluent-bit:3.1.9"}
BROKEN = {"name": "shipper", "image": "fluent/fluent-bit:never-ready"}
# A native sidecar: what a CronJob takes (its Jobs still finish), and any other kind too.
NATIVE = {
    **GIT_SYNC,
    "volumeMounts": [{"name": "config", "mountPath": "/etc/config"}],
}
CONFIG_VOLUME = {"name": "config", "emptyDir": {}}
CONFIG_MOUNT = {"name": "config", "mountPath": "/etc/config"}
BUDGET_2 = {"maxConcurrent": 2}

pytestmark = pytest.mark.usefixtures("operator")


def workload(kind: WorkloadKind, name: str, *, parallel: bool = False) -> dict[str, Any]:
    """A minimal workload of this kind whose pods run one app container. `parallel`: a
    StatefulSet whose controller replaces a pod that never got ready (with the default
    OrderedReady it waits for that pod forever, whatever its template becomes)."""
    pod = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    selector = {"matchLabels": {"app": name}}
    spec: dict[str, Any]
    if kind is WorkloadKind.STATEFUL_SET:
        spec = {"replicas": 1, "serviceName": name, "selector": selector, "template": pod}
        if parallel:
            spec["podManagementPolicy"] = "Parallel"
    elif kind is WorkloadKind.DAEMON_SET:
        spec = {"selector": selector, "template": pod}
    elif kind is WorkloadKind.CRON_JOB:
        pod["spec"]["restartPolicy"] = "Never"
        spec = {
            "schedule": "0 0 1 1 *",
            "suspend": True,  # its template is what matters; no Job needs to run
            "jobTemplate": {"spec": {"template": pod}},
        }
    else:
        spec = {"replicas": 1, "selector": selector, "template": pod}
    return {
        "apiVersion": kind.api_version,
        "kind": kind.value,
        "metadata": {"name": name, "labels": {"sidecar-test": "yes"}},
        "spec": spec,
    }


def template(kubectl: Kubectl, kind: WorkloadKind, name: str) -> dict[str, Any]:
    """The pod template's spec as stored."""
    stored = kubectl.json(kind.value.lower(), name)
    return dict(dig(stored, (*kind.template_path, "spec")))


def names(pod: dict[str, Any], pod_list: str) -> list[str]:
    return [item["name"] for item in pod.get(pod_list) or []]


def injected(kubectl: Kubectl, kind: WorkloadKind, name: str) -> dict[str, Any] | None:
    pod = template(kubectl, kind, name)
    carries = "config-sync" in names(pod, "initContainers")
    return pod if carries and "config" in names(pod, "volumes") else None


@pytest.mark.parametrize("kind", NEW_KINDS, ids=lambda kind: str(kind))
def test_inject_repair_opt_out_and_exact_removal(
    kubectl: Kubectl, policies: Policies, kind: WorkloadKind
) -> None:
    kubectl.apply(yaml.safe_dump(workload(kind, "app")))
    kubectl.apply(yaml.safe_dump(workload(WorkloadKind.DEPLOYMENT, "app")))  # same name
    original = template(kubectl, kind, "app")
    deployment_before = template(kubectl, WorkloadKind.DEPLOYMENT, "app")
    name = policies.apply(
        kinds=[kind.value],
        initContainers=[NATIVE],
        volumes=[CONFIG_VOLUME],
        volumeMounts=[CONFIG_MOUNT],
    )
    pod = eventually(lambda: injected(kubectl, kind, "app"), what=f"{kind} injected")
    assert names(pod, "containers") == ["app"]
    assert pod["containers"][0]["volumeMounts"] == [CONFIG_MOUNT]
    status = eventually(lambda: ready(policies, name, matched=1), what="Ready")
    assert status["workloadKinds"] == [kind.value]
    # Only its kind: the Deployment of the same name is not touched.
    assert template(kubectl, WorkloadKind.DEPLOYMENT, "app") == deployment_before
    assert eventually(
        lambda: events(kubectl, kind.value, "app", reason="SidecarsInjected"),
        what="the Event on the workload",
    )

    # Drift: someone deletes the injected init container; it is put back.
    path = "/".join(("", *kind.template_path, "spec", "initContainers"))
    removal = json.dumps([{"op": "remove", "path": path}])
    kubectl("patch", kind.value.lower(), "app", "--type=json", f"-p={removal}")
    eventually(lambda: injected(kubectl, kind, "app"), what="drift repaired")

    # Opt-out: everything the policy added goes, and the template is the original again.
    kubectl("annotate", kind.value.lower(), "app", "sidecars.dev/inject=false")
    eventually(lambda: template(kubectl, kind, "app") == original, what="removed on opt-out")
    kubectl("annotate", kind.value.lower(), "app", "sidecars.dev/inject-")
    eventually(lambda: injected(kubectl, kind, "app"), what="injected again")

    policies.delete(name)
    assert template(kubectl, kind, "app") == original


@pytest.mark.parametrize("kind", NEW_KINDS, ids=lambda kind: str(kind))
def test_an_update_keeps_to_a_budget_of_2(
    kubectl: Kubectl, policies: Policies, namespace: str, kind: WorkloadKind
) -> None:
    apps = [f"app-{index}" for index in range(6)]
    kubectl.apply(yaml.safe_dump_all([workload(kind, app) for app in apps]))
    native = {**SHIPPER, "restartPolicy": "Always"}  # what a CronJob takes, as any kind does
    name = policies.apply(kinds=[kind.value], initContainers=[native], updateStrategy=BUDGET_2)
    first = eventually(lambda: ready(policies, name, matched=6), timeout=180, what="injected")

    newer = {**native, "image": "fluent/fluent-bit:3.2.10"}
    with Timeline(str(kubectl.kubeconfig), namespace, kind) as timeline:
        policies.apply(name, kinds=[kind.value], initContainers=[newer], updateStrategy=BUDGET_2)
        final = eventually(
            lambda: (
                (s := ready(policies, name, matched=6)) and s["revision"] != first["revision"] and s
            ),
            timeout=240,
            what="updated everywhere",
        )
        time.sleep(1)
    assert timeline.carrying(name, final["revision"]) == set(apps)
    highest = timeline.max_in_flight(name, final["revision"])
    print(f"{kind}: at most {highest} in flight")
    if kind is WorkloadKind.CRON_JOB:
        assert highest == 0  # done when written: nothing runs to disrupt, so not paced
    else:
        assert 1 <= highest <= 2


def test_a_stateful_set_whose_new_pods_never_get_ready_halts_the_rollout(
    kubectl: Kubectl, policies: Policies, namespace: str
) -> None:
    kind = WorkloadKind.STATEFUL_SET
    apps = [f"db-{index}" for index in range(4)]
    kubectl.apply(yaml.safe_dump_all([workload(kind, app, parallel=True) for app in apps]))
    for app in apps:
        kubectl("rollout", "status", f"statefulset/{app}", "--timeout=120s")
    strategy = {"maxConcurrent": 1, "progressDeadlineSeconds": 8}
    with Timeline(str(kubectl.kubeconfig), namespace, kind) as timeline:
        name = policies.apply(kinds=[kind.value], containers=[BROKEN], updateStrategy=strategy)
        status = eventually(lambda: halted(policies, name), timeout=90, what="RolloutHalted")
        revision = status["revision"]
        stuck = timeline.carrying(name, revision)
        assert len(stuck) == 1
        assert (
            f"StatefulSet/{namespace}/{next(iter(stuck))}"
            in (condition(status, "Progressing")["message"])
        )
        time.sleep(5)
        assert timeline.carrying(name, revision) == stuck  # nothing further touched

    policies.apply(name, kinds=[kind.value], containers=[SHIPPER], updateStrategy=strategy)
    fixed = eventually(lambda: ready(policies, name, matched=4), timeout=180, what="resumed")
    assert fixed["revision"] != revision


def test_a_cron_job_takes_a_native_sidecar_and_reports_a_regular_one_as_a_conflict(
    kubectl: Kubectl, policies: Policies
) -> None:
    kind = WorkloadKind.CRON_JOB
    kubectl.apply(yaml.safe_dump(workload(kind, "nightly")))
    original = template(kubectl, kind, "nightly")
    native = policies.apply(kinds=[kind.value], initContainers=[NATIVE], volumes=[CONFIG_VOLUME])
    regular = policies.apply(kinds=[kind.value], containers=[SHIPPER])
    eventually(lambda: injected(kubectl, kind, "nightly"), what="the native sidecar")
    eventually(lambda: ready(policies, native, matched=1), what="Ready")

    status = eventually(
        lambda: (s := policies.status(regular)) and s.get("conflicts") == 1 and s,
        what="the regular sidecar a conflict",
    )
    degraded = condition(status, "Degraded")
    assert degraded["status"] == "True"
    assert "restartPolicy: Always" in degraded["message"]
    warning = eventually(
        lambda: events(kubectl, "CronJob", "nightly", reason="SidecarConflict"),
        what="a Warning on the CronJob",
    )
    assert warning[0]["type"] == "Warning" and regular in warning[0]["message"]
    assert names(template(kubectl, kind, "nightly"), "containers") == ["app"]

    policies.delete(native)
    assert template(kubectl, kind, "nightly") == original


# -- kinds listed only while needed ----------------------------------------------------------


def _requests(operator: OperatorProcess, resource: str, method: str = "") -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if (
            line.startswith("sidecar_operator_api_requests_total{")
            and f'resource="{resource}"' in line
            and f'method="{method}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_kind_is_listed_and_watched_only_while_a_policy_targets_it(
    own_operator: OperatorProcess, kubectl: Kubectl, policies: Policies
) -> None:
    """An operator of the test's own (its request counters start at 0), serving only the
    test's policies: whatever kinds other tests' policies target, it needs Deployments alone."""
    kubectl.apply(yaml.safe_dump(workload(WorkloadKind.STATEFUL_SET, "db")))
    kubectl.apply(yaml.safe_dump(workload(WorkloadKind.DEPLOYMENT, "web")))
    name = policies.apply(kinds=["Deployment"], containers=[SHIPPER])
    eventually(lambda: ready(policies, name, matched=1), what="the Deployment injected")
    assert _requests(own_operator, "deployments", "WATCH") > 0
    assert _requests(own_operator, "statefulsets", "WATCH") == 0
    # Only the start-up look for what deleted policies left: one page of their metadata.
    assert _requests(own_operator, "statefulsets", "GET") == 1
    assert "config-sync" not in str(template(kubectl, WorkloadKind.STATEFUL_SET, "db"))

    # Targeting StatefulSets too starts their list and watch; the check above can fail.
    policies.apply(name, kinds=["Deployment", "StatefulSet"], containers=[SHIPPER])
    eventually(lambda: ready(policies, name, matched=2), what="the StatefulSet injected too")
    assert _requests(own_operator, "statefulsets", "WATCH") > 0

    # Dropped from spec.kinds: its sidecars are removed, then the kind is let go.
    before = copy.deepcopy(template(kubectl, WorkloadKind.STATEFUL_SET, "db"))
    assert names(before, "containers") == ["app", "shipper"]
    policies.apply(name, kinds=["Deployment"], containers=[SHIPPER])
    eventually(
        lambda: names(template(kubectl, WorkloadKind.STATEFUL_SET, "db"), "containers") == ["app"],
        what="removed from the StatefulSet",
    )
    eventually(
        lambda: policies.status(name).get("workloadKinds") == ["Deployment"],
        what="the status lets go of StatefulSet",
    )
    eventually(
        lambda: any(
            record.get("event") == "Stopped watching" and record.get("kind") == "StatefulSet"
            for record in _records(own_operator)
        ),
        what="the StatefulSet watch stopped",
    )


def _records(operator: OperatorProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in operator.log().splitlines() if line.startswith("{")]
