"""What one pass over a policy decides, from the cache alone: its planned action on every
Deployment it concerns (with what the API server refused or keeps failing taken into account),
the writes the rollout allows, and the status to write. No I/O: the runtime carries it out.

It runs on the operator's one loop, in slices: a policy may select thousands of Deployments, and
holding the loop for all of them would hold up the watches, the writes and the liveness probe."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sidecar_operator import metrics
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy
from sidecar_operator.core import rollout, status, waves, workloads
from sidecar_operator.core.types import Action, Key, Kind
from sidecar_operator.engine.reporting import Reporter
from sidecar_operator.engine.worker import Worker
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.plans import Plans, plan_inputs
from sidecar_operator.state.rollouts import Rollouts

STATUS_INTERVAL = 2.0  # seconds between a policy's status writes while it changes
SLICE_SECONDS = 0.005  # the longest a pass holds the loop before letting others run
SLICE_CHECK = 64  # Deployments planned between looks at the clock


class Slices:
    """Yields to the loop every SLICE_SECONDS, and counts the CPU time spent in its own slices
    (not what others did while it yielded): the next pass waits in proportion to it (`pacing`)."""

    def __init__(self) -> None:
        self._cpu = 0.0
        self._started = time.perf_counter()
        self._cpu_started = time.thread_time()

    async def pause(self) -> None:
        if time.perf_counter() - self._started < SLICE_SECONDS:
            return
        self._cpu += time.thread_time() - self._cpu_started
        await asyncio.sleep(0)
        self._started = time.perf_counter()
        self._cpu_started = time.thread_time()

    def cpu(self) -> float:
        return self._cpu + time.thread_time() - self._cpu_started


@dataclass(frozen=True)
class PassPlan:
    """What one pass decided: the status to write (None: unchanged, or not due yet) and the
    writes the rollout allows now."""

    status: dict[str, Any] | None
    writes: list[tuple[Action, Mapping[str, Any]]] = field(default_factory=list)
    cpu: float = 0.0
    stable: str | None = None  # the stable revision to keep in history ("": nothing)
    policy: Policy | None = None  # as planned


class Passes:
    def __init__(self, cache: Cache, plans: Plans, rollouts: Rollouts, reporter: Reporter) -> None:
        self.cache = cache
        self.plans = plans
        self.rollouts = rollouts
        self.reporter = reporter

    async def prepare(self, worker: Worker) -> PassPlan:
        """Everything a pass decides, from the cache alone."""
        slices = Slices()
        entry = self.cache.policy(worker.name)
        if entry is None:
            return PassPlan(None)
        policy, body = entry
        worker.asked = policy.asked
        selector = policy.spec.selector
        if not (selector.match_labels or selector.match_expressions or worker.told_selector):
            self.reporter.selects_everything(worker.name)
            worker.told_selector = True
        if policy.deleting:
            return PassPlan(None)  # the deletion handler removes everything, holding the finalizer
        items, shown = await self._items(worker.name, slices)
        now = self.cache.policy(worker.name)
        if now is None or now[0] != policy:
            # Changed while the pass yielded: what it planned is partly stale. The change woke
            # the worker, whose next pass plans it whole.
            return PassPlan(None, cpu=slices.cpu())
        body = now[1]  # the latest status, which the new one is compared with
        step = _step(policy, items)
        rollout = self.rollouts.of(worker.name)
        assert rollout is not None
        progress = waves.progress(
            policy,
            rollout,
            body.get("status") or {},
            (
                (item.deployment, self.cache.namespace_labels(item.key.namespace), rolled)
                for item in shown
                if item.action.kind not in (Kind.REMOVE, Kind.CONFLICT)
                for rolled in (workloads.rolled_out(item.deployment),)
            ),
            held=policy.spec.update_strategy.paused or bool(step.failing),
            now=datetime.datetime.now(datetime.UTC),
        )
        self.reporter.steps(worker.name, policy, progress.moved)
        memory = self.reporter.memory(worker.name)
        for item in shown:
            if item.action.kind is Kind.CONFLICT:
                self.reporter.conflict(worker.name, item.deployment, item.action.conflict)
            elif item.action.kind is Kind.REMOVE and item.action.conflict:
                self.reporter.removal_blocked(worker.name, item.deployment, item.action.conflict)
            else:
                memory.no_conflict(item.key)
        self.reporter.halted(worker.name, step.failing)
        self.reporter.owner_paused(worker.name, step.owner_paused)
        return PassPlan(
            self._status(worker, policy, body, shown, step, progress),
            [(item.action, item.deployment) for item in step.writes],
            slices.cpu(),
            stable=progress.stable,
            policy=policy,
        )

    def may_write(self, policy: str, workload: Mapping[str, Any], action: Action) -> bool:
        """Whether the policy's rollout would let this write go to the workload now (admission
        asks, for an owner's update): the same `rollout.step` a pass takes, over the cache, with
        the workload as the update would leave it. A burst of updates admitted before the watch
        shows the first of them can go past the budget by the updates in that burst."""
        entry = self.cache.policy(policy)
        if entry is None:
            return False
        key = Key.of(workload)
        items = [
            rollout.Item(other, deployment, mine)
            for other, deployment in self.cache.concerning(policy)
            if other != key
            for mine in self.plans.plan(deployment)
            if mine.policy == policy
        ]
        items.append(rollout.Item(key, workload, action))
        return any(item.key == key for item in _step(entry[0], items).writes)

    async def _items(
        self, policy: str, slices: Slices
    ) -> tuple[list[rollout.Item], list[rollout.Item]]:
        """This policy's planned action on every Deployment that matches or carries it: to
        carry out, and to show. They differ only where a reported Deployment whose writes kept
        failing is due another try: it is tried, and shown as the conflict it is until a write
        goes through."""
        items, shown = [], []
        memory = self.reporter.memory(policy)
        concerning = self.cache.concerning(policy)
        for key in memory.conflicts.keys() - {key for key, _ in concerning}:
            memory.no_conflict(key)  # neither selected nor carrying the policy any more
        for index, (key, deployment) in enumerate(concerning):
            if index % SLICE_CHECK == 0:
                await slices.pause()
            mine = next((a for a in self.plans.plan(deployment) if a.policy == policy), None)
            if mine is None:
                # A namespace's labels changed while the pass yielded: no longer selected.
                memory.no_conflict(key)
                continue
            rejected = memory.rejected.get(key)
            failing = memory.failing.get(key)
            if (
                rejected
                and mine.body is not None
                and rejected.revision == mine.revision
                and rejected.inputs == plan_inputs(deployment)
            ):
                # The same write was refused (or did not converge) for the workload as it is:
                # a conflict, or a removal held, until either changes.
                kind = Kind.REMOVE if mine.kind is Kind.REMOVE else Kind.CONFLICT
                mine = replace(mine, kind=kind, body=None, conflict=rejected.reason)
            elif failing and mine.kind is Kind.APPLY:
                # Its writes keep failing: it waits for its next try, and the rollout goes on
                # without it.
                reported = Action(
                    mine.policy, Kind.CONFLICT, conflict=failing.reason, revision=mine.revision
                )
                if failing.waiting():
                    mine = reported if failing.reported else replace(mine, body=None)
                elif failing.reported:
                    items.append(rollout.Item(key, deployment, mine))
                    shown.append(rollout.Item(key, deployment, reported))
                    continue
            items.append(rollout.Item(key, deployment, mine))
            shown.append(items[-1])
        return items, shown

    def _status(
        self,
        worker: Worker,
        policy: Policy,
        body: Mapping[str, Any],
        items: list[rollout.Item],
        step: rollout.Step,
        progress: waves.Progress,
    ) -> dict[str, Any] | None:
        """The status to write now, or None: unchanged, or a rollout's moving counts that wait
        for STATUS_INTERVAL to pass (then `status_due` says so)."""
        by_kind: dict[WorkloadKind, list[tuple[Action, Mapping[str, Any]]]] = {
            kind: [] for kind in policy.spec.kinds
        }
        for item in items:
            by_kind.setdefault(item.key.kind, []).append((item.action, item.deployment))
        revision = policy.spec.revision
        per_kind = {kind: status.count(pairs, revision) for kind, pairs in by_kind.items()}
        for kind, counted in per_kind.items():
            metrics.set_counts(worker.name, kind.value, **asdict(counted))
        metrics.forget(worker.name, (kind.value for kind in WorkloadKind if kind not in by_kind))
        counts = status.total(per_kind.values())
        examples = sorted(
            f"{item.key}: {item.action.conflict}" for item in items if item.action.conflict
        )
        old = body.get("status") or {}
        steps = waves.steps_of(policy)
        position = progress.moved.position
        metrics.STEP.labels(policy=worker.name).set(position.step)
        wave = status.Wave(
            phase=progress.moved.phase,
            step=position.step,
            steps=len(steps),
            name=steps[position.step].name,
            policy=policy.name,
            resume_at=None
            if progress.moved.resume_at is None
            else waves.stamp(progress.moved.resume_at),
            stable=progress.stable or "",
        )
        new = status.policy_status(
            policy,
            counts,
            old,
            kinds=(kind for kind, pairs in by_kind.items() if pairs),
            failing=step.failing,
            owner_paused=step.owner_paused,
            conflict_examples=examples,
            now=status_time(),
            wave=wave,
            rollout=progress.status(policy),
        )
        _export(worker, policy, new, counts)
        if {k: old.get(k) for k in new} == new:
            worker.status_due = False
            return None
        if (
            status.rolling_on(old, new)
            and time.monotonic() - worker.status_written < STATUS_INTERVAL
        ):
            # Mid-rollout the counts move with every write: report them at a steady pace.
            # Anything else (a new generation, a halt, a condition turning) is written at once.
            worker.status_due = True
            return None
        worker.status_due = False
        return new


def _export(worker: Worker, policy: Policy, new: Mapping[str, Any], counts: status.Counts) -> None:
    """The policy's conditions, deadline and last progress as metrics, which the alert rules
    read (charts/sidecar-operator/files/alerts.yaml)."""
    conditions = new["conditions"]
    metrics.set_conditions(worker.name, conditions)
    deadline = policy.spec.update_strategy.progress_deadline_seconds
    metrics.PROGRESS_DEADLINE.labels(policy=worker.name).set(deadline)
    for kind in policy.spec.kinds:
        # Exported at 0 before the first: `increase()` over a series that appears at 1 is 0.
        metrics.INJECTED_AFTER_CREATION.labels(policy=worker.name, kind=kind.value)
    reasons = tuple(str(c.get("reason")) for c in conditions)
    moved = (new.get("revision"), new.get("currentStep"), reasons, counts.updated, counts.ready)
    if moved != worker.progress:
        worker.progress = moved
        metrics.LAST_PROGRESS.labels(policy=worker.name).set(time.time())


def _step(policy: Policy, items: list[rollout.Item]) -> rollout.Step:
    strategy = policy.spec.update_strategy
    return rollout.step(
        items,
        max_concurrent=strategy.max_concurrent,
        paused=strategy.paused,
        policy_created=policy.created,
        progress_deadline_seconds=strategy.progress_deadline_seconds,
        now=datetime.datetime.now(datetime.UTC),
    )


def status_time() -> str:
    """A status timestamp: RFC 3339, to the second."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
