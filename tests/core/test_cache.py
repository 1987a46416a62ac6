"""The in-memory state: newest snapshot wins, and `epoch` moves only when plans must change."""

from __future__ import annotations

from typing import Any

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core.types import Key
from sidecar_operator.state import snapshot
from sidecar_operator.state.cache import Cache


def deployment(rv: str, uid: str = "u1", image: str = "nginx") -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "uid": uid, "resourceVersion": rv},
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
    }


def policy(image: str, generation: int, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "logs",
            "generation": generation,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"selector": {}, "containers": [{"name": "fluent-bit", "image": image}]},
        "status": status or {},
    }


def image(cache: Cache) -> str:
    held = dict(cache.workloads())[Key("shop", "web")]
    return str(held["spec"]["template"]["spec"]["containers"][0]["image"])


def test_a_write_s_answer_never_brings_back_what_the_watch_dropped() -> None:
    cache = Cache()
    cache.put_workload(deployment("10"))
    cache.drop_workload(Key("shop", "web"))  # deleted while our write was in flight
    assert cache.refresh_workload(deployment("11", image="nginx:2")) is None
    assert cache.workloads() == []
    cache.put_workload(deployment("20", uid="u2"))  # created again under the same name
    assert cache.refresh_workload(deployment("12", image="nginx:2")) is None  # the old one's
    assert image(cache) == "nginx"


def test_an_older_snapshot_never_replaces_a_newer_one() -> None:
    cache = Cache()
    cache.put_workload(deployment("10", image="nginx:1"))  # the watch
    cache.refresh_workload(deployment("12", image="nginx:2"))  # our own write's response
    returned = cache.put_workload(deployment("11", image="nginx:1"))  # the watch, behind
    assert image(cache) == "nginx:2"
    assert returned["metadata"]["resourceVersion"] == "12"


def test_a_recreated_deployment_replaces_the_old_one_whatever_its_version() -> None:
    cache = Cache()
    cache.put_workload(deployment("50", uid="old", image="nginx:1"))
    cache.put_workload(deployment("7", uid="new", image="nginx:2"))
    assert image(cache) == "nginx:2"
    cache.drop_workload(Key("shop", "web"))
    assert cache.workloads() == []


def test_epoch_moves_with_policy_specs_and_namespace_labels_only() -> None:
    cache = Cache()
    cache.put_policy(policy("fluent-bit:3", 1))
    cache.put_namespace("shop", {"team": "a"})
    start = cache.epoch
    cache.put_policy(policy("fluent-bit:3", 1, status={"matchedWorkloads": 4}))
    cache.put_namespace("shop", {"team": "a"})
    cache.put_workload(deployment("3"))
    assert cache.epoch == start  # our own status writes and Deployment events re-plan nothing
    cache.put_policy(policy("fluent-bit:4", 2))
    assert cache.epoch == start + 1
    cache.put_namespace("shop", {"team": "b"})
    assert cache.epoch == start + 2
    cache.drop_policy("logs")
    cache.drop_namespace("shop")
    assert cache.epoch == start + 4
    assert cache.policies() == {} and cache.namespace_labels("shop") == {}


def test_a_complete_listing_forgets_what_it_lacks_of_its_own_kind_only() -> None:
    cache = Cache()
    cache.put_workload(deployment("3"))
    cache.put_workload(
        {**deployment("4"), "metadata": {**deployment("4")["metadata"], "name": "db"}}
    )
    cache.put_workload({**deployment("5"), "kind": "StatefulSet"})
    listed = [Key("shop", "db")]
    assert cache.retain_workloads(WorkloadKind.DEPLOYMENT, listed) == [Key("shop", "web")]
    stateful_set = Key("shop", "web", WorkloadKind.STATEFUL_SET)
    assert [key for key, _ in cache.workloads()] == [Key("shop", "db"), stateful_set]


def test_the_kinds_watched_are_those_policies_target_or_still_have_workloads_of() -> None:
    cache = Cache()
    assert cache.kinds_wanted() == frozenset()
    cache.put_policy(policy("fluent-bit:3.0", 1))
    assert cache.kinds_wanted() == {WorkloadKind.DEPLOYMENT}
    targets = policy("fluent-bit:3.0", 2, status={"workloadKinds": ["DaemonSet", "Pod"]})
    targets["spec"]["kinds"] = ["CronJob"]
    cache.put_policy(targets)
    assert cache.kinds_of("logs") == {WorkloadKind.CRON_JOB, WorkloadKind.DAEMON_SET}
    cache.drop_policy("logs")
    assert cache.kinds_wanted() == frozenset()


def test_identical_parts_of_many_snapshots_are_one_object() -> None:
    share = snapshot.Shared()
    first = snapshot.compact(deployment("1"), share)
    second = snapshot.compact(deployment("2", uid="u2"), share)
    other = snapshot.compact(deployment("3", uid="u3", image="nginx:2"), share)
    containers = [s["spec"]["template"]["spec"]["containers"][0] for s in (first, second, other)]
    assert containers[0] is containers[1]
    assert containers[2] is not containers[0] and containers[2]["image"] == "nginx:2"
    assert first == snapshot.compact(deployment("1"))  # sharing changes no content


def test_shared_parts_no_snapshot_holds_are_forgotten() -> None:
    cache = Cache()
    for index in range(3000):  # one Deployment whose image keeps changing
        cache.put_workload(deployment(str(index), image=f"nginx:{index}"))
    assert image(cache) == "nginx:2999"
    assert len(cache._shared) < 1100


def test_a_policy_another_operator_serves_is_known_by_name_and_never_gone() -> None:
    """`--shard`: what other shards' policies added is theirs; only a policy that no longer
    exists, served here or not, leaves leftovers."""
    cache = Cache()
    cache.put_policy(policy("fluent-bit:3", 1))
    assert cache.put_foreign("theirs") is False  # never served here
    assert cache.gone(["logs", "theirs", "deleted"]) == ["deleted"]
    assert cache.policy_names() == {"logs", "theirs"}
    epoch = cache.moved
    assert cache.put_foreign("theirs") is False  # its status churn moves nothing here
    assert cache.moved == epoch

    assert cache.put_foreign("logs") is True  # relabelled to another shard
    assert cache.policy("logs") is None and cache.gone(["logs"]) == []
    cache.put_policy(policy("fluent-bit:3", 1))  # and back
    assert cache.policy("logs") is not None and cache.policy_names() == {"logs", "theirs"}

    cache.drop_policy("theirs")  # deleted
    assert cache.gone(["theirs"]) == ["theirs"] and cache.policy_names() == {"logs"}
