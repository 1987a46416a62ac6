"""Operators serving policies apart (`--shard`), on the real control plane: each serves the
policies labelled for it, never takes what another's policies added for leftovers (at its
start-up either), and a policy relabelled to another shard keeps its sidecars."""

from __future__ import annotations

import subprocess
import time

import yaml

from sidecar_operator.api.names import FINALIZER, SHARD_LABEL
from tests.conftest import OperatorProcess
from tests.kube import SIDECAR_OPERATOR, Kubectl, eventually
from tests.scenario import FLUENT_BIT, LOG_VOLUME, Policies, deployment, has_container, ready

SHIPPER = {"name": "shipper", "image": "fluent/fluent-bit:3.1.9"}


def finalizers(kubectl: Kubectl, policy: str) -> list[str]:
    return list(kubectl.json("sidecarpolicy", policy)["metadata"].get("finalizers") or [])


def test_a_shard_serves_its_policies_and_leaves_the_others_and_their_sidecars_alone(
    kubectl: Kubectl,
    kubectl_admin: Kubectl,
    policies: Policies,
    namespace: str,
    own_operator: OperatorProcess,
    operator: OperatorProcess,
) -> None:
    kubectl.apply(deployment("a", labels={"sidecar-test": "yes", "part": "a"}))
    kubectl.apply(deployment("b", labels={"sidecar-test": "yes", "part": "b"}))
    mine = policies.apply(
        selector={"matchLabels": {"part": "a"}}, containers=[FLUENT_BIT], volumes=[LOG_VOLUME]
    )
    theirs = f"{mine}-theirs"  # the session operator's: no shard label
    unsharded = policies.document(theirs, selector={"matchLabels": {"part": "b"}})
    unsharded["spec"]["containers"] = [SHIPPER]
    del unsharded["metadata"]["labels"]
    kubectl_admin.apply(yaml.safe_dump(unsharded))
    policies.created.append(theirs)
    eventually(lambda: ready(policies, mine, matched=1), what="the shard's policy Ready")
    eventually(lambda: ready(policies, theirs, matched=1), what="the other policy Ready")
    assert not has_container(kubectl, "a", "shipper") and not has_container(
        kubectl, "b", "fluent-bit"
    )
    shard_finalizer = f"{FINALIZER}-{namespace}"
    assert finalizers(kubectl_admin, mine) == [shard_finalizer]
    assert finalizers(kubectl_admin, theirs) == [FINALIZER]

    # Restarted, the shard lists every Deployment and finds `theirs`' fields on b: not its to
    # remove. A resync pass later (--resync-seconds 5), b is as it was, and neither operator
    # fought the other over a finalizer.
    before = {
        p: kubectl_admin.json("sidecarpolicy", p)["metadata"]["resourceVersion"]
        for p in (mine, theirs)
    }
    generation = kubectl.json("deployment", "b")["metadata"]["generation"]
    own_operator.stop()
    own_operator.start()
    eventually(
        lambda: "deployments: watching" in str(own_operator.health()[1].get("workloads")),
        what="the shard restarted and its Deployments listed",
    )
    time.sleep(7)
    assert has_container(kubectl, "b", "shipper")
    assert kubectl.json("deployment", "b")["metadata"]["generation"] == generation
    assert own_operator.writes(theirs) == 0
    assert (
        kubectl_admin.json("sidecarpolicy", theirs)["metadata"]["resourceVersion"] == before[theirs]
    )

    # Moved into the shard: the session operator lets go of it (its finalizer too), the shard
    # takes it on; b keeps its sidecar throughout, and loses it when the policy is deleted.
    kubectl_admin("label", "sidecarpolicy", theirs, f"{SHARD_LABEL}={namespace}")
    eventually(
        lambda: finalizers(kubectl_admin, theirs) == [shard_finalizer],
        what="the shard's finalizer alone on the moved policy",
    )
    eventually(lambda: ready(policies, theirs, matched=1), what="the moved policy Ready")
    assert has_container(kubectl, "b", "shipper")
    assert kubectl.json("deployment", "b")["metadata"]["generation"] == generation
    policies.delete(theirs)
    assert not has_container(kubectl, "b", "shipper")
    assert has_container(kubectl, "a", "fluent-bit")


def test_a_shard_name_that_cannot_name_a_finalizer_is_refused() -> None:
    run = subprocess.run(
        [SIDECAR_OPERATOR, "run", "--shard", "Blue_1"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2
    assert "--shard" in run.stderr and "DNS label" in run.stderr
