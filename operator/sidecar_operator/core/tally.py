"""A policy's rollout, counted workload by workload. Pure.

What a pass finds of each workload the policy concerns (its `Entry`: the write it needs, its
share of the status counts, of the steps' counts and of the budget) is added up as it is put,
so that one workload's event replaces one entry and its share of the sums, instead of a walk
over every workload. A full pass builds a tally from every workload; then each event puts or
drops one entry (`engine.passes`). Whether the rollout may write a workload now (`step`) reads
the sums and the entries with a write pending, never the rest.

Every entry is classified against one `Context`: the policy's content, pacing settings and
rollout as they were when the tally was built. When any of those changes, every entry may
change, and a full pass builds a new tally.
"""

from __future__ import annotations

import collections
import datetime
import heapq
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy, Step
from sidecar_operator.core import rollout, status, stepping, waves, workloads
from sidecar_operator.core.ownership import written_at, wrote_last
from sidecar_operator.core.types import Change, Key, Kind

V = TypeVar("V")


@dataclass(frozen=True)
class Context:
    """What classifying a workload reads of its policy and rollout."""

    policy: str
    revision: str
    policy_created: str
    paused: bool
    max_concurrent: int | str
    deadline_seconds: int
    rollout: waves.Rollout
    step: int  # the rollout's current step, as the status keeps it

    @classmethod
    def of(
        cls, policy: Policy, current: waves.Rollout, policy_status: Mapping[str, Any]
    ) -> Context:
        strategy = policy.spec.update_strategy
        return cls(
            policy=policy.name,
            revision=policy.spec.revision,
            policy_created=policy.created,
            paused=strategy.paused,
            max_concurrent=strategy.max_concurrent,
            deadline_seconds=strategy.progress_deadline_seconds,
            rollout=current,
            step=stepping.Position.of(policy, policy_status).step,
        )

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps whose counts the status shows (one, rolling back to stable)."""
        return self.rollout.steps if self.rollout.stepped else (waves.EVERYWHERE,)


@dataclass(frozen=True, slots=True)  # one per workload a policy concerns
class Entry:
    """One workload's share of its policy's rollout."""

    item: rollout.Item  # what to carry out (a write if its action has a body)
    counts: status.Counts  # its share of the status counts (each 0 or 1)
    conflict: str  # the conflict shown for it, "" if none
    place: tuple[int, bool, bool] | None  # its share of the steps' counts (`stepping.count_steps`)
    rolling: bool  # holds a place in the budget
    failing: bool  # carries the current revision and missed its progress deadline
    fails_at: datetime.datetime | None  # when it will have, unless it rolls out first
    owner_waiting: bool  # carries the current revision, waiting for its owner to resume it
    pending: bool  # has a write the policy's `paused` does not hold
    paced: bool  # that write restarts running pods: it waits for the budget


def entry(
    context: Context,
    todo: rollout.Item,
    shown: rollout.Item,
    namespace_labels: Mapping[str, str],
    now: datetime.datetime,
) -> Entry:
    """Classify one workload: `todo` is the policy's action to carry out, `shown` the one to
    count and show (they differ only for a workload whose writes keep failing)."""
    workload, action = todo.deployment, todo.action
    matched = action.kind is not Kind.REMOVE
    rolled = workloads.rolled_out(workload)
    counts = status.share(shown.action, context.revision, rolled)
    place = None
    if shown.action.kind not in (Kind.REMOVE, Kind.CONFLICT):
        found = waves.place(
            context.rollout,
            context.step,
            context.policy,
            todo.key,
            workload,
            namespace_labels,
            rolled,
        )
        place = _PLACES.setdefault(found, found)
    in_sync = action.kind is Kind.IN_SYNC
    owner_paused = workloads.owner_paused(workload)
    failing = (
        matched
        and in_sync
        and workloads.failed(
            workload, context.policy, deadline_seconds=context.deadline_seconds, now=now
        )
    )
    pending = action.body is not None and not (
        context.paused and action.kind is Kind.APPLY and action.change is not Change.REPAIR
    )
    return Entry(
        item=todo,
        counts=counts,
        conflict=shown.action.conflict,
        place=place,
        rolling=matched and rollout.rolling(todo, rolled),
        failing=failing,
        fails_at=None if failing or not matched or not in_sync else _fails_at(context, workload),
        owner_waiting=matched and in_sync and owner_paused and not rolled,
        pending=pending,
        paced=pending and rollout.paced(todo, context.policy_created),
    )


def _fails_at(context: Context, workload: Mapping[str, Any]) -> datetime.datetime | None:
    """When a workload of a kind without a deadline of its own misses the policy's
    (`workloads.failed`), if it is still rolling out what the policy wrote."""
    kind = WorkloadKind.of(workload)
    if kind in (WorkloadKind.DEPLOYMENT, WorkloadKind.CRON_JOB) or workloads.rolled_out(workload):
        return None
    written = written_at(workload, context.policy)
    if written is None or not wrote_last(workload, context.policy):
        return None
    return written + datetime.timedelta(seconds=context.deadline_seconds)


class Tally:
    """The entries of one policy's workloads, and their sums."""

    def __init__(self, context: Context, stamp: tuple[Any, ...] = ()) -> None:
        self.context = context
        self.stamp = stamp  # what else the entries were classified from (`engine.passes`)
        self.entries: dict[Key, Entry] = {}
        self._counts: dict[WorkloadKind, list[int]] = {}  # per kind, `status.Counts` fields
        self._places: collections.Counter[tuple[int, bool, bool]] = collections.Counter()
        self._kinds: collections.Counter[WorkloadKind] = collections.Counter()
        self.matched = 0
        self.in_flight: set[Key] = set()
        self.failing: set[Key] = set()
        self.owner_waiting: set[Key] = set()
        self.conflicts: dict[Key, str] = {}
        self.fails_at: dict[Key, datetime.datetime] = {}
        self.unpaced: dict[Key, Entry] = {}  # pending writes the budget does not hold
        self.paced: dict[Key, Entry] = {}  # pending writes that wait for the budget

    def put(self, key: Key, new: Entry) -> None:
        self.drop(key)
        self.entries[key] = new
        self._add(key, new, 1)

    def drop(self, key: Key) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self._add(key, old, -1)

    def _add(self, key: Key, share: Entry, sign: int) -> None:
        counts = self._counts.setdefault(key.kind, [0] * len(_FIELDS))
        for index, value in enumerate(_VALUES(share.counts)):
            counts[index] += sign * value
        if share.place is not None:
            self._places[share.place] += sign
        self._kinds[key.kind] += sign
        self.matched += sign * (share.item.action.kind is not Kind.REMOVE)
        for flag, keys in (
            (share.rolling, self.in_flight),
            (share.failing, self.failing),
            (share.owner_waiting, self.owner_waiting),
        ):
            if flag:
                (keys.add if sign > 0 else keys.discard)(key)
        _keep(self.conflicts, key, share.conflict, sign)
        _keep(self.fails_at, key, share.fails_at, sign)
        _keep(self.unpaced, key, share if share.pending and not share.paced else None, sign)
        _keep(self.paced, key, share if share.paced else None, sign)

    # -- what the sums say ---------------------------------------------------------------

    def counts(self) -> dict[WorkloadKind, status.Counts]:
        """Per kind it has entries of, the status counts."""
        return {kind: status.Counts(*self._counts[kind]) for kind in self.kinds()}

    def kinds(self) -> set[WorkloadKind]:
        """The kinds it has entries of."""
        return {kind for kind, number in self._kinds.items() if number}

    def step_counts(self) -> tuple[stepping.StepCount, ...]:
        return stepping.count_steps(self._places.items(), len(self.context.steps))

    def next_failure(self) -> datetime.datetime | None:
        """When the next workload still rolling out misses its deadline, if any may."""
        return min(self.fails_at.values(), default=None)

    def step(self) -> rollout.Step:
        """What the rollout may write now: every pending write that is not paced, those that
        move a workload already in flight on, and newcomers (in key order) while the budget
        (`maxConcurrent` of the matched workloads, less those in flight) has room. Halted by a
        failing workload or paused, nothing more gets the current revision. Its cost is that
        of the pending writes, not of the workloads (nor of those in flight)."""
        context = self.context
        allowed = rollout.budget(context.max_concurrent, self.matched)
        held = context.paused or bool(self.failing)
        paced, in_flight = self.paced, self.in_flight
        moving_on = []
        if not held:
            smaller = in_flight if len(in_flight) < len(paced) else paced.keys()
            moving_on = [paced[key].item for key in smaller if key in paced and key in in_flight]
        slots = 0 if held else max(0, allowed - len(in_flight))
        started = []
        if slots:
            newcomers = (key for key in paced if key not in in_flight)
            started = [paced[key].item for key in heapq.nsmallest(slots, newcomers)]
        return rollout.Step(
            writes=[share.item for share in self.unpaced.values()] + moving_on + started,
            budget=allowed,
            in_flight=len(in_flight),
            failing=sorted(self.failing),
            waiting=len(paced) - len(moving_on) - len(started),
            owner_paused=sorted(self.owner_waiting),
        )

    def admits(self, key: Key, share: Entry) -> bool:
        """Whether `step` would write the workload if it were as `share` says (admission asks,
        for an owner's update). The tally is left as it was."""
        old = self.entries.get(key)
        self.put(key, share)
        try:
            return any(item.key == key for item in self.step().writes)
        finally:
            if old is None:
                self.drop(key)
            else:
                self.put(key, old)


def _keep(held: dict[Key, V], key: Key, value: V | None, sign: int) -> None:
    """Add (or take away) the workload's value, if it has one, to what the tally holds."""
    if not value:
        return
    if sign > 0:
        held[key] = value
    else:
        held.pop(key, None)


# The distinct places (at most 4 per step): each entry refers to one, not a tuple of its own.
_PLACES: dict[tuple[int, bool, bool], tuple[int, bool, bool]] = {}


_FIELDS = tuple(field.name for field in fields(status.Counts))
_VALUES = operator.attrgetter(*_FIELDS)


def of_items(
    items: Iterable[rollout.Item],
    context: Context,
    now: datetime.datetime,
    namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> Tally:
    """A tally of these items, each both carried out and shown."""
    found = Tally(context)
    for item in items:
        labels = (namespace_labels or {}).get(item.key.namespace, {})
        found.put(item.key, entry(context, item, item, labels, now))
    return found
