"""Carrying out the core's plans for every policy. Knows nothing of Kopf: the handlers feed the
watched state into `cache` and run one worker coroutine per policy on Kopf's loop.

A worker waits for a trigger without holding a thread, so any number of policies are served.
Its pass plans in a worker thread (the asyncio default executor: a few threads, whatever the
number of policies), since planning thousands of Deployments would stall the loop; its writes
run as coroutines on the HTTP loop (`kubeapi.LoopThread`), `writer.WRITERS` in flight.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from sidecar_operator import metrics
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, rollout, status
from sidecar_operator.core.ownership import policies_with_fields
from sidecar_operator.core.selection import deployment_matches
from sidecar_operator.core.types import Action, Key, Kind
from sidecar_operator.engine import writer
from sidecar_operator.engine.flags import Flag
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.engine.reporting import Announcement, EventSink, Reporter, key_of
from sidecar_operator.engine.writer import Outcome, Writer
from sidecar_operator.kube.client import ApiError, LoopThread
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.plans import Plans, plan_inputs

log = structlog.get_logger()

STATUS_INTERVAL = 2.0  # seconds between a policy's status writes while it changes
PASS_REST = 10  # after a pass, rest this many times the CPU time it took, at most MAX_REST s
MAX_REST = 5.0
RETRY_FIRST = 1.0  # after a failed pass or write, try again this soon, doubling up to RETRY_MAX
RETRY_MAX = 10.0
RELEASED = frozenset({Outcome.WRITTEN, Outcome.GONE, Outcome.NOTHING})


class Api(writer.Api, Protocol):
    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> None: ...


@dataclass
class Worker:
    """One policy's triggers and status pacing."""

    name: str
    wake: Flag
    urgent: Flag  # cuts a rest short: the policy itself changed
    generation: int = 0  # of the policy, as the last pass saw it
    status_written: float = 0.0
    status_due: bool = False  # a changed status waits for STATUS_INTERVAL to pass
    retry: float = 0.0  # seconds before trying a failed pass again; 0 when the last one went well

    def poke(self) -> None:
        self.wake.set()

    async def rest(self, seconds: float) -> None:
        """Pause between passes; an edit of the policy ends it early."""
        await self.urgent.wait(seconds)

    def failed(self) -> float:
        self.retry = min(RETRY_MAX, max(RETRY_FIRST, 2 * self.retry))
        return self.retry


@dataclass(frozen=True)
class PassPlan:
    """What one pass decided: the status to write (None: unchanged, or not due yet) and the
    writes the rollout allows now."""

    status: dict[str, Any] | None
    writes: list[tuple[Action, Mapping[str, Any]]] = field(default_factory=list)
    cpu: float = 0.0


class Runtime:
    """Constructed on the operator's loop, where the workers run."""

    def __init__(
        self,
        api: Api,
        events: EventSink,
        *,
        http: LoopThread,
        leadership: Leadership,
        operator_namespace: str | None,
        resync_seconds: float,
        on_first_listing: Callable[[], object] | None = None,
    ) -> None:
        self.api = api
        self.http = http  # where the writes run: the loop `api`'s coroutines belong to
        self.loop = asyncio.get_running_loop()
        self.leadership = leadership
        self.operator_namespace = operator_namespace
        self.resync_seconds = resync_seconds
        self.on_first_listing = on_first_listing  # the process's hook, once the cache is whole
        self.cache = Cache()
        self.plans = Plans(self.cache, operator_namespace=operator_namespace)
        self.reporter = Reporter(events, self.cache)
        self.writer = Writer(api, self.cache, self.reporter, plans=self.plans)
        self.indexed = threading.Event()  # every policy and namespace is in the cache
        self.listed = Flag(self.loop)  # every Deployment listed once: the cache is complete
        self.workers: dict[str, Worker] = {}
        self._workers_lock = threading.Lock()

    # -- state ----------------------------------------------------------------------------

    def worker(self, name: str) -> Worker:
        with self._workers_lock:
            worker = self.workers.get(name)
            if worker is None:
                worker = self.workers[name] = Worker(name, Flag(self.loop), Flag(self.loop))
            return worker

    # -- triggers from the watches ---------------------------------------------------------

    def deployment_changed(self, deployment: Mapping[str, Any], *, deleted: bool) -> None:
        """Keep the Deployment's snapshot and wake the workers of the policies that match it or
        have fields on it: every Deployment in the cluster is watched, and most concern no
        policy. Never blocks (called from the watch): writes go to the HTTP loop."""
        key = key_of(deployment)
        if deleted:
            self.cache.drop_deployment(key)
            self.plans.forget(key)
            record: Mapping[str, Any] = deployment
        else:
            record = self.cache.put_deployment(deployment)
        involved = policies_with_fields(record)
        labels = self.cache.namespace_labels(key[0])
        policies = self.cache.policies()
        for name, (policy, _) in policies.items():
            worker = self.workers.get(name)  # none yet: its first pass covers everything
            if worker is not None and (
                name in involved
                or deployment_matches(
                    policy.spec, record, labels, operator_namespace=self.operator_namespace
                )
            ):
                worker.poke()
        if not deleted and involved - set(policies):
            self._remove_orphans(record, involved - set(policies))

    def _remove_orphans(self, deployment: Mapping[str, Any], orphans: Iterable[str]) -> None:
        """Policies gone without their finalizer running: their field managers still name them.
        Only the active replica writes; it sweeps every Deployment when it becomes active."""
        if not self.leadership.active:
            return
        for orphan in sorted(orphans):
            self.http.spawn(
                self.writer.execute(planner.removal(orphan, deployment), deployment, self._post)
            )

    def became(self, active: bool) -> None:
        """This replica became the active one (or a standby): catch up on what the other left."""
        if active:
            self.sweep_orphans()
            self.poke_all()

    def sweep_orphans(self) -> None:
        """Remove what deleted policies left on any Deployment."""
        if not self.listed.is_set():
            return  # not before the cache is complete; the first listing removes them as it goes
        known = set(self.cache.policies())
        for _, deployment in self.cache.deployments():
            orphans = policies_with_fields(deployment) - known
            if orphans:
                self._remove_orphans(deployment, orphans)

    def policy_changed(self, name: str) -> None:
        """Wake the policy's worker, at once if its spec moved (a new generation) or it is
        being deleted: the rest between passes paces a rollout's status churn, and an edit that
        waited it out (up to MAX_REST s) delayed an update's first write (1.55 s against 0.35 s
        for an inject, once in three at N=1000). Its own status writes change no generation and
        keep to the pace."""
        worker = self.worker(name)
        entry = self.cache.policy(name)
        if entry is None or entry[0].deleting or entry[0].generation != worker.generation:
            worker.urgent.set()
        worker.poke()

    def deployments_listed(self, keys: Iterable[Key]) -> None:
        """A complete listing: forget what it lacks (deleted while no watch ran); from now on
        the workers may count on the cache."""
        for key in self.cache.retain_deployments(keys):
            self.plans.forget(key)
        if not self.listed.is_set() and self.on_first_listing is not None:
            self.on_first_listing()
        self.listed.set()
        self.poke_all()

    def poke_all(self) -> None:
        with self._workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.poke()

    # -- one policy's loop -----------------------------------------------------------------

    async def run_worker(self, name: str) -> None:
        """Runs until cancelled: Kopf cancels it when the policy is deleted, when this replica
        stands by, and when the operator stops."""
        worker = self.worker(name)
        entry = self.cache.policy(name)
        if entry and not (
            entry[0].spec.selector.match_labels or entry[0].spec.selector.match_expressions
        ):
            self.reporter.selects_everything(name)
        await self.listed.wait()
        last_pass = -self.resync_seconds
        worker.poke()
        while True:
            poked = await worker.wake.wait(0.5 if worker.status_due else 1.0)
            self.reporter.flush(name)
            now = time.monotonic()
            status_due = worker.status_due and now - worker.status_written >= STATUS_INTERVAL
            if not poked and not status_due and now - last_pass < self.resync_seconds:
                continue
            if not self.leadership.active:
                await asyncio.sleep(1.0)  # a standby writes nothing; Kopf stops this worker soon
                continue
            worker.wake.clear()
            worker.urgent.clear()
            last_pass = time.monotonic()
            started = time.perf_counter()
            try:
                done = await self.run_pass(worker)
                failure = "a write got no answer, or one to try later" if done.failed else ""
            except (ApiError, ConnectionError) as error:
                done, failure = PassResult(0.0, failed=True), str(error)
            finally:
                metrics.PASS_SECONDS.observe(time.perf_counter() - started)
            metrics.PASSES.labels(policy=name).inc()
            if failure:
                delay = worker.failed()
                log.warning("Pass failed", policy=name, error=failure, retry_in=delay)
                await asyncio.sleep(delay)
                worker.poke()
                continue
            worker.retry = 0.0
            # A pass walks every Deployment the policy concerns, and a rollout's status changes
            # poke it many times a second: back to back, passes took most of a core while the
            # controllers rolled out thousands of Pods. Resting keeps it to a tenth; the writes
            # ran on the HTTP loop and do not count.
            await worker.rest(min(MAX_REST, PASS_REST * done.cpu))

    async def run_pass(self, worker: Worker) -> PassResult:
        """Plan (in a thread), write the status if it changed, send the writes the rollout
        allows; returns the planning's CPU time and whether any write must be tried again."""
        planned = await asyncio.to_thread(self.prepare_pass, worker)
        if planned.status is not None:
            await self.http.wait(self.api.patch_policy_status(worker.name, planned.status))
            worker.status_written = time.monotonic()
        outcomes: list[Outcome] = []
        if planned.writes:
            announced: list[Announcement] = []
            try:
                outcomes = await self.http.wait(
                    self.writer.execute_all(planned.writes, announced.append)
                )
            finally:
                # After the batch, so they do not compete with its writes.
                for announcement in announced:
                    self.reporter.announce(announcement)
            worker.poke()  # the next pass counts what the writes did
        return PassResult(planned.cpu, failed=Outcome.FAILED in outcomes)

    def prepare_pass(self, worker: Worker) -> PassPlan:
        """Everything a pass decides, from the cache alone."""
        cpu = time.thread_time()
        entry = self.cache.policy(worker.name)
        if entry is None:
            return PassPlan(None)
        policy, body = entry
        worker.generation = policy.generation
        if policy.deleting:
            return PassPlan(None)  # the deletion handler removes everything, holding the finalizer
        items, shown = self._items(worker.name)
        strategy = policy.spec.update_strategy
        step = rollout.step(
            items,
            max_concurrent=strategy.max_concurrent,
            paused=strategy.paused,
            policy_created=policy.created,
        )
        memory = self.reporter.memory(worker.name)
        for item in shown:
            if item.action.kind is Kind.CONFLICT:
                self.reporter.conflict(worker.name, item.deployment, item.action.conflict)
            else:
                memory.no_conflict(item.key)
        self.reporter.halted(worker.name, step.failing)
        return PassPlan(
            self._status(worker, policy, body, shown, step),
            [(item.action, item.deployment) for item in step.writes],
            time.thread_time() - cpu,
        )

    def _items(self, policy: str) -> tuple[list[rollout.Item], list[rollout.Item]]:
        """This policy's planned action on every Deployment that matches or carries it: to
        carry out, and to show. They differ only where a reported Deployment whose writes kept
        failing is due another try: it is tried, and shown as the conflict it is until a write
        goes through."""
        items, shown = [], []
        memory = self.reporter.memory(policy)
        for key, deployment in self.cache.deployments():
            mine = next((a for a in self.plans.plan(deployment) if a.policy == policy), None)
            if mine is None:
                memory.no_conflict(key)
                continue
            rejected = memory.rejected.get(key)
            failing = memory.failing.get(key)
            if (
                rejected
                and mine.kind is Kind.APPLY
                and rejected.revision == mine.revision
                and rejected.inputs == plan_inputs(deployment)
            ):
                # The same content was refused for the Deployment as it is: a conflict until
                # either changes.
                mine = Action(
                    mine.policy, Kind.CONFLICT, conflict=rejected.reason, revision=mine.revision
                )
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
    ) -> dict[str, Any] | None:
        """The status to write now, or None: unchanged, or a rollout's moving counts that wait
        for STATUS_INTERVAL to pass (then `status_due` says so)."""
        counts = status.count((item.action, item.deployment) for item in items)
        metrics.set_counts(
            worker.name,
            matched=counts.matched,
            updated=counts.updated,
            ready=counts.ready,
            conflicts=counts.conflicts,
        )
        examples = sorted(
            f"{item.key[0]}/{item.key[1]}: {item.action.conflict}"
            for item in items
            if item.action.kind is Kind.CONFLICT
        )
        old = body.get("status") or {}
        new = status.policy_status(
            policy, counts, old, failing=step.failing, conflict_examples=examples, now=_now()
        )
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

    # -- deletion --------------------------------------------------------------------------

    async def remove_everywhere(self, name: str) -> list[str]:
        """Release everything the policy owns on every Deployment; returns the failures."""
        carrying = [
            deployment
            for _, deployment in self.cache.deployments()
            if name in policies_with_fields(deployment)
        ]
        announced: list[Announcement] = []
        try:
            outcomes = await self.http.wait(
                self.writer.execute_all(
                    ((planner.removal(name, d), d) for d in carrying), announced.append
                )
            )
        finally:
            for announcement in announced:
                self.reporter.announce(announcement)
            self.reporter.flush(name, now=True)
        return [
            "/".join(key_of(deployment)) + f": {outcome}"
            for deployment, outcome in zip(carrying, outcomes, strict=True)
            if outcome not in RELEASED
        ]

    def forget(self, name: str) -> None:
        with self._workers_lock:
            self.workers.pop(name, None)
        self.reporter.forget(name)
        metrics.forget(name)

    def _post(self, announcement: Announcement) -> None:
        self.reporter.announce(announcement)


@dataclass(frozen=True)
class PassResult:
    cpu: float  # seconds of CPU the planning took
    failed: bool  # some write got no answer or a "try later": pass again soon


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
