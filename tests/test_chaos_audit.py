"""The chaos audit catches what it is there to catch (a check that cannot fail proves nothing)."""

from __future__ import annotations

import copy
import random
import time
from typing import Any

from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, ssa
from sidecar_operator.core.ownership import field_manager
from tests.chaos import audit, corpus, trials, workloads

POLICY = "chaos-p"


def injected_pair(shape: int = 1) -> tuple[dict[str, Any], audit.Template, dict[str, Any], str]:
    """A Deployment as the operator leaves it, its snapshot, the policy's spec and revision."""
    deployment = workloads.deployment(shape)
    deployment["metadata"]["namespace"] = "chaos"
    snapshot = audit.template(deployment)
    spec = workloads.policy_spec("chaos", "fluent/fluent-bit:3.1.9")
    policy = Policy.from_object({"metadata": {"name": POLICY}, "spec": spec})
    (action,) = planner.plan(deployment, {"kubernetes.io/metadata.name": "chaos"}, [policy])
    assert action.body is not None
    done = ssa.apply(deployment, field_manager(POLICY), action.body)
    return done, snapshot, spec, policy.spec.revision


def test_a_clean_injection_has_no_defects() -> None:
    done, snapshot, spec, revision = injected_pair()
    assert audit.injected(done, snapshot, POLICY, spec, revision) == []


def test_a_doubled_a_lost_and_a_reordered_part_are_each_found() -> None:
    done, snapshot, spec, revision = injected_pair()
    pod = done["spec"]["template"]["spec"]

    doubled = copy.deepcopy(done)
    doubled["spec"]["template"]["spec"]["volumes"].append({"name": "chaos-logs", "emptyDir": {}})
    assert any(
        "2 copies of volume" in d for d in audit.injected(doubled, snapshot, POLICY, spec, revision)
    )

    lost = copy.deepcopy(done)
    lost["spec"]["template"]["spec"]["initContainers"] = [
        c for c in pod["initContainers"] if c["name"] != "migrate"
    ]
    assert any(
        "app's own part" in d for d in audit.injected(lost, snapshot, POLICY, spec, revision)
    )

    unmounted = copy.deepcopy(done)
    app = next(c for c in unmounted["spec"]["template"]["spec"]["containers"] if c["name"] == "app")
    app["volumeMounts"] = [m for m in app["volumeMounts"] if m["mountPath"] != "/var/log/chaos"]
    assert any(
        "0 mounts at /var/log/chaos" in d
        for d in audit.injected(unmounted, snapshot, POLICY, spec, revision)
    )

    two, snapshot_of_two, _, _ = injected_pair(shape=2)
    reordered = copy.deepcopy(two)
    containers = reordered["spec"]["template"]["spec"]["containers"]
    containers[0], containers[1] = containers[1], containers[0]  # proxy before app
    found = audit.injected(reordered, snapshot_of_two, POLICY, spec, revision)
    assert any("app's own part" in d for d in found)


def test_a_removal_must_give_back_the_snapshot_and_drop_the_annotation() -> None:
    done, snapshot, _, _ = injected_pair()
    found = audit.removed(done, snapshot, POLICY)
    assert any("annotation" in d for d in found) and any("template differs" in d for d in found)
    clean = copy.deepcopy(done)
    clean["metadata"]["annotations"] = {}
    clean["spec"]["template"]["spec"] = copy.deepcopy(snapshot)
    assert audit.removed(clean, snapshot, POLICY) == []


def test_a_status_that_disagrees_with_the_cluster_is_found() -> None:
    done, _, spec, revision = injected_pair()
    done["status"] = {}  # not rolled out
    policy = {
        "metadata": {"name": POLICY, "generation": 2},
        "status": {
            "observedGeneration": 2,
            "revision": revision,
            "matchedWorkloads": 1,
            "updatedWorkloads": 1,
            "readyWorkloads": 1,
            "conflicts": 0,
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Degraded", "status": "False"},
            ],
        },
        "spec": spec,
    }
    found = audit.status(policy, [done], {done["metadata"]["name"]})
    assert any("readyWorkloads" in d for d in found)
    assert any("condition Ready" in d for d in found)


def test_a_policy_manager_owning_an_app_field_is_found() -> None:
    done, _, spec, _ = injected_pair()
    manager = field_manager(POLICY)
    assert audit.app_fields_owned(done, manager, spec) == []

    forced = copy.deepcopy(done)
    entry = next(e for e in forced["metadata"]["managedFields"] if e["manager"] == manager)
    pod = entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
    pod["f:containers"]['k:{"name":"app"}']["f:image"] = {}
    pod["f:volumes"]['k:{"name":"data"}'] = {".": {}, "f:name": {}}
    pod["f:containers"]['k:{"name":"app"}']["f:volumeMounts"]['k:{"mountPath":"/data"}'] = {}
    found = audit.app_fields_owned(forced, manager, spec)
    assert any("['f:image', '/data']" in d and "app container app" in d for d in found), found
    assert any("app volumes ['data']" in d for d in found), found


def test_every_corpus_case_loads_and_says_what_it_expects() -> None:
    cases = corpus.load()
    assert len(cases) >= 40
    for name, case in cases.items():
        expect = case.expect
        assert (expect.rejected is not None) != bool(
            expect.injected
            or expect.conflicts
            or expect.owner_paused
            or case.during.delete_namespace
            or expect.unserved
        ), f"{name}: rejected, or an outcome on the cluster, not both"
        assert not expect.unserved or not (expect.injected or expect.conflicts), name
        assert (case.policy is None) != (case.raw is None), f"{name}: a policy or a raw manifest"
        apps = {app.name for app in case.apps}
        named = set(expect.injected) | set(expect.conflicts) | set(expect.owner_paused)
        assert named | set(expect.warnings) <= apps, name


def test_pod_metadata_not_the_apps_and_the_policys_is_a_defect() -> None:
    deployment = workloads.deployment(1)
    deployment["metadata"].update(namespace="chaos", labels={"team": "shop"})
    deployment["spec"]["template"]["metadata"] = {"labels": {"app": "x"}}
    snapshot = audit.pod_metadata(deployment)
    spec = {
        "selector": {},
        "podMetadata": {"labels": {"owner": "{{ workload.labels['team'] }}"}},
    }
    policy = Policy.from_object({"metadata": {"name": POLICY}, "spec": spec})
    (action,) = planner.plan(deployment, {}, [policy])
    assert action.body is not None
    done = ssa.apply(deployment, field_manager(POLICY), action.body)
    assert audit.metadata_injected(done, snapshot, spec) == []
    assert audit.app_fields_owned(done, field_manager(POLICY), spec) == []
    taken = copy.deepcopy(done)
    taken["spec"]["template"]["metadata"]["labels"]["app"] = "y"  # the app's own, changed
    assert any("['app']" in d for d in audit.metadata_injected(taken, snapshot, spec))
    assert audit.metadata_removed(done, snapshot) != []
    assert audit.metadata_removed(deployment, snapshot) == []
    grabbed = copy.deepcopy(done)
    for entry in grabbed["metadata"]["managedFields"]:
        entry["fieldsV1"]["f:spec"]["f:template"]["f:metadata"]["f:labels"]["f:app"] = {}
    found = audit.app_fields_owned(grabbed, field_manager(POLICY), spec)
    assert any("pod labels ['app']" in d for d in found), found


class Replica:
    """Stands for the operator the Killer kills and starts again."""

    def __init__(self) -> None:
        self.pid: int | None = 1
        self.starts = 0

    def stop(self, sig: int) -> None:
        self.pid = None

    def start(self) -> None:
        self.pid = 1
        self.starts += 1


def test_the_smoke_kills_a_few_times_per_phase_and_make_chaos_until_it_settles() -> None:
    def kills(most: int | None) -> int:
        replica = Replica()
        killer = trials.Killer(
            replica,  # type: ignore[arg-type]
            random.Random(1),
            between=(0.01, 0.02),
            first=(0.0, 0.01),
            while_listing=0.0,
            most=most,
        )
        with killer:
            time.sleep(0.5)
        assert replica.pid is not None and replica.starts == killer.kills
        return killer.kills

    assert trials.SMOKE.kills_per_phase == 2 and trials.Scale().kills_per_phase is None
    assert kills(2) == 2
    assert kills(None) > 5
