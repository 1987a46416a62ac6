"""Each policy's rollout as derived from the cache: its stable content."""

from __future__ import annotations

from typing import Any

from sidecar_operator.api.models import Content, Policy
from sidecar_operator.core import history, waves
from sidecar_operator.core.ownership import revision_annotation
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.history import Histories
from sidecar_operator.state.rollouts import Rollouts

OLD = {"name": "shipper", "image": "fluent/fluent-bit:3.1"}
NEW = {"name": "shipper", "image": "fluent/fluent-bit:3.2"}
STEPS = [{"percent": 10, "pause": {}}, {"percent": 100}]


def policy_body(
    container: dict[str, str], status: dict[str, Any], **strategy: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "logs", "uid": "u-1", "generation": 2},
        "spec": {"selector": {}, "containers": [container], "updateStrategy": strategy},
        "status": status,
    }


def deployment(name: str, revision: str | None) -> dict[str, Any]:
    annotations = {revision_annotation("logs"): revision} if revision else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"u-{name}",
            "resourceVersion": "1",
            "generation": 1,
            "annotations": annotations,
            "managedFields": [],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
    }


FIRST = Policy.from_object(policy_body(OLD, {}))


def rollouts_for(carried: list[str | None]) -> Rollouts:
    """The policy edited (with steps) right after its first revision reached the workloads
    that carry it, before a pass recorded that: the status still says the first rollout's
    stable content is nothing."""
    cache, histories = Cache(), Histories()
    histories.put(history.body(FIRST, FIRST.spec, namespace="ops", number=1))
    status = {"currentRevision": "", "updateRevision": FIRST.spec.revision}
    cache.put_policy(policy_body(NEW, status, steps=STEPS))
    for index, revision in enumerate(carried):
        cache.put_workload(deployment(f"web-{index}", revision))
    return Rollouts(cache, histories, operator_namespace=None)


def test_a_revision_every_workload_carries_is_the_stable_one_before_the_status_says_so() -> None:
    rollout = rollouts_for([FIRST.spec.revision] * 5).of("logs")
    assert rollout is not None and rollout.stepped
    assert isinstance(rollout.stable, Content)
    assert rollout.stable.revision == FIRST.spec.revision


def test_a_rollout_that_had_not_reached_every_workload_leaves_the_stable_content_as_it_was() -> (
    None
):
    """Its revision is abandoned: those that carry it go back to what the status says."""
    rollout = rollouts_for([FIRST.spec.revision] * 4 + [None]).of("logs")
    assert rollout is not None
    assert rollout.stable is None


def test_a_rollout_derived_again_for_a_newcomer_cuts_as_one_derived_from_scratch() -> None:
    """The ranks of the workloads already matched are kept from the rollout before (only the
    newcomer's is hashed): the cuts must be those of every matched workload ranked afresh."""
    rollouts = rollouts_for([FIRST.spec.revision] * 30)
    before = rollouts.of("logs")
    assert before is not None and before.cuts
    rollouts.cache.put_workload(deployment("web-new", None))
    after = rollouts.of("logs")
    assert after is not None and after is not before
    keys = [key for key, _ in rollouts.matched(FIRST)]
    assert len(keys) == 31 and set(after.ranks) == set(keys)
    assert after.cuts == waves.cuts(after.steps, waves.ranks("u-1", keys).values())
    assert all(after.rank(key) == waves.rank("u-1", key) for key in keys)
