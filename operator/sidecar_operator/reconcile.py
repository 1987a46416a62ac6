"""Carrying out the core's plans: one worker thread per policy, writes with retries, status,
and aggregated Events. Knows nothing of Kopf: the handlers feed the watched state into `cache`.
A worker's writes run as coroutines on the HTTP loop (`kubeapi.LoopThread`), WRITERS in flight,
while the worker waits for the batch."""

from __future__ import annotations

import asyncio
import collections
import datetime
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from sidecar_operator import metrics, render, rollout, status
from sidecar_operator.api import Policy
from sidecar_operator.cache import Cache, Key
from sidecar_operator.kubeapi import ApiError, LoopThread
from sidecar_operator.ownership import policies_with_fields
from sidecar_operator.render import Action, Kind
from sidecar_operator.selection import deployment_matches

log = structlog.get_logger()
Announcement = tuple[dict[str, Any], str, str]  # a Deployment's Normal Event: ref, reason, message

MAX_ATTEMPTS = 3
EVENT_NAMES_SHOWN = 5
EVENT_INTERVAL = 10.0  # seconds between a policy's aggregated Events of one reason
STATUS_INTERVAL = 2.0  # seconds between a policy's status writes while it changes
WRITERS = 128  # a batch's writes in flight at once. Against 64, on one N=1000 cluster over two
# sessions (five rounds each, alternated): inject/update/removal medians 3.23/4.42/2.35 s against
# 3.40/6.06/2.92 s, for 6 MB of connections (README, Performance).
PASS_REST = 10  # after a pass, rest this many times the CPU time it took, at most MAX_REST s
MAX_REST = 5.0
STOP_CHECK = 0.5  # seconds between looks at the daemon's stop flag while waiting


class Api(Protocol):
    async def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]: ...

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def patch_policy_status(self, name: str, status: dict[str, Any]) -> None: ...


class EventSink(Protocol):
    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclass
class Worker:
    """One policy's trigger and what it has reported."""

    name: str
    wake: threading.Event = field(default_factory=threading.Event)
    urgent: threading.Event = field(default_factory=threading.Event)  # cuts a rest short
    generation: int = 0  # of the policy, as the last pass saw it
    conflicts: dict[Key, str] = field(default_factory=dict)  # last reported, to report once
    rejected: dict[Key, tuple[str, str]] = field(default_factory=dict)  # key -> (rev, reason)
    halted_on: list[Key] = field(default_factory=list)  # last reported halt
    done: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    done_lock: threading.Lock = field(default_factory=threading.Lock)
    flushed: float = 0.0
    status_written: float = 0.0
    status_due: bool = False  # a changed status waits for STATUS_INTERVAL to pass

    def poke(self) -> None:
        self.wake.set()

    def rest(self, seconds: float, stopped: Callable[[], bool]) -> None:
        """Pause between passes; `urgent` (the policy itself changed) or a stop ends it early."""
        deadline = time.monotonic() + seconds
        while not stopped():
            left = deadline - time.monotonic()
            if left <= 0 or self.urgent.wait(min(left, STOP_CHECK)):
                return

    def record(self, reason: str, deployment: str) -> None:
        with self.done_lock:
            self.done[reason].append(deployment)

    def take_done(self) -> dict[str, list[str]]:
        with self.done_lock:
            done, self.done = self.done, collections.defaultdict(list)
        self.flushed = time.monotonic()
        return done


def _ref(deployment: Mapping[str, Any]) -> dict[str, Any]:
    metadata = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
    }


def _key(deployment: Mapping[str, Any]) -> Key:
    return deployment["metadata"]["namespace"], deployment["metadata"]["name"]


_PAST = {
    "inject": ("Injected", "added"),
    "update": ("Updated", "updated"),
    "repair": ("Repaired", "restored"),
    "remove": ("Removed", "removed"),
}


class Runtime:
    def __init__(
        self,
        api: Api,
        events: EventSink,
        *,
        loop: LoopThread,
        operator_namespace: str | None,
        resync_seconds: float,
        on_first_listing: Callable[[], object] | None = None,
    ) -> None:
        self.api = api
        self.events = events
        self.loop = loop  # where the writes run: the loop `api`'s coroutines belong to
        self.operator_namespace = operator_namespace
        self.resync_seconds = resync_seconds
        self.on_first_listing = on_first_listing  # the process's hook, once the cache is whole
        self.cache = Cache()
        self.indexed = threading.Event()  # every policy and namespace is in the cache
        self.listed = threading.Event()  # every Deployment listed once: the cache is complete
        self.workers: dict[str, Worker] = {}
        self._workers_lock = threading.Lock()
        # Plans per Deployment, valid while what they were planned from and the cache's epoch hold.
        self._plans: dict[Key, tuple[tuple[Any, ...], int, list[Action]]] = {}
        self._plans_lock = threading.Lock()

    # -- state ----------------------------------------------------------------------------

    def worker(self, name: str) -> Worker:
        with self._workers_lock:
            return self.workers.setdefault(name, Worker(name))

    def plan(self, deployment: Mapping[str, Any]) -> list[Action]:
        """The core's plan, reused while neither the Deployment's spec and metadata nor any
        policy or namespace label has changed: a pass over thousands of Deployments re-plans
        only what moved, and a rollout's many status changes move nothing."""
        key = _key(deployment)
        inputs = _plan_inputs(deployment)
        epoch = self.cache.epoch
        with self._plans_lock:
            cached = self._plans.get(key)
        if cached is not None and cached[0] == inputs and cached[1] == epoch and inputs:
            return cached[2]
        policies = [policy for policy, _ in self.cache.policies().values()]
        labels = self.cache.namespace_labels(key[0])
        actions = render.plan(
            deployment, labels, policies, operator_namespace=self.operator_namespace
        )
        with self._plans_lock:
            self._plans[key] = (inputs, epoch, actions)
        return actions

    # -- triggers from the watches ---------------------------------------------------------

    def deployment_changed(self, deployment: Mapping[str, Any], *, deleted: bool) -> None:
        """Keep the Deployment's snapshot and wake the workers of the policies that match it or
        have fields on it: every Deployment in the cluster is watched, and most concern no
        policy. Never blocks (called from the watch): writes go to the HTTP loop."""
        key = _key(deployment)
        if deleted:
            self.cache.drop_deployment(key)
            self._forget_plan(key)
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
        # Policies gone without their finalizer running: their annotation still names them.
        orphans = sorted(involved - set(policies))
        if deleted or not orphans:
            return  # the common case, on every event
        for orphan in orphans:
            action = Action(orphan, Kind.REMOVE, render.removal_body(record), reason="remove")
            self.loop.spawn(self.execute(action, record, self._announce))

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
            self._forget_plan(key)
        if not self.listed.is_set() and self.on_first_listing is not None:
            self.on_first_listing()
        self.listed.set()
        self.poke_all()

    def _forget_plan(self, key: Key) -> None:
        with self._plans_lock:
            self._plans.pop(key, None)

    def wait_listed(self, stopped: Callable[[], bool]) -> bool:
        while not self.listed.wait(0.5):
            if stopped():
                return False
        return True

    def poke_all(self) -> None:
        with self._workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.poke()

    # -- writing ---------------------------------------------------------------------------

    async def execute(
        self,
        action: Action,
        deployment: Mapping[str, Any],
        announce: Callable[[Announcement], None],
    ) -> str:
        """Send one action's body; on a 409, re-read and re-plan (never force over others).
        Returns the outcome: written, nothing, gone, rejected or conflict. The Deployment's
        Event goes to `announce`."""
        key = _key(deployment)
        bound = log.bind(policy=action.policy, namespace=key[0], deployment=key[1])
        current: Action | None = action
        last_error = ""
        for _ in range(MAX_ATTEMPTS):
            if current is None or current.body is None:
                return "nothing"
            try:
                written = await self.api.apply(
                    current.body, policy=current.policy, force=current.force
                )
            except ApiError as error:
                metrics.API_ERRORS.labels(status=str(error.status)).inc()
                if error.status == 404:
                    return self._count(current, "gone")
                if error.status == 422:
                    bound.warning("Patch rejected", reason=current.reason, error=error.message)
                    self._rejected(current, deployment, error.message)
                    return self._count(current, "rejected")
                if error.status != 409:
                    raise
                last_error = error.message
                fresh = await self.api.get_deployment(*key)
                if fresh is None:
                    return "gone"
                deployment = self.cache.put_deployment(fresh)
                current = next(
                    (a for a in self.plan(deployment) if a.policy == action.policy), None
                )
                continue
            record = self.cache.put_deployment(written)
            bound.info("Applied", action=current.reason, revision=current.revision or None)
            self._report(current, record, announce)
            return self._count(current, "written")
        bound.warning("Conflict persists", error=last_error)
        self._count(action, "conflict")
        self._conflict(
            action.policy, deployment, f"the API server keeps reporting a conflict: {last_error}"
        )
        return "conflict"

    @staticmethod
    def _count(action: Action, outcome: str) -> str:
        metrics.WRITES.labels(
            policy=action.policy, action=action.reason or action.kind.value, outcome=outcome
        ).inc()
        return outcome

    def _report(
        self,
        action: Action,
        deployment: Mapping[str, Any],
        announce: Callable[[Announcement], None],
    ) -> None:
        kind = action.reason if action.kind is not Kind.CONFLICT else "remove"
        reason, verb = _PAST.get(kind, ("Updated", "updated"))
        announce(
            (
                _ref(deployment),
                f"Sidecars{reason}",
                f"Sidecars of SidecarPolicy {action.policy} {verb}",
            )
        )
        worker = self.workers.get(action.policy)
        if worker is not None:
            worker.record(reason, "/".join(_key(deployment)))

    def _conflict(self, policy: str, deployment: Mapping[str, Any], message: str) -> None:
        key = _key(deployment)
        worker = self.worker(policy)
        if worker.conflicts.get(key) == message:
            return
        worker.conflicts[key] = message
        metrics.CONFLICTS.labels(policy=policy).inc()
        self.events(
            _ref(deployment),
            type="Warning",
            reason="SidecarConflict",
            message=f"SidecarPolicy {policy} skipped this Deployment: {message}",
        )
        self.events(
            _policy_ref(policy, self.cache),
            type="Warning",
            reason="Conflict",
            message=f"Skipped Deployment {key[0]}/{key[1]}: {message}",
        )

    def _rejected(self, action: Action, deployment: Mapping[str, Any], message: str) -> None:
        reason = f"the API server rejected the change: {message}"
        self.worker(action.policy).rejected[_key(deployment)] = (action.revision, reason)
        self._conflict(action.policy, deployment, reason)

    # -- one policy's loop -----------------------------------------------------------------

    def run_worker(self, name: str, stopped: Callable[[], bool]) -> None:
        """`stopped` is the daemon's stop flag: the policy is deleted or the operator stops."""
        worker = self.worker(name)
        entry = self.cache.policy(name)
        if entry and not (
            entry[0].spec.selector.match_labels or entry[0].spec.selector.match_expressions
        ):
            self.events(
                _policy_ref(name, self.cache),
                type="Warning",
                reason="SelectsEverything",
                message="spec.selector is empty: every Deployment in the matched "
                "namespaces gets this policy's sidecars",
            )
        if not self.wait_listed(stopped):
            return
        last_pass = 0.0
        worker.poke()
        while not stopped():
            poked = worker.wake.wait(0.5 if worker.status_due else 1.0)
            self.flush_events(worker)
            now = time.monotonic()
            status_due = worker.status_due and now - worker.status_written >= STATUS_INTERVAL
            if not poked and not status_due and now - last_pass < self.resync_seconds:
                continue
            worker.wake.clear()
            worker.urgent.clear()
            last_pass = time.monotonic()
            cpu = time.thread_time()
            with metrics.PASS_SECONDS.time():
                self.run_pass(worker)
            metrics.PASSES.labels(policy=name).inc()
            # A pass walks every Deployment the policy concerns, and a rollout's status changes
            # poke it many times a second: back to back, passes took most of a core while the
            # controllers rolled out thousands of Pods. Resting keeps it to a tenth; the writes
            # run in other threads, so a pass that waited for them does not rest longer.
            worker.rest(min(MAX_REST, PASS_REST * (time.thread_time() - cpu)), stopped)

    def _announce(self, announcement: Announcement) -> None:
        ref, reason, message = announcement
        self.events(ref, type="Normal", reason=reason, message=message)

    def execute_all(self, work: Iterable[tuple[Action, Mapping[str, Any]]]) -> list[str]:
        """Send many actions, WRITERS at a time (the API server takes them in parallel), each
        writer taking the next from `work`: not a task per Deployment of a rollout held at
        once. Their Deployments' Events follow the batch, so they do not compete with its
        writes. Outcomes in the order of `work`."""
        announced: list[Announcement] = []
        outcomes = self.loop.run(self._execute_all(work, announced.append))
        for announcement in announced:
            self._announce(announcement)
        return outcomes

    async def _execute_all(
        self,
        work: Iterable[tuple[Action, Mapping[str, Any]]],
        announce: Callable[[Announcement], None],
    ) -> list[str]:
        outcomes: dict[int, str] = {}
        numbered = enumerate(work)  # one iterator, shared: each item goes to one writer

        async def writer() -> None:
            for index, (action, deployment) in numbered:
                outcomes[index] = await self.execute(action, deployment, announce)

        writers = [asyncio.ensure_future(writer()) for _ in range(WRITERS)]
        try:
            await asyncio.gather(*writers)
        finally:
            for task in writers:
                task.cancel()  # after a failure: the others stop taking work
        return [outcomes[index] for index in range(len(outcomes))]

    def _items(self, worker: Worker) -> list[rollout.Item]:
        """This policy's planned action on every Deployment that matches or carries it."""
        items = []
        for key, deployment in self.cache.deployments():
            mine = next((a for a in self.plan(deployment) if a.policy == worker.name), None)
            if mine is None:
                worker.conflicts.pop(key, None)
                continue
            rejected = worker.rejected.get(key)
            if rejected and rejected[0] == mine.revision and mine.kind is Kind.APPLY:
                # The same content was rejected before: a conflict until the policy changes.
                mine = Action(
                    mine.policy, Kind.CONFLICT, reason=rejected[1], revision=mine.revision
                )
            items.append(rollout.Item(key, deployment, mine))
        return items

    def run_pass(self, worker: Worker) -> None:
        entry = self.cache.policy(worker.name)
        if entry is None:
            return
        policy, body = entry
        worker.generation = policy.generation
        if policy.deleting:
            return  # the deletion handler removes everything, holding the finalizer till done
        items = self._items(worker)
        strategy = policy.spec.update_strategy
        step = rollout.step(
            items,
            max_concurrent=strategy.max_concurrent,
            paused=strategy.paused,
            policy_created=policy.created,
        )
        for item in items:
            if item.action.kind is Kind.CONFLICT:
                self._conflict(worker.name, item.deployment, item.action.reason)
            else:
                worker.conflicts.pop(item.key, None)
        self._report_halt(worker, step.failing)
        # Before the writes too: a new generation shows at once, not after its whole batch.
        self.write_status(worker, policy, body, items, step)
        if step.writes:
            self.execute_all((item.action, item.deployment) for item in step.writes)
            worker.poke()  # the next pass counts what the writes did

    def _report_halt(self, worker: Worker, failing: list[Key]) -> None:
        if failing and failing != worker.halted_on:
            self.events(
                _policy_ref(worker.name, self.cache),
                type="Warning",
                reason="RolloutHalted",
                message=status.halted_message(failing),
            )
        worker.halted_on = failing

    def write_status(
        self,
        worker: Worker,
        policy: Policy,
        body: Mapping[str, Any],
        items: list[rollout.Item],
        step: rollout.Step,
    ) -> None:
        counts = status.count((item.action, item.deployment) for item in items)
        metrics.set_counts(
            worker.name,
            matched=counts.matched,
            updated=counts.updated,
            ready=counts.ready,
            conflicts=counts.conflicts,
        )
        examples = sorted(
            f"{item.key[0]}/{item.key[1]}: {item.action.reason}"
            for item in items
            if item.action.kind is Kind.CONFLICT
        )
        old = body.get("status") or {}
        new: dict[str, Any] = {
            "observedGeneration": policy.generation,
            "revision": policy.spec.revision,
            "matchedDeployments": counts.matched,
            "updatedDeployments": counts.updated,
            "readyDeployments": counts.ready,
            "conflicts": counts.conflicts,
            "conditions": status.merge_conditions(
                old.get("conditions") or [],
                status.conditions(
                    counts,
                    paused=policy.spec.update_strategy.paused,
                    failing=step.failing,
                    conflict_examples=examples,
                ),
                now=_now(),
                generation=policy.generation,
            ),
        }
        if {k: old.get(k) for k in new} == new:
            worker.status_due = False
            return
        if _rolling_on(old, new) and time.monotonic() - worker.status_written < STATUS_INTERVAL:
            # Mid-rollout the counts move with every write: report them at a steady pace.
            # Anything else (a new generation, a halt, a condition turning) is written at once.
            worker.status_due = True
            return
        self.api.patch_policy_status(worker.name, new)
        worker.status_written = time.monotonic()
        worker.status_due = False

    def flush_events(self, worker: Worker, *, now: bool = False) -> None:
        """One Event per reason for everything done since the last one, at most every
        EVENT_INTERVAL seconds: a rollout over 800 Deployments makes a handful, not 800."""
        if not now and time.monotonic() - worker.flushed < EVENT_INTERVAL:
            return
        for reason, names in worker.take_done().items():
            if not names:
                continue
            shown = ", ".join(sorted(names)[:EVENT_NAMES_SHOWN])
            more = len(names) - EVENT_NAMES_SHOWN
            suffix = f" and {more} more" if more > 0 else ""
            self.events(
                _policy_ref(worker.name, self.cache),
                type="Normal",
                reason=reason,
                message=f"{reason} sidecars in {len(names)} Deployments: {shown}{suffix}",
            )

    def remove_everywhere(self, name: str) -> list[str]:
        """Release everything the policy owns on every Deployment; returns the failures."""
        worker = self.worker(name)
        carrying = [
            deployment
            for _, deployment in self.cache.deployments()
            if name in policies_with_fields(deployment)
        ]
        outcomes = self.execute_all(
            (Action(name, Kind.REMOVE, render.removal_body(d), reason="remove"), d)
            for d in carrying
        )
        self.flush_events(worker, now=True)
        return [
            "/".join(_key(deployment)) + f": {outcome}"
            for deployment, outcome in zip(carrying, outcomes, strict=True)
            if outcome not in ("written", "gone", "nothing")
        ]

    def forget(self, name: str) -> None:
        with self._workers_lock:
            self.workers.pop(name, None)
        metrics.forget(name)


def _plan_inputs(deployment: Mapping[str, Any]) -> tuple[Any, ...]:
    """What `render.plan` reads of a Deployment: its metadata, and its pod template, which the
    generation stands for (bumped on every spec change). Empty, so never reused, for an object
    the API server has not versioned."""
    metadata = deployment["metadata"]
    if not metadata.get("resourceVersion") or "generation" not in metadata:
        return ()
    return (
        metadata.get("uid"),
        metadata["generation"],
        metadata.get("labels"),
        metadata.get("annotations"),
        metadata.get("managedFields"),
    )


def _policy_ref(name: str, cache: Cache) -> dict[str, Any]:
    entry = cache.policy(name)
    uid = entry[1].get("metadata", {}).get("uid") if entry else None
    return {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": name, "uid": uid},
    }


def _rolling_on(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The same rollout still under way, only its counts (and the messages quoting them) moved."""

    def phase(status: Mapping[str, Any]) -> tuple[Any, ...]:
        conditions = status.get("conditions") or []
        return (
            status.get("observedGeneration"),
            status.get("revision"),
            tuple((c.get("type"), c.get("status"), c.get("reason")) for c in conditions),
        )

    reasons = {c.get("type"): c.get("reason") for c in new.get("conditions") or []}
    return reasons.get("Progressing") == "RollingOut" and phase(old) == phase(new)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
