"""Sending the core's actions: one server-side apply per (policy, Deployment), many at once.

Each write stands alone: whatever the API server answers for one Deployment is that
Deployment's outcome, and the rest of the batch goes on. A 409 is retried with fresh state and
never forced over someone else's fields; any other 4xx (invalid, refused by an admission
policy or webhook, too large) is reported like a conflict and not sent again until the policy
or the Deployment changes; 429s, 5xx answers and lost connections are `FAILED`, for the worker
to try again shortly.

A write the API server accepted is planned again from its answer: if the policy would still
send it (something stores it otherwise than the planner expects: a default it does not know, a
webhook rewriting the image), it is reported the same way and not sent again until the policy or
the workload changes. Without that, such a write went out on every event, a hundred a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol

import structlog

from sidecar_operator import metrics
from sidecar_operator.core.types import Action, Key, Kind
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.engine.reporting import Announcement, Reporter, key_of
from sidecar_operator.kube.client import ApiError
from sidecar_operator.state.cache import Cache
from sidecar_operator.state.plans import Plans, plan_inputs

log = structlog.get_logger()

MAX_ATTEMPTS = 3
WRITERS = 128  # writes in flight at once, across every policy's batches. Against 64, on one
# N=1000 cluster over two sessions (five rounds each, alternated): inject/update/removal medians
# 3.23/4.42/2.35 s against 3.40/6.06/2.92 s, for 6 MB of connections (docs/performance.md).
TRANSIENT = frozenset({408, 429})  # the 4xx answers that say "not now" rather than "not this"


class Outcome(StrEnum):
    WRITTEN = "written"
    NOTHING = "nothing"  # re-planned after a 409: nothing left to do
    GONE = "gone"  # the Deployment was deleted meanwhile
    FENCED = "fenced"  # not sent: this replica is not (or cannot confirm it is) the active one
    REJECTED = "rejected"  # a 4xx: this content cannot go to this Deployment
    DIVERGED = "diverged"  # accepted, but what is stored still differs from the policy
    CONFLICT = "conflict"  # 409s persisted
    FAILED = "failed"  # no answer, or one that says to try again later


class Api(Protocol):
    async def apply(self, body: dict[str, Any], *, policy: str, force: bool) -> dict[str, Any]: ...

    async def get_workload(self, key: Key) -> dict[str, Any] | None: ...


class Writer:
    def __init__(
        self,
        api: Api,
        cache: Cache,
        reporter: Reporter,
        *,
        plans: Plans,
        leadership: Leadership,
    ) -> None:
        self.api = api
        self.cache = cache
        self.reporter = reporter
        self.plans = plans  # to re-plan on a fresh copy
        self.leadership = leadership  # asked before every write
        # Shared by every batch: a hundred policies rolling out at once each sent 128, and the
        # 12,800 requests queued for the session's connections until many timed out, holding
        # their bodies meanwhile (the bench's many policies: 617 timeouts, 261 MB).
        self._in_flight = asyncio.Semaphore(WRITERS)

    async def execute(
        self,
        action: Action,
        deployment: Mapping[str, Any],
        announce: Callable[[Announcement], None],
        *,
        watched: bool = True,
    ) -> Outcome:
        """Send one action's body; on a 409, or a refusal of a copy older than the API server's,
        re-read and re-plan. The Deployment's Event goes to `announce`. A workload of a kind no
        watch holds (`watched` False: a removal found by a listing of its metadata) is written
        as it is, and not kept."""
        key = key_of(deployment)
        bound = log.bind(
            policy=action.policy, kind=key.kind.value, namespace=key.namespace, workload=key.name
        )
        current: Action | None = action
        last_error = ""
        for _ in range(MAX_ATTEMPTS):
            if current is None or current.body is None:
                return Outcome.NOTHING
            if not self.leadership.active:
                return _count(current, key, Outcome.FENCED)
            try:
                written = await self.api.apply(
                    current.body, policy=current.policy, force=current.force
                )
            except ApiError as error:
                metrics.API_ERRORS.labels(status=str(error.status)).inc()
                if error.status == 404:
                    return self._done(current, key, Outcome.GONE)
                if error.status in TRANSIENT or error.status >= 500:
                    bound.warning("Write failed", status=error.status, error=error.message)
                    self.reporter.failing(current, deployment, error.message)
                    return _count(current, key, Outcome.FAILED)
                last_error = error.message
                try:
                    fresh = await self.api.get_workload(key)
                except (ApiError, ConnectionError) as failure:
                    bound.warning("Re-read failed", error=str(failure))
                    return _count(current, key, Outcome.FAILED)
                # Server-side apply creates what does not exist: to a workload deleted
                # meanwhile, our partial body is refused as an invalid new one (422), or as new
                # content in a terminating namespace (403). Neither is the workload's problem.
                if fresh is None:
                    return self._done(current, key, Outcome.GONE)
                if error.status != 409 and (not watched or _version(fresh) == _version(deployment)):
                    return self._rejected(current, deployment, error, bound)
                # A conflict, or a refusal of a change planned on a copy the watch had not
                # brought up to date: planned again on the current one, the change may no
                # longer be needed, or be held back with the reason the copy lacked (another
                # manager's fields a removal would break).
                held = self.cache.refresh_workload(fresh)
                if held is None:
                    return self._done(current, key, Outcome.GONE)
                deployment = held
                current = next(
                    (a for a in self.plans.plan(deployment) if a.policy == action.policy), None
                )
                continue
            except ConnectionError as error:
                bound.warning("Write failed", change=current.change, error=str(error))
                return _count(current, key, Outcome.FAILED)
            if not watched:
                bound.info("Applied", change=current.change)
                announce(self.reporter.changed(current, written))
                return self._done(current, key, Outcome.WRITTEN)
            arrived = self.cache.reacting_to(key, current.policy)
            record = self.cache.refresh_workload(written)
            if record is None:  # deleted while the write was in flight
                return self._done(current, key, Outcome.GONE)
            bound.info(
                "Applied",
                change=current.change,
                revision=current.revision or None,
                drift=current.drift or None,
            )
            announce(self.reporter.changed(current, record))
            again = next((a for a in self.plans.plan(record) if a.policy == current.policy), None)
            if again is not None and again.body is not None and again.kind is current.kind:
                reason = (
                    "the API server accepted the change but stores it otherwise "
                    f"({again.drift or 'as before'}); it is not sent again until the policy "
                    "or the workload changes"
                )
                bound.warning("Write does not converge", drift=again.drift)
                self.reporter.rejected(again, record, reason, plan_inputs(record))
                return self._done(current, key, Outcome.DIVERGED)
            if arrived is not None and current.kind is not Kind.REMOVE:
                metrics.REACTION.observe(time.monotonic() - arrived)
            return self._done(current, key, Outcome.WRITTEN)
        bound.warning("Conflict persists", error=last_error)
        reason = f"the API server keeps reporting a conflict: {last_error}"
        self.reporter.rejected(action, deployment, reason, plan_inputs(deployment))
        return _count(action, key, Outcome.CONFLICT)

    def _rejected(
        self,
        action: Action,
        deployment: Mapping[str, Any],
        error: ApiError,
        bound: structlog.stdlib.BoundLogger,
    ) -> Outcome:
        bound.warning("Patch rejected", status=error.status, error=error.message)
        reason = f"the API server rejected the change: {error.message}"
        self.reporter.rejected(action, deployment, reason, plan_inputs(deployment))
        return _count(action, key_of(deployment), Outcome.REJECTED)

    def _done(self, action: Action, key: Key, outcome: Outcome) -> Outcome:
        self.reporter.written(action.policy, key)
        return _count(action, key, outcome)

    async def execute_all(
        self,
        work: Sequence[tuple[Action, Mapping[str, Any]]],
        announce: Callable[[Announcement], None],
    ) -> list[Outcome]:
        """Send many actions, WRITERS at a time across all batches (the API server takes them
        in parallel), each writer taking the next from `work` once it holds a place: not a task
        per Deployment of a rollout held at once. Outcomes in the order of `work`."""
        outcomes: dict[int, Outcome] = {}
        numbered = enumerate(work)  # one iterator, shared: each item goes to one writer

        async def writer() -> None:
            while True:
                async with self._in_flight:
                    taken = next(numbered, None)
                    if taken is None:
                        return
                    index, (action, deployment) = taken
                    outcomes[index] = await self.execute(action, deployment, announce)

        writers = [asyncio.ensure_future(writer()) for _ in range(min(WRITERS, len(work)))]
        try:
            await asyncio.gather(*writers)
        finally:
            for task in writers:
                task.cancel()  # after a failure: the others stop taking work
        return [outcomes[index] for index in range(len(outcomes))]


def _version(workload: Mapping[str, Any]) -> str:
    return str(workload["metadata"]["resourceVersion"])


def _count(action: Action, key: Key, outcome: Outcome) -> Outcome:
    change = action.change.value if action.change else "none"
    metrics.WRITES.labels(
        policy=action.policy, kind=key.kind.value, action=change, outcome=outcome.value
    ).inc()
    return outcome
