"""The runtime: the workers of every policy, and the triggers that wake them. Knows nothing of
Kopf: the handlers feed the watched state in and run one worker coroutine per policy on Kopf's
loop, where everything else runs too (the workload watches, the writes, the Events).

A worker waits for a trigger without holding a thread, so any number of policies are served.
A pass walks only the workloads its policy concerns (the cache keeps them indexed), plans in
slices that yield to the loop (`passes`) and in its turn among every policy's passes (`pacing`),
so planning never holds up the watches, the writes or the liveness probe; writes go
`writer.WRITERS` at a time. What deleted policies leave behind is `cleanup`'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from sidecar_operator import metrics
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.names import HISTORY_POLICY_LABEL
from sidecar_operator.core import admission, selection, status
from sidecar_operator.core.types import Key
from sidecar_operator.engine import history, writer
from sidecar_operator.engine.cleanup import Cleanup, MetadataSource
from sidecar_operator.engine.flags import Flag
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.engine.pacing import Pacer
from sidecar_operator.engine.passes import STATUS_INTERVAL, Passes, status_time
from sidecar_operator.engine.reporting import Announcement, EventSink, Reporter, key_of
from sidecar_operator.engine.watches import Listings
from sidecar_operator.engine.worker import Worker
from sidecar_operator.engine.writer import Outcome, Writer
from sidecar_operator.kube.client import ApiError
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.history import Histories
from sidecar_operator.state.plans import Plans
from sidecar_operator.state.rollouts import Rollouts

log = structlog.get_logger()

# A new policy's first pass waits until no other new policy has arrived for SETTLE s, at most
# SETTLE_MAX s (see `_settled`).
SETTLE = 0.2
SETTLE_MAX = 2.0
GATHER = 0.02  # a pass woken by workload events waits this long for the events that follow


class Api(writer.Api, MetadataSource, history.Api, Protocol):
    async def patch_policy_status(
        self, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...


class Runtime:
    def __init__(
        self,
        api: Api,
        events: EventSink,
        *,
        leadership: Leadership,
        operator_namespace: str | None,
        resync_seconds: float,
        shard: str | None = None,
        on_first_listing: Callable[[], object] | None = None,
    ) -> None:
        self.api = api
        self.shard = shard  # the policies this operator serves (`core.selection.serves`)
        self.leadership = leadership
        self.operator_namespace = operator_namespace
        self.resync_seconds = resync_seconds
        self.on_first_listing = on_first_listing  # the process's hook, once the cache is whole
        self.cache = Cache(operator_namespace=operator_namespace)
        self.histories = Histories()
        self.rollouts = Rollouts(self.cache, self.histories, operator_namespace=operator_namespace)
        self.plans = Plans(self.cache, self.rollouts, operator_namespace=operator_namespace)
        # Where the policies' revision histories are kept.
        self.history_namespace = operator_namespace or "default"
        self.keeper = history.Keeper(
            api, self.histories, leadership=leadership, namespace=self.history_namespace
        )
        self.reporter = Reporter(events, self.cache)
        self.writer = Writer(
            api, self.cache, self.reporter, plans=self.plans, leadership=leadership
        )
        self.indexed = Flag()  # every policy and namespace is in the cache
        self._known: set[str] = set()  # of policies and namespaces, those listed whole
        self.listings = Listings()  # per kind: is the cache complete
        # Called with the kinds to watch whenever they may have changed (`engine.watches`).
        self.watch_kinds: Callable[[frozenset[WorkloadKind]], None] | None = None
        # Called when the snapshots must keep more of each workload: every kind is listed again.
        self.relist: Callable[[], None] | None = None
        self.passes = Passes(self.cache, self.plans, self.rollouts, self.reporter)
        self.pacer = Pacer()
        self.cleanup = Cleanup(
            api,
            self.cache,
            self.writer,
            self.reporter,
            leadership=leadership,
            listings=self.listings,
        )
        self.workers: dict[str, Worker] = {}
        self.arrived = 0.0  # monotonic time the latest new policy's worker was made

    # -- state ----------------------------------------------------------------------------

    def worker(self, name: str) -> Worker:
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = Worker(name)
            self.arrived = time.monotonic()
        return worker

    # -- triggers from the watches ---------------------------------------------------------

    def workload_changed(self, workload: Mapping[str, Any], *, deleted: bool) -> None:
        """Keep the workload's snapshot and wake the workers of the policies it concerned
        before or concerns now (one that stopped selecting it counts it no more). Never waits
        (called from a watch): removals go on as tasks of their own."""
        key = key_of(workload)
        held = self.cache.workload(key)
        if not deleted and held is not None and _same_version(held, workload):
            return  # our own write's answer, held already: nothing new
        before = self.cache.concerned(key)
        if deleted:
            self.cache.drop_workload(key)
            self.plans.forget(key)
            self.reporter.forget_workload(key)
            now: frozenset[str] = frozenset()
        else:
            record = self.cache.put_workload(workload)
            now = self.cache.concerned(key)
            if self.leadership.active and any(self.cache.policy(name) for name in now):
                self.reporter.unclear_opt_out(record, selection.unclear_opt_out(record))
        for name in before | now:
            worker = self.workers.get(name)  # none yet: its first pass covers everything
            if worker is not None:
                worker.changed(key)
        orphans = self.cache.gone(now)
        if orphans:
            self.cleanup.remove_orphans(record, orphans)

    def became(self, active: bool) -> None:
        """This replica became the active one (or a standby): catch up on what the other left."""
        if active:
            self.cleanup.sweep()
            if self.indexed.is_set():
                self.cleanup.start_sweeps()
            self.poke_all()
        else:
            metrics.stand_by()

    # -- triggers from the policy and namespace watches, in every replica ---------------------

    def policy_seen(self, policy: dict[str, Any], deleted: bool) -> None:
        name = policy["metadata"]["name"]
        if not deleted and not selection.serves(self.shard, policy["metadata"].get("labels")):
            if self.cache.put_foreign(name):  # relabelled: what it added is the other's now
                log.info("Policy left to another operator", policy=name)
                self.forget(name)
                self._watch_wanted_kinds()
            return
        kept = self.cache.annotation_keys
        if deleted:
            self.cache.drop_policy(name)
        else:
            self.cache.put_policy(policy)
        self._relist_if_more_annotations(kept)
        self.policy_changed(name)

    def _relist_if_more_annotations(self, kept: frozenset[str]) -> None:
        """A policy names an annotation the snapshots did not keep (a placeholder reads it on
        the workload, podMetadata sets it on the pod template): until listed again, every
        workload would seem to lack it, so no pass runs, and the snapshots go (the listing
        brings each at the version held, which an event of a held version does not replace)."""
        if self.cache.annotation_keys == kept or self.relist is None:
            return
        for kind in self.cache.kinds_wanted():
            self.kind_dropped(kind)
        self.relist()

    def policies_listed(self, seen: list[tuple[str, str]]) -> None:
        """Every policy there is: forget those deleted while no watch ran."""
        for name in self.cache.policy_names() - {name for _, name in seen}:
            served = self.cache.policy(name) is not None
            self.cache.drop_policy(name)
            if served:
                self.policy_changed(name)
        self._listed("policies")

    def namespace_seen(self, namespace: dict[str, Any], deleted: bool) -> None:
        metadata = namespace["metadata"]
        if deleted:
            changed = self.cache.drop_namespace(metadata["name"])
        else:
            changed = self.cache.put_namespace(metadata["name"], metadata.get("labels") or {})
        if changed:
            self.poke_all()

    def revision_seen(self, revision: dict[str, Any], deleted: bool) -> None:
        """A ControllerRevision of a policy's history: what its rollout's stable content is."""
        held = self.histories.put(revision, deleted=deleted)
        if held is not None:
            # The stable content is planned too: the annotations it names are kept.
            kept = self.cache.annotation_keys
            self.cache.annotation_keys |= held.content.annotation_keys
            self._relist_if_more_annotations(kept)
        policy = (revision.get("metadata", {}).get("labels") or {}).get(HISTORY_POLICY_LABEL)
        if policy and (worker := self.workers.get(policy)) is not None:
            worker.poke()

    def revisions_listed(self, seen: list[tuple[str, str]]) -> None:
        self.histories.retain({name for _, name in seen})
        self._listed("revisions")

    def namespaces_listed(self, seen: list[tuple[str, str]]) -> None:
        for name in self.cache.namespaces() - {name for _, name in seen}:
            self.cache.drop_namespace(name)
        self._listed("namespaces")
        self.poke_all()

    def _listed(self, what: str) -> None:
        """Policies, Namespaces and revisions are known: workloads may be listed and planned."""
        self._known.add(what)
        if self._known >= {"policies", "namespaces", "revisions"} and not self.indexed.is_set():
            self.indexed.set()
            self.cleanup.start_sweeps()

    def policy_changed(self, name: str) -> None:
        """Wake the policy's worker, without waiting for its turn if its spec moved (a new
        generation) or it is being deleted: the pace between passes is set for a rollout's
        status churn, and a user waits on an edit. Its own status writes change no generation
        and keep to the pace."""
        worker = self.worker(name)
        entry = self.cache.policy(name)
        if entry is None or entry[0].deleting or entry[0].asked != worker.asked:
            worker.urgent.set()
        worker.poke()
        self._watch_wanted_kinds()

    def _watch_wanted_kinds(self) -> None:
        if self.watch_kinds is not None:
            self.watch_kinds(self.cache.kinds_wanted())

    def workloads_listed(self, kind: WorkloadKind, keys: Iterable[Key]) -> None:
        """A complete listing of a kind: forget what it lacks (deleted while no watch ran);
        from now on the workers may count on the cache for it."""
        for key in self.cache.retain_workloads(kind, keys):
            self.plans.forget(key)
        if self.on_first_listing is not None:
            self.on_first_listing()
            self.on_first_listing = None
        self.listings.listed(kind)
        self.poke_all()

    def kind_dropped(self, kind: WorkloadKind) -> None:
        """No policy needs this kind any more: its watch stopped, and its snapshots go."""
        self.listings.unlisted(kind)
        for key in self.cache.retain_workloads(kind, ()):
            self.plans.forget(key)

    def poke_all(self) -> None:
        """Every policy plans every workload again (a listing, a namespace, a takeover)."""
        for worker in self.workers.values():
            worker.recount()

    # -- one policy's loop -----------------------------------------------------------------

    async def run_worker(self, name: str) -> None:
        """Runs until cancelled: Kopf cancels it when the policy is deleted, when this replica
        stands by, and when the operator stops."""
        worker = self.worker(name)
        await self.indexed.wait()
        await self.listings.wait(self.cache.kinds_of(name))
        await self._settled()
        last_pass = -self.resync_seconds
        worker.poke()
        while True:
            poked = await worker.wake.wait_at_most(self._next_due(worker, last_pass))
            if poked and worker.dirty and not worker.full and not worker.urgent.is_set():
                # Workload events come in bursts: a create brings its add, the write's answer
                # and its controller's status updates within milliseconds. One pass for them.
                await worker.urgent.wait_at_most(GATHER)
            self.reporter.flush(name)
            now = time.monotonic()
            status_due = worker.status_due and now - worker.status_written >= STATUS_INTERVAL
            if now - last_pass >= self.resync_seconds:
                worker.full = True
            elif not poked and not status_due and not self._come_due(worker):
                continue
            if not self.leadership.active:
                await asyncio.sleep(1.0)  # a standby writes nothing; Kopf stops this worker soon
                continue
            if not self.listings.complete(kinds := self.cache.kinds_of(name)):
                # A kind the policy now needs is being listed; its listing wakes the worker.
                await self.listings.wait(kinds)
                worker.poke()
                continue
            last_pass = time.monotonic()
            started = time.perf_counter()
            try:
                failed = await self.run_pass(worker)
                failure = "a write got no answer, or one to try later" if failed else ""
            except (ApiError, ConnectionError) as error:
                failure = str(error)
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

    def _next_due(self, worker: Worker, last_pass: float) -> float:
        """Seconds until the worker has something to do unpoked: its resync pass, a status held
        back by STATUS_INTERVAL, or aggregated Events. A hundred idle workers that woke every
        second to find nothing due took a tenth of the operator's CPU at rest."""
        due = last_pass + self.resync_seconds
        come_due = self.passes.deadlines.due_in(worker.name, worker.resume_at)
        if come_due is not None:
            due = min(due, time.monotonic() + come_due)
        if worker.status_due:
            due = min(due, worker.status_written + STATUS_INTERVAL)
        events = self.reporter.events_due(worker.name)
        if events is not None:
            due = min(due, events)
        return max(0.0, due - time.monotonic())

    def _come_due(self, worker: Worker) -> bool:
        due = self.passes.deadlines.due_in(worker.name, worker.resume_at)
        return due is not None and due <= 0

    async def _settled(self) -> None:
        """Policies applied together (`kubectl apply -f` of a directory) arrive one by one. A
        first pass before the others arrive can inject a container that a higher-priority one
        among them wins, and take it back a moment later: two rollouts for nothing (of 100
        Deployments when the bench applied its 100 policies, 4 pairs of them clashing)."""
        deadline = time.monotonic() + SETTLE_MAX
        while (left := min(self.arrived + SETTLE, deadline) - time.monotonic()) > 0:
            await asyncio.sleep(left)

    async def run_pass(self, worker: Worker) -> bool:
        """Plan in its turn (`pacing`), write the status if it changed, send the writes the
        rollout allows; returns whether any write must be tried again."""
        full = self.passes.full_due(worker)
        async with self.pacer.turn(worker.urgent, full=full):
            # Whatever woke it while it waited for its turn, this pass sees.
            worker.wake.clear()
            worker.urgent.clear()
            planned = await self.passes.prepare(worker)
            if full:
                self.pacer.spent(planned.cpu)
        worker.resume_at = planned.resume_at
        if planned.policy is not None:
            await self.keeper.sync(planned.policy, planned.stable)
        if planned.status is not None and self.leadership.active:
            entry = self.cache.policy(worker.name)
            before = _step(entry[1].get("status") if entry else None)
            written = await self.api.patch_policy_status(worker.name, planned.status)
            if written is not None:
                self.cache.put_policy(written)  # the next pass sees its step at once
                if _step(written.get("status")) != before:
                    # A step (or a new rollout) began: the next pass writes its workloads, and
                    # a user waits on it as on an edit, so it does not wait for its turn.
                    worker.urgent.set()
                    worker.poke()
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
            for _, workload in planned.writes:
                worker.changed(key_of(workload))  # the next pass counts what the writes did
        return Outcome.FAILED in outcomes

    def admit(
        self, workload: Mapping[str, Any], old: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The workload being created, or updated by its owner from `old`, as the controller
        would leave it now (`core.admission`), or None: nothing changes, or the policies are
        not known yet (the controller adds what they add once they are)."""
        if not self.indexed.is_set():
            return None
        return admission.admitted(
            workload,
            self.cache.namespace_labels(workload["metadata"]["namespace"]),
            [policy for policy, _ in self.cache.policies().values()],
            operator_namespace=self.operator_namespace,
            old=old,
            may_roll=lambda action: self.passes.may_write(action.policy, workload, action),
            rollouts=self.rollouts.every(),
        )

    async def removal_held(self, name: str, failures: list[str]) -> None:
        """Say on the policy being deleted why its sidecars stay (`status.removal_held`)."""
        entry = self.cache.policy(name)
        if entry is None:
            return
        old = entry[1].get("status") or {}
        new = status.removal_held(entry[0], old, failures, now=status_time())
        metrics.set_conditions(name, new["conditions"])
        if {key: old.get(key) for key in new} != new:
            await self.api.patch_policy_status(name, new)

    def forget(self, name: str) -> None:
        self.workers.pop(name, None)
        self.reporter.forget(name)
        metrics.forget(name, (kind.value for kind in WorkloadKind), step=True)
        self.rollouts.forget(name)
        self.passes.forget(name)


def _same_version(held: Mapping[str, Any], workload: Mapping[str, Any]) -> bool:
    old, new = held["metadata"], workload["metadata"]
    version = new.get("resourceVersion")
    return (
        bool(version) and old.get("resourceVersion") == version and old.get("uid") == new.get("uid")
    )


def _step(status: Mapping[str, Any] | None) -> tuple[Any, Any]:
    """Which rollout a status says is under way, and at which step."""
    status = status or {}
    return (status.get("updateRevision"), status.get("currentStep"))
