"""The runtime: the workers of every policy, and the triggers that wake them. Knows nothing of
Kopf: the handlers feed the watched state in and run one worker coroutine per policy on Kopf's
loop, where everything else runs too (the Deployment watch, the writes, the Events).

A worker waits for a trigger without holding a thread, so any number of policies are served.
Its pass plans in slices that yield to the loop (`passes`), so that a pass over thousands of
Deployments never holds up the watches, the writes or the liveness probe; its writes go
`writer.WRITERS` at a time. What deleted policies leave behind is `cleanup`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from sidecar_operator import metrics
from sidecar_operator.core.ownership import policies_with_fields
from sidecar_operator.core.selection import deployment_matches
from sidecar_operator.core.types import Key
from sidecar_operator.engine import writer
from sidecar_operator.engine.cleanup import Cleanup
from sidecar_operator.engine.flags import Flag
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.engine.passes import STATUS_INTERVAL, Passes
from sidecar_operator.engine.reporting import Announcement, EventSink, Reporter, key_of
from sidecar_operator.engine.worker import Worker
from sidecar_operator.engine.writer import Outcome, Writer
from sidecar_operator.kube.client import ApiError
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.plans import Plans

log = structlog.get_logger()

PASS_REST = 10  # after a pass, rest this many times the CPU time it took, at most MAX_REST s
MAX_REST = 5.0


class Api(writer.Api, Protocol):
    async def patch_policy_status(self, name: str, status: dict[str, Any]) -> None: ...


class Runtime:
    def __init__(
        self,
        api: Api,
        events: EventSink,
        *,
        leadership: Leadership,
        operator_namespace: str | None,
        resync_seconds: float,
        on_first_listing: Callable[[], object] | None = None,
    ) -> None:
        self.api = api
        self.leadership = leadership
        self.operator_namespace = operator_namespace
        self.resync_seconds = resync_seconds
        self.on_first_listing = on_first_listing  # the process's hook, once the cache is whole
        self.cache = Cache()
        self.plans = Plans(self.cache, operator_namespace=operator_namespace)
        self.reporter = Reporter(events, self.cache)
        self.writer = Writer(api, self.cache, self.reporter, plans=self.plans)
        self.indexed = Flag()  # every policy and namespace is in the cache
        self.listed = Flag()  # every Deployment listed once: the cache is complete
        self.passes = Passes(self.cache, self.plans, self.reporter)
        self.cleanup = Cleanup(
            self.cache,
            self.writer,
            self.reporter,
            leadership=leadership,
            listed=self.listed,
        )
        self.workers: dict[str, Worker] = {}

    # -- state ----------------------------------------------------------------------------

    def worker(self, name: str) -> Worker:
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = Worker(name)
        return worker

    # -- triggers from the watches ---------------------------------------------------------

    def deployment_changed(self, deployment: Mapping[str, Any], *, deleted: bool) -> None:
        """Keep the Deployment's snapshot and wake the workers of the policies that match it or
        have fields on it: every Deployment in the cluster is watched, and most concern no
        policy. Never waits (called from the watch): removals go on as tasks of their own."""
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
            # One already woken needs no second look: with a hundred policies, matching each
            # one against every event of a listing or a rollout was most of the watch's CPU.
            if (
                worker is not None
                and not worker.wake.is_set()
                and (
                    name in involved
                    or deployment_matches(
                        policy.spec, record, labels, operator_namespace=self.operator_namespace
                    )
                )
            ):
                worker.poke()
        if not deleted and involved - set(policies):
            self.cleanup.remove_orphans(record, involved - set(policies))

    def became(self, active: bool) -> None:
        """This replica became the active one (or a standby): catch up on what the other left."""
        if active:
            self.cleanup.sweep()
            self.poke_all()

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
        for worker in self.workers.values():
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
            poked = await worker.wake.wait_at_most(0.5 if worker.status_due else 1.0)
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
            # are not counted, only the planning.
            await worker.rest(min(MAX_REST, PASS_REST * done.cpu))

    async def run_pass(self, worker: Worker) -> PassResult:
        """Plan, write the status if it changed, send the writes the rollout allows; returns the
        planning's CPU time and whether any write must be tried again."""
        planned = await self.passes.prepare(worker)
        if planned.status is not None:
            await self.api.patch_policy_status(worker.name, planned.status)
            worker.status_written = time.monotonic()
        outcomes: list[Outcome] = []
        if planned.writes:
            announced: list[Announcement] = []
            try:
                outcomes = await self.writer.execute_all(planned.writes, announced.append)
            finally:
                # After the batch, so they do not compete with its writes.
                for announcement in announced:
                    self.reporter.announce(announcement)
            worker.poke()  # the next pass counts what the writes did
        return PassResult(planned.cpu, failed=Outcome.FAILED in outcomes)

    def forget(self, name: str) -> None:
        self.workers.pop(name, None)
        self.reporter.forget(name)
        metrics.forget(name)


@dataclass(frozen=True)
class PassResult:
    cpu: float  # seconds of CPU the planning took
    failed: bool  # some write got no answer or a "try later": pass again soon
