"""How long the cyclic garbage collector's full pass holds the operator's loop, with its heap as
at N Deployments, before and after `gc.freeze()` (which `engine.heap` calls after the first
listing, and again once most snapshots were replaced). `python -m bench.heap [--n 5000]`.

The heap is the operator's own: Kopf and the operator's modules imported, the policy of the
bench, and the cache and plans of N Deployments as the API server returns them once the policy
is applied (their snapshots, each planned once). The operator runs everything on one loop, so a
full pass stalls the watches, the writes and the liveness probe for as long as it takes.

`--sites`: instead, the bytes per workload the fill leaves held, by allocation site
(tracemalloc, after a warm-up fill of 200): what a workload costs the operator's memory, and
where (docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
import tracemalloc

import kopf  # noqa: F401  # part of the operator's heap

from bench.workload import POLICY, as_policy_object, deployment, policy
from sidecar_operator import handlers  # noqa: F401
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, ssa
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.history import Histories
from sidecar_operator.state.plans import Plans
from sidecar_operator.state.rollouts import Rollouts

ROUNDS = 5


def fill(cache: Cache, plans: Plans, n: int, *, version: int) -> None:
    """Every Deployment as the API server returns it after the policy's apply, planned once;
    `version` > 0 stands for a later version of each, as after a rollout."""
    body = as_policy_object(policy("3.1.9"), 1)
    body["status"] = {"currentRevision": ""}  # as its first pass leaves it: nothing stable yet
    cache.put_policy(body)
    spec = Policy.from_object(body)
    for index in range(n):
        live = deployment(f"ns-{index // 20}", f"app-{index}", replicas=0, set_name="main")
        live["metadata"].update(uid=f"uid-{index}", resourceVersion=str(index + 1), generation=1)
        live["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
        live["metadata"]["managedFields"] = [
            {"manager": "bench", "operation": "Update", "fieldsV1": {"f:spec": {}}}
        ]
        (action,) = planner.plan(live, {}, [spec])
        assert action.body is not None
        applied = ssa.apply(live, field_manager(POLICY), copy.deepcopy(action.body))
        applied["metadata"].update(resourceVersion=str((version + 1) * n + index + 1))
        applied["metadata"]["generation"] = 2 + version
        plans.plan(cache.put_workload(applied))


def full_pass_ms() -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def held(n: int) -> tuple[Cache, Plans]:
    cache = Cache()
    plans = Plans(
        cache, Rollouts(cache, Histories(), operator_namespace=None), operator_namespace=None
    )
    fill(cache, plans, n, version=0)
    return cache, plans


def sites(n: int) -> None:
    warm = held(200)  # imports and one-time allocations out of the count
    gc.collect()
    tracemalloc.start(8)
    before = tracemalloc.take_snapshot()
    kept = held(n)
    gc.collect()
    grown = tracemalloc.take_snapshot().compare_to(before, "traceback")
    print(f"{sum(s.size_diff for s in grown) / n:.0f} bytes per workload held ({n} workloads)")
    for stat in grown[:25]:
        frames = " > ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in stat.traceback)
        print(f"{stat.size_diff / n:7.0f} B {stat.count_diff / n:5.1f} blocks  {frames}")
    del warm, kept


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.heap", description=__doc__)
    parser.add_argument("--n", type=int, default=5000, help="Deployments in the cache")
    parser.add_argument("--sites", action="store_true", help="bytes per workload by site")
    options = parser.parse_args()
    n = options.n
    if options.sites:
        sites(n)
        return
    cache, plans = held(n)
    print(f"{len(cache.workloads())} Deployments held; a full collection (median of {ROUNDS}):")
    print(f"  without gc.freeze():                  {full_pass_ms():6.1f} ms")
    gc.freeze()
    frozen = gc.get_freeze_count()
    fill(cache, plans, n, version=1)
    print(f"  frozen, then every Deployment changed: {full_pass_ms():6.1f} ms ({frozen} frozen)")
    gc.freeze()
    print(f"  frozen again:                          {full_pass_ms():6.1f} ms")


if __name__ == "__main__":
    main()
