"""What one pass over a policy decides, from the cache alone: its planned action on the
workloads it concerns (with what the API server refused or keeps failing taken into account),
counted into the policy's tally (`core.tally`), the writes the rollout allows, and the status to
write. No I/O: the runtime carries it out.

A workload's event costs one workload's planning: the pass it wakes classifies that workload
alone into the tally its policy's last pass left. A full pass, which classifies every workload
the policy concerns, is for what changes them all (the policy, its rollout, a namespace's labels,
a listing), for the resync, and for what no event announces (a deadline passing).

It runs on the operator's one loop, in slices: a policy may select thousands of workloads, and
holding the loop for all of them would hold up the watches, the writes and the liveness probe."""

from __future__ import annotations

import asyncio
import datetime
import heapq
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sidecar_operator.api.models import Policy
from sidecar_operator.core import rollout, status, stepping, tally, waves
from sidecar_operator.core.tally import Context, Tally
from sidecar_operator.core.types import Action, Key, Kind
from sidecar_operator.engine import exporting
from sidecar_operator.engine.deadlines import Deadlines
from sidecar_operator.engine.reporting import Reporter
from sidecar_operator.engine.worker import Worker
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.plans import Plans, plan_inputs
from sidecar_operator.state.rollouts import Rollouts

STATUS_INTERVAL = 2.0  # seconds between a policy's status writes while it changes
SLICE_SECONDS = 0.005  # the longest a pass holds the loop before letting others run
SLICE_CHECK = 64  # Deployments planned between looks at the clock


class Slices:
    """Yields to the loop every SLICE_SECONDS, and counts the time spent in its own slices (not
    what others did while it yielded): the next full pass waits in proportion to it (`pacing`).
    The loop runs one thing at a time, so a slice's time is its CPU time, unless the machine
    took the core away meanwhile (then it errs towards resting longer). Reading the thread's
    CPU clock instead was a tenth of the operator's samples under churn."""

    def __init__(self) -> None:
        self._spent = 0.0
        self._started = time.perf_counter()

    async def pause(self) -> None:
        now = time.perf_counter()
        if now - self._started < SLICE_SECONDS:
            return
        self._spent += now - self._started
        await asyncio.sleep(0)
        self._started = time.perf_counter()

    def cpu(self) -> float:
        return self._spent + time.perf_counter() - self._started


@dataclass(frozen=True)
class PassPlan:
    """What one pass decided: the status to write (None: unchanged, or not due yet) and the
    writes the rollout allows now."""

    status: dict[str, Any] | None
    writes: list[tuple[Action, Mapping[str, Any]]] = field(default_factory=list)
    cpu: float = 0.0
    stable: str | None = None  # the stable revision to keep in history ("": nothing)
    policy: Policy | None = None  # as planned
    resume_at: datetime.datetime | None = None  # when a step's pause ends


class Passes:
    def __init__(self, cache: Cache, plans: Plans, rollouts: Rollouts, reporter: Reporter) -> None:
        self.cache = cache
        self.plans = plans
        self.rollouts = rollouts
        self.reporter = reporter
        self.tallies: dict[str, Tally] = {}  # per policy, as its last pass left it
        self.deadlines = Deadlines(self.tallies, reporter)
        # Per policy, the context its workloads are classified against, with the cache's entry
        # and the rollout it was derived from: a pass asks twice (whether it is a full one,
        # then its own), admission on every owner's update.
        self._contexts: dict[str, tuple[Any, waves.Rollout, Context]] = {}

    async def prepare(self, worker: Worker) -> PassPlan:
        """Everything a pass decides, from the cache alone. A full pass classifies every
        workload the policy concerns; any other only those whose events woke it (`dirty`),
        into the tally the last pass left, while that was classified against the same policy,
        rollout and namespaces (`Tally.context`, `stamp`)."""
        slices = Slices()
        name = worker.name
        entry = self.cache.policy(name)
        if entry is None:
            return PassPlan(None)
        policy, body = entry
        worker.asked = policy.asked
        selector = policy.spec.selector
        if not (selector.match_labels or selector.match_expressions or worker.told_selector):
            self.reporter.selects_everything(name)
            worker.told_selector = True
        if policy.deleting:
            return PassPlan(None)  # the deletion handler removes everything, holding the finalizer
        current, context = self._context(name, entry)
        held, dirty = self._current(name, context), worker.dirty | self.deadlines.come_due(name)
        worker.dirty = set()
        if worker.full or held is None:
            worker.full = False
            previous = self.tallies.get(name)
            sums = Tally(context, self._stamp())
            reusable = previous.entries if previous and previous.context == context else {}
            await self._fill(sums, self._concerning(name), slices, reusable)
            self.tallies[name] = sums
        else:
            sums = held
            await self._fill(sums, dirty, slices)
        now = self.cache.policy(name)
        if now is None or (now[0] is not policy and now[0] != policy):
            # Changed while the pass yielded: what it planned is partly stale. The change woke
            # the worker, whose next pass plans it whole.
            return PassPlan(None, cpu=slices.cpu())
        body = now[1]  # the latest status, which the new one is compared with
        step = sums.step()
        progress = stepping.progress(
            policy,
            current,
            body.get("status") or {},
            sums.step_counts(),
            held=policy.spec.update_strategy.paused or bool(step.failing),
            now=datetime.datetime.now(datetime.UTC),
        )
        self.reporter.steps(name, policy, progress.moved)
        self.reporter.halted(name, step.failing)
        self.reporter.owner_paused(name, step.owner_paused)
        return PassPlan(
            self._status(worker, policy, body, sums, step, progress),
            [(item.action, item.deployment) for item in step.writes],
            slices.cpu(),
            stable=progress.stable,
            policy=policy,
            resume_at=progress.moved.resume_at,
        )

    def full_due(self, worker: Worker) -> bool:
        """Whether the worker's next pass plans every workload its policy concerns."""
        entry = self.cache.policy(worker.name)
        if entry is None:
            return False
        _, context = self._context(worker.name, entry)
        return worker.full or self._current(worker.name, context) is None

    def may_write(self, policy: str, workload: Mapping[str, Any], action: Action) -> bool:
        """Whether the policy's rollout would let this write go to the workload now (admission
        asks, for an owner's update): the decision a pass takes, with the workload as the
        update would leave it. A burst of updates admitted before the watch shows the first of
        them can go past the budget by the updates in that burst."""
        entry = self.cache.policy(policy)
        if entry is None:
            return False
        _, context = self._context(policy, entry)
        sums = self._current(policy, context)
        if sums is None:
            # No pass has counted this policy as it is now: count it here, as a pass would.
            sums = Tally(context, self._stamp())
            now = _now()
            for key in self._concerning(policy):
                self._enter(sums, key, now)
            self.tallies[policy] = sums
        key = Key.of(workload)
        item = rollout.Item(key, workload, action)
        labels = self.cache.namespace_labels(key.namespace)
        return sums.admits(key, tally.entry(context, item, item, labels, _now()))

    def forget(self, policy: str) -> None:
        self.tallies.pop(policy, None)
        self._contexts.pop(policy, None)
        self.deadlines.forget(policy)

    def _context(
        self, name: str, entry: tuple[Policy, Mapping[str, Any]]
    ) -> tuple[waves.Rollout, Context]:
        """The policy's rollout, and the context its workloads are classified against."""
        current = self.rollouts.of(name)
        assert current is not None  # the policy is in the cache
        held = self._contexts.get(name)
        if held is not None and held[0] is entry and held[1] is current:
            return current, held[2]
        context = Context.of(entry[0], current, entry[1].get("status") or {})
        self._contexts[name] = (entry, current, context)
        return current, context

    def _stamp(self) -> tuple[int, int]:
        """What else every plan was made from: policies' specs, namespaces, rollouts."""
        return (self.cache.epoch, self.rollouts.version)

    def _current(self, policy: str, context: Context) -> Tally | None:
        """The policy's tally, if its entries were classified as they would be now."""
        sums = self.tallies.get(policy)
        if sums is None or sums.context != context or sums.stamp != self._stamp():
            return None
        return sums

    def _concerning(self, policy: str) -> set[Key]:
        """Every workload the policy concerns, and those its tally or reports still name."""
        memory = self.reporter.memory(policy)
        held = self.tallies.get(policy)
        keys = set(self.cache.concerning_keys(policy)) | memory.conflicts.keys()
        return keys | (held.entries.keys() if held is not None else set())

    async def _fill(
        self,
        sums: Tally,
        keys: Iterable[Key],
        slices: Slices,
        reusable: Mapping[Key, tally.Entry] | None = None,
    ) -> None:
        # One time for the workloads of a slice: a deadline is seconds, a slice milliseconds.
        now = _now()
        for index, key in enumerate(keys):
            if index % SLICE_CHECK == 0:
                await slices.pause()
                now = _now()
            self._report(sums.context.policy, key, self._enter(sums, key, now, reusable))

    def _enter(
        self,
        sums: Tally,
        key: Key,
        now: datetime.datetime,
        reusable: Mapping[Key, tally.Entry] | None = None,
    ) -> rollout.Item | None:
        """Classify the workload into the tally (or drop it: gone, or no longer the policy's
        concern); returns what it shows. `reusable`: the entries of a tally classified against
        the same context, each kept where classifying again would give it (`_same`)."""
        policy = sums.context.policy
        workload = self.cache.workload(key)
        pair = None
        if workload is not None and policy in self.cache.concerned(key):
            pair = self._item(policy, key, workload)
        if pair is None:
            sums.drop(key)
            return None
        todo, shown = pair
        old = reusable.get(key) if reusable else None
        if old is not None and _same(old, todo, shown):
            sums.put(key, old)
            return shown
        labels = self.cache.namespace_labels(key.namespace)
        sums.put(key, tally.entry(sums.context, todo, shown, labels, now))
        return shown

    def _report(self, policy: str, key: Key, shown: rollout.Item | None) -> None:
        memory = self.reporter.memory(policy)
        if shown is None:
            memory.no_conflict(key)
        elif shown.action.kind is Kind.CONFLICT:
            self.reporter.conflict(policy, shown.deployment, shown.action.conflict)
        elif shown.action.kind is Kind.REMOVE and shown.action.conflict:
            self.reporter.removal_blocked(policy, shown.deployment, shown.action.conflict)
        else:
            memory.no_conflict(key)

    def _item(
        self, policy: str, key: Key, deployment: Mapping[str, Any]
    ) -> tuple[rollout.Item, rollout.Item] | None:
        """This policy's planned action on the workload: to carry out, and to show (None: not
        its concern). They differ only where a reported workload whose writes kept failing is
        due another try: it is tried, and shown as the conflict it is until a write goes
        through."""
        memory = self.reporter.memory(policy)
        mine = next((a for a in self.plans.plan(deployment) if a.policy == policy), None)
        if mine is None:
            return None
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
                return rollout.Item(key, deployment, mine), rollout.Item(key, deployment, reported)
        item = rollout.Item(key, deployment, mine)
        return item, item

    def _status(
        self,
        worker: Worker,
        policy: Policy,
        body: Mapping[str, Any],
        sums: Tally,
        step: rollout.Step,
        progress: stepping.Progress,
    ) -> dict[str, Any] | None:
        """The status to write now, or None: unchanged, or a rollout's moving counts that wait
        for STATUS_INTERVAL to pass (then `status_due` says so)."""
        per_kind = {kind: status.Counts() for kind in policy.spec.kinds} | sums.counts()
        counts = status.total(per_kind.values())
        # The conditions quote three: not a sort of every conflict on every workload's event.
        examples = heapq.nsmallest(3, (f"{key}: {why}" for key, why in sums.conflicts.items()))
        old = body.get("status") or {}
        found = (per_kind, step.failing, step.owner_paused, examples, progress, sums.kinds())
        if (
            not worker.status_due
            and worker.status_found[1] is old
            and worker.status_found[0] == found
        ):
            return None  # found what the last pass found, and the status it left is unchanged
        steps = waves.steps_of(policy)
        position = progress.moved.position
        wave = status.Wave(
            phase=progress.moved.phase,
            step=position.step,
            steps=len(steps),
            name=steps[position.step].name,
            policy=policy.name,
            resume_at=None
            if progress.moved.resume_at is None
            else stepping.stamp(progress.moved.resume_at),
            stable=progress.stable or "",
        )
        new = status.policy_status(
            policy,
            counts,
            old,
            kinds=sums.kinds(),
            failing=step.failing,
            owner_paused=step.owner_paused,
            conflict_examples=examples,
            now=status_time(),
            wave=wave,
            rollout=progress.status(policy),
        )
        exporting.export(worker, policy, new, per_kind)
        if {k: old.get(k) for k in new} == new:
            worker.status_due = False
            worker.status_found = (found, old)
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


def _same(old: tally.Entry, todo: rollout.Item, shown: rollout.Item) -> bool:
    """Whether `tally.entry` would classify the workload as `old` again: the same snapshot
    (the cache replaces it on every change) and the same planned action (the plan memo's, made
    again when anything it reads changed), shown as it is carried out, and nothing in it waiting
    on the clock (`fails_at`). The resync's full passes of a hundred policies at rest spent
    half their time classifying what had not changed."""
    return (
        todo is shown
        and old.item.deployment is todo.deployment
        and old.item.action is todo.action
        and old.fails_at is None
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def status_time() -> str:
    """A status timestamp: RFC 3339, to the second."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
