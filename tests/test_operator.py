"""The operator on the real control plane, driven as a user would: kubectl apply, patch and
delete, then assertions on the cluster's actual objects.

Each test's policy selects only its own namespace (by name) and its own label, so tests never
see each other's Deployments.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import OperatorProcess
from tests.kube import Kubectl, eventually
from tests.scenario import (
    APP_WITH_INIT_AND_DATA,
    APP_WITH_OWN_FLUENT_BIT,
    FLUENT_BIT,
    GIT_SYNC,
    LOG_MOUNT,
    LOG_VOLUME,
    Policies,
    condition,
    deployment,
    events,
    has_container,
    names,
    pod_spec,
    policy_events,
    ready,
)

pytestmark = pytest.mark.usefixtures("operator")

# -- selection -------------------------------------------------------------------------------


def test_only_matching_deployments_get_the_sidecar(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("chosen"))
    kubectl.apply(deployment("other", labels={"sidecar-test": "no"}))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])

    eventually(lambda: has_container(kubectl, "chosen", "fluent-bit"), what="injection")
    status = eventually(lambda: ready(policies, name, matched=1), what="policy Ready")
    assert status["updatedWorkloads"] == 1 and status["conflicts"] == 0
    assert names(pod_spec(kubectl, "other"), "containers") == ["app"]


def test_namespace_labels_decide_matching(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, namespace: str
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(
        containers=[{"name": "exporter", "image": "prom/statsd-exporter:v0.27"}],
        namespaceSelector={"matchLabels": {"team": f"t-{namespace}"}},
    )
    time.sleep(3)
    assert not has_container(kubectl, "web", "exporter")

    kubectl_admin("label", "namespace", namespace, f"team=t-{namespace}")
    eventually(lambda: has_container(kubectl, "web", "exporter"), what="injection")
    kubectl_admin("label", "namespace", namespace, "team-")
    eventually(lambda: not has_container(kubectl, "web", "exporter"), what="removal")
    assert eventually(lambda: policies.status(name).get("matchedWorkloads") == 0)


def test_opt_out_annotation_removes_and_keeps_out(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("web"))
    policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: has_container(kubectl, "web", "fluent-bit"), what="injection")

    kubectl("annotate", "deployment", "web", "sidecars.dev/inject=false")
    eventually(lambda: not has_container(kubectl, "web", "fluent-bit"), what="removal")
    assert names(pod_spec(kubectl, "web"), "volumes") == []


def test_empty_selector_is_allowed_with_a_warning(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("anything", labels={"whatever": "x"}))
    name = policies.apply(selector={}, containers=[{"name": "agent", "image": "busybox:1.36"}])
    eventually(lambda: has_container(kubectl, "anything", "agent"), what="injection")
    warnings = eventually(
        lambda: policy_events(kubectl, name, "SelectsEverything"),
        what="warning",
    )
    assert warnings[0]["type"] == "Warning"


# -- what the operator does ------------------------------------------------------------------


def test_app_containers_init_containers_and_volumes_keep_their_order(
    kubectl: Kubectl, policies: Policies
) -> None:
    app_pod = {
        "initContainers": [{"name": "migrate", "image": "busybox:1.36"}],
        "containers": [
            {
                "name": "app",
                "image": "nginx:1.27",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            {"name": "own-proxy", "image": "envoyproxy/envoy:v1.31.0"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    kubectl.apply(deployment("web", pod=app_pod))
    name = policies.apply(
        containers=[FLUENT_BIT],
        initContainers=[GIT_SYNC],
        volumes=[LOG_VOLUME],
        volumeMounts=[LOG_MOUNT],
    )
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")

    pod = pod_spec(kubectl, "web")
    assert names(pod, "containers") == ["app", "own-proxy", "fluent-bit"]
    assert names(pod, "initContainers") == ["config-sync", "migrate"]
    assert names(pod, "volumes") == ["data", "app-logs"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert [m["mountPath"] for m in containers["app"]["volumeMounts"]] == ["/data", "/var/log/app"]
    assert [m["mountPath"] for m in containers["own-proxy"]["volumeMounts"]] == ["/var/log/app"]
    assert containers["fluent-bit"]["volumeMounts"][0]["readOnly"] is True
    init = {c["name"]: c for c in pod["initContainers"]}
    assert [m["mountPath"] for m in init["migrate"]["volumeMounts"]] == ["/var/log/app"]
    assert init["config-sync"]["restartPolicy"] == "Always"
    # `kubectl logs deploy/web` and `kubectl exec deploy/web` pick the first container: the app.
    assert pod["containers"][0]["name"] == "app"


def test_writes_with_its_own_field_manager_and_records_the_revision(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    status = eventually(lambda: ready(policies, name, matched=1), what="policy Ready")

    live = kubectl.json("deployment", "web", "--show-managed-fields")
    assert live["metadata"]["annotations"][f"policy.sidecars.dev/{name}"] == status["revision"]
    managers = {(m["manager"], m["operation"]) for m in live["metadata"]["managedFields"]}
    assert (f"sidecars.dev/{name}", "Apply") in managers
    assert not any(k.startswith("kopf.zalando.org") for k in live["metadata"]["annotations"])
    assert live["metadata"].get("finalizers") is None


def test_changing_the_sidecar_rolls_out_and_other_changes_do_not(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    first = eventually(lambda: ready(policies, name, matched=1), what="policy Ready")
    before = kubectl.json("deployment", "web")["metadata"]["generation"]

    policies.apply(
        name,
        containers=[FLUENT_BIT],
        volumes=[LOG_VOLUME],
        priority=7,
        updateStrategy={"maxConcurrent": 2},
    )
    eventually(lambda: policies.status(name).get("observedGeneration") == 2)
    assert policies.status(name)["revision"] == first["revision"]
    assert kubectl.json("deployment", "web")["metadata"]["generation"] == before

    newer = {**FLUENT_BIT, "image": "fluent/fluent-bit:3.2.0"}
    policies.apply(name, containers=[newer], volumes=[LOG_VOLUME], priority=7)
    second = eventually(lambda: ready(policies, name, matched=1), what="policy Ready again")
    assert second["revision"] != first["revision"]
    sidecar = next(c for c in pod_spec(kubectl, "web")["containers"] if c["name"] == "fluent-bit")
    assert sidecar["image"] == "fluent/fluent-bit:3.2.0"
    annotations = kubectl.json("deployment", "web")["metadata"]["annotations"]
    assert annotations[f"policy.sidecars.dev/{name}"] == second["revision"]


def test_drift_is_put_back(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], volumeMounts=[LOG_MOUNT])
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")

    kubectl("set", "image", "deployment/web", "fluent-bit=evil/shipper:1")
    eventually(
        lambda: (
            next(
                c["image"]
                for c in pod_spec(kubectl, "web")["containers"]
                if c["name"] == "fluent-bit"
            )
            == FLUENT_BIT["image"]
        ),
        what="image restored",
    )

    pod = pod_spec(kubectl, "web")
    index = names(pod, "containers").index("fluent-bit")
    kubectl(
        "patch",
        "deployment",
        "web",
        "--type=json",
        f'-p=[{{"op": "remove", "path": "/spec/template/spec/containers/{index}"}}]',
    )
    eventually(lambda: has_container(kubectl, "web", "fluent-bit"), what="container restored")

    kubectl(
        "patch",
        "deployment",
        "web",
        "--type=json",
        '-p=[{"op": "remove", "path": "/spec/template/spec/containers/0/volumeMounts"}]',
    )
    eventually(
        lambda: (
            [
                m["mountPath"]
                for m in pod_spec(kubectl, "web")["containers"][0].get("volumeMounts", [])
            ]
            == ["/var/log/app"]
        ),
        what="mount restored",
    )


@pytest.mark.parametrize("server_side", [False, True], ids=["client-side", "server-side"])
def test_reapplying_the_app_manifest_keeps_both_changes(
    kubectl: Kubectl, policies: Policies, server_side: bool
) -> None:
    flags = ["--server-side", "--field-manager=team-shop"] if server_side else []
    kubectl.apply(deployment("web"), *flags)
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], volumeMounts=[LOG_MOUNT])
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")

    changed = deployment(
        "web",
        pod={
            "containers": [
                {"name": "app", "image": "nginx:1.28", "env": [{"name": "MODE", "value": "prod"}]}
            ]
        },
    )
    kubectl.apply(changed, *flags)
    time.sleep(2)
    pod = eventually(
        lambda: (
            (p := pod_spec(kubectl, "web")) and has_container(kubectl, "web", "fluent-bit") and p
        ),
        what="sidecar still there",
    )
    app = pod["containers"][0]
    assert app["image"] == "nginx:1.28" and app["env"] == [{"name": "MODE", "value": "prod"}]
    assert [m["mountPath"] for m in app.get("volumeMounts", [])] == ["/var/log/app"]
    assert names(pod, "containers") == ["app", "fluent-bit"]


def _resource_versions(kubectl: Kubectl) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["metadata"]["resourceVersion"]
        for d in kubectl.json("deployments")["items"]
    }


def test_no_writes_at_rest_or_after_a_restart(
    kubectl: Kubectl, policies: Policies, own_operator: OperatorProcess
) -> None:
    for index in range(3):
        kubectl.apply(deployment(f"web-{index}"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], volumeMounts=[LOG_MOUNT])
    eventually(lambda: ready(policies, name, matched=3), what="policy Ready")
    settled = _resource_versions(kubectl)
    policy_rv = kubectl.json("sidecarpolicy", name)["metadata"]["resourceVersion"]

    time.sleep(12)  # more than two drift-correction passes (--resync-seconds 5)
    assert _resource_versions(kubectl) == settled

    own_operator.stop()
    own_operator.start()
    time.sleep(12)
    assert _resource_versions(kubectl) == settled
    assert kubectl.json("sidecarpolicy", name)["metadata"]["resourceVersion"] == policy_rv


# -- removal ---------------------------------------------------------------------------------


def test_deleting_the_policy_restores_the_original_template(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web", pod=APP_WITH_INIT_AND_DATA))
    original = eventually(lambda: pod_spec(kubectl, "web"))
    name = policies.apply(
        containers=[FLUENT_BIT],
        initContainers=[GIT_SYNC],
        volumes=[LOG_VOLUME],
        volumeMounts=[LOG_MOUNT],
    )
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")

    policies.delete(name)  # waits: the finalizer holds the policy until the cleanup is done
    assert pod_spec(kubectl, "web") == original
    annotations = kubectl.json("deployment", "web")["metadata"].get("annotations", {})
    assert f"policy.sidecars.dev/{name}" not in annotations
    eventually(
        lambda: events(kubectl, "Deployment", "web", reason="SidecarsRemoved"),
        what="the removal's Event",
    )


def test_a_label_change_that_unmatches_removes(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("web"))
    policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: has_container(kubectl, "web", "fluent-bit"), what="injection")
    kubectl("label", "deployment", "web", "sidecar-test=no", "--overwrite")
    eventually(lambda: names(pod_spec(kubectl, "web"), "containers") == ["app"], what="removal")
    assert names(pod_spec(kubectl, "web"), "volumes") == []


def test_a_policy_deleted_while_the_operator_is_down_is_cleaned_up_on_start(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, own_operator: OperatorProcess
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready")

    own_operator.stop()
    try:
        kubectl_admin("delete", "sidecarpolicy", name, "--wait=false")
        time.sleep(1)
        assert has_container(kubectl, "web", "fluent-bit")
    finally:
        own_operator.start()
    eventually(lambda: not has_container(kubectl, "web", "fluent-bit"), what="cleanup")
    eventually(
        lambda: kubectl_admin.find("sidecarpolicy", name) is None,
        what="policy gone",
    )


# -- conflicts -------------------------------------------------------------------------------


def test_a_name_clash_with_the_app_skips_the_deployment_and_says_so(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(
        deployment(
            "web",
            pod=APP_WITH_OWN_FLUENT_BIT,
        )
    )
    kubectl.apply(deployment("clean"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])

    status = eventually(
        lambda: (s := policies.status(name)).get("conflicts") == 1 and s, what="conflict counted"
    )
    assert condition(status, "Degraded")["status"] == "True"
    assert condition(status, "Degraded")["reason"] == "Conflicts"
    assert (
        "container fluent-bit is already defined by the Deployment"
        in condition(status, "Degraded")["message"]
    )
    eventually(lambda: has_container(kubectl, "clean", "fluent-bit"), what="the other injected")
    pod = pod_spec(kubectl, "web")
    assert [c["image"] for c in pod["containers"]] == ["nginx:1.27", "mine:1"]
    assert names(pod, "volumes") == []  # all or nothing
    warning = eventually(
        lambda: events(kubectl, "Deployment", "web", reason="SidecarConflict"),
        what="Event",
    )
    assert warning[0]["type"] == "Warning" and name in warning[0]["message"]


def test_the_higher_priority_policy_wins_a_name_clash(kubectl: Kubectl, policies: Policies) -> None:
    kubectl.apply(deployment("web"))
    low = policies.apply(
        containers=[{**FLUENT_BIT, "image": "fluent/fluent-bit:2.2.3"}],
        volumes=[LOG_VOLUME],
        priority=1,
    )
    high = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], priority=5)

    eventually(lambda: policies.status(low).get("conflicts") == 1, what="loser skips")
    eventually(lambda: ready(policies, high, matched=1), what="winner Ready")
    sidecar = next(c for c in pod_spec(kubectl, "web")["containers"] if c["name"] == "fluent-bit")
    assert sidecar["image"] == FLUENT_BIT["image"]
    annotations = kubectl.json("deployment", "web")["metadata"]["annotations"]
    assert f"policy.sidecars.dev/{low}" not in annotations


def test_a_sidecar_mounting_a_volume_the_deployment_lacks_is_a_conflict(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    reader = {
        "name": "reader",
        "image": "busybox:1.36",
        "volumeMounts": [{"name": "app-data", "mountPath": "/data"}],
    }
    name = policies.apply(containers=[reader])
    status = eventually(lambda: (s := policies.status(name)).get("conflicts") == 1 and s)
    assert "mounts volume app-data" in condition(status, "Degraded")["message"]
    assert not has_container(kubectl, "web", "reader")


def test_a_patch_the_api_server_rejects_leaves_the_deployment_unchanged(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    before = pod_spec(kubectl, "web")
    broken = {
        "name": "greedy",
        "image": "busybox:1.36",
        "resources": {"limits": {"cpu": "100m"}, "requests": {"cpu": "200m"}},
    }
    name = policies.apply(containers=[broken])
    status = eventually(lambda: (s := policies.status(name)).get("conflicts") == 1 and s)
    assert "rejected" in condition(status, "Degraded")["message"]
    assert pod_spec(kubectl, "web") == before
    eventually(
        lambda: events(kubectl, "Deployment", "web", reason="SidecarConflict"),
        what="Event",
    )


# -- status and events -----------------------------------------------------------------------


def test_kubectl_get_shows_where_the_rollout_stands(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies
) -> None:
    for index in range(2):
        kubectl.apply(deployment(f"web-{index}"))
    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME], priority=3)
    eventually(lambda: ready(policies, name, matched=2), what="policy Ready")

    table = kubectl_admin("get", "scp", name).stdout.split("\n")
    assert table[0].split() == ["NAME", "MATCHED", "UPDATED", "READY", "CONFLICTS", "AGE"]
    assert table[1].split()[:5] == [name, "2", "2", "2", "0"]
    wide = kubectl_admin("get", "scp", name, "-o", "wide").stdout.split("\n")
    assert wide[0].split()[-4:] == ["PRIORITY", "PAUSED", "KINDS", "STEP"]
    assert wide[1].split()[-4:] == ["3", "false", '["Deployment"]', "0"]
    injected = eventually(
        lambda: policy_events(kubectl, name, "Injected"),
        what="aggregated Event",
    )
    counted = sum(
        int(re.search(r"in (\d+) workloads", e["message"]).group(1))  # type: ignore[union-attr]
        for e in injected
        for _ in range(e.get("count", 1))
    )
    assert counted == 2
    described = kubectl_admin("describe", "sidecarpolicy", name).stdout
    assert re.search(r"Ready Workloads:\s+2\n", described)
    assert re.search(r"Normal\s+Injected\s+.*Injected sidecars in", described)


def test_a_paused_policy_touches_nothing_until_resumed(
    kubectl: Kubectl, policies: Policies
) -> None:
    kubectl.apply(deployment("web"))
    name = policies.apply(
        containers=[FLUENT_BIT], volumes=[LOG_VOLUME], updateStrategy={"paused": True}
    )
    status = eventually(
        lambda: (s := policies.status(name)).get("matchedWorkloads") == 1 and s, what="status"
    )
    time.sleep(2)
    assert not has_container(kubectl, "web", "fluent-bit")
    assert condition(status, "Progressing")["reason"] == "Paused"
    assert condition(status, "Ready")["status"] == "False"

    policies.apply(
        name, containers=[FLUENT_BIT], volumes=[LOG_VOLUME], updateStrategy={"paused": False}
    )
    eventually(lambda: ready(policies, name, matched=1), what="policy Ready after resuming")
    assert has_container(kubectl, "web", "fluent-bit")
