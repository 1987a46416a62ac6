"""Where a policy's rollout stands and how it moves on: its position (which revision and
steps, which step, when that step was done), the steps' counts, and one pass's move by at most
one step, as the status keeps it. Pure; which workloads a step covers is `waves`'s.

A step is done when every workload it covers (conflicts aside) carries the update revision and
is rolled out. Then its pause holds: a duration from the moment it was done (kept in status, so
a restart keeps the clock), or until promoted by the policy's annotation.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sidecar_operator.api.models import Content, Policy, Step
from sidecar_operator.core.waves import HOLD, Rollout, steps_of

ALL_STEPS = "all"  # promote `<revision>/all`: skip the remaining steps


@dataclass(frozen=True)
class Position:
    """A rollout's place, as the policy's status keeps it: of which revision and steps, which
    step, and when that step was done (a pause's clock)."""

    revision: str
    steps_hash: str
    step: int = 0
    done_at: str | None = None

    @classmethod
    def of(cls, policy: Policy, status: Mapping[str, Any]) -> Position:
        """From the status, or a new rollout's first step: a new revision, or new steps, start
        over (so does a policy whose status predates steps)."""
        revision = policy.spec.revision
        steps_hash = policy.spec.update_strategy.steps_hash
        if status.get("updateRevision") == revision and status.get("stepsHash") == steps_hash:
            last = len(steps_of(policy)) - 1
            step = min(int(status.get("currentStep") or 0), last)
            return cls(revision, steps_hash, step, status.get("stepDoneTime"))
        return cls(revision, steps_hash)


@dataclass(frozen=True)
class StepCount:
    covered: int = 0
    updated: int = 0
    ready: int = 0

    @property
    def done(self) -> bool:
        return self.updated == self.covered and self.ready == self.covered


class Phase(StrEnum):
    """What a stepped rollout is doing (the `Progressing` reasons it gives)."""

    ROLLING = "RollingOut"
    STEP_PAUSED = "StepPaused"  # a duration runs
    WAITING = "WaitingForPromotion"
    COMPLETE = "Complete"
    ABORTED = "Aborted"


@dataclass(frozen=True)
class Moved:
    """One pass's decision: the position to keep in status, what it waits for, and the
    steps that finished and started (for Events)."""

    position: Position
    phase: Phase
    resume_at: datetime.datetime | None = None  # a duration pause's end
    finished: tuple[int, ...] = ()
    started: tuple[int, ...] = ()


def promoted(policy: Policy, position: Position, steps: Sequence[Step]) -> str | None:
    """What the promote annotation asks of this rollout: "all", the current step's index, or
    None (it names another revision or step: an old one, never this rollout's)."""
    revision, _, step = policy.promote.partition("/")
    if revision != position.revision or not step:
        return None
    if step == ALL_STEPS:
        return ALL_STEPS
    current = steps[position.step]
    if step == str(position.step) or (current.name is not None and step == current.name):
        return str(position.step)
    return None


def advance(
    policy: Policy,
    position: Position,
    counts: Sequence[StepCount],
    *,
    held: bool,
    now: datetime.datetime,
) -> Moved:
    """Move the rollout on by at most one step: when the current step is done and its pause
    (if any) is over or promoted. `held`: paused, or halted by a failing workload."""
    steps = steps_of(policy)
    last = len(steps) - 1
    if policy.abort and policy.abort == position.revision:
        return Moved(position, Phase.ABORTED)
    asked = promoted(policy, position, steps)
    if asked == ALL_STEPS and position.step < last and not held:
        moved = Position(position.revision, position.steps_hash, last)
        return Moved(moved, Phase.ROLLING, finished=(position.step,), started=(last,))
    count = counts[position.step]
    if not count.done:
        return Moved(position, Phase.ROLLING)
    if position.step == last:
        return Moved(position, Phase.COMPLETE)
    done_at = position.done_at or stamp(now)
    pause = steps[position.step].pause
    finished = () if position.done_at else (position.step,)
    if held:
        return Moved(_at(position, done_at), Phase.ROLLING, finished=finished)
    if pause is not None and asked is None:
        seconds = pause.seconds
        if seconds is None:
            return Moved(_at(position, done_at), Phase.WAITING, finished=finished)
        resume_at = _parse(done_at) + datetime.timedelta(seconds=seconds)
        if now < resume_at:
            return Moved(_at(position, done_at), Phase.STEP_PAUSED, resume_at, finished=finished)
    step = position.step + 1
    moved = Position(position.revision, position.steps_hash, step)
    return Moved(moved, Phase.ROLLING, finished=finished, started=(step,))


def _at(position: Position, done_at: str) -> Position:
    return Position(position.revision, position.steps_hash, position.step, done_at)


def stamp(now: datetime.datetime) -> str:
    """A status timestamp (RFC 3339, to the second)."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def count_steps(
    places: Iterable[tuple[tuple[int, bool, bool], int]], steps: int
) -> tuple[StepCount, ...]:
    """Per step, from how many workloads have each `place`."""
    covered = [0] * steps
    updated = [0] * steps
    ready = [0] * steps
    for (first, carries, rolled), number in places:
        for index in range(first, steps):
            covered[index] += number
            updated[index] += carries * number
            ready[index] += (carries and rolled) * number
    return tuple(StepCount(c, u, r) for c, u, r in zip(covered, updated, ready, strict=True))


@dataclass(frozen=True)
class Progress:
    """What one pass finds of a policy's rollout, and decides."""

    moved: Moved
    counts: tuple[StepCount, ...]  # per step
    complete: bool  # every matched workload carries the update revision and is rolled out
    stable: str | None  # the stable revision to record ("": nothing; None: not known)

    def status(self, policy: Policy) -> dict[str, Any]:
        """The rollout's fields of the policy's status (None removes one)."""
        position = self.moved.position
        fields: dict[str, Any] = {
            "updateRevision": position.revision,
            "currentStep": position.step,
            "stepDoneTime": position.done_at,
            "stepsHash": position.steps_hash,
            "steps": [
                {"name": step.name, "covered": c.covered, "updated": c.updated, "ready": c.ready}
                for step, c in zip(policy.spec.update_strategy.steps, self.counts, strict=False)
            ],
        }
        if self.stable is not None:
            fields["currentRevision"] = self.stable
        return fields


def progress(
    policy: Policy,
    rollout: Rollout,
    status: Mapping[str, Any],
    counts: tuple[StepCount, ...],
    *,
    held: bool,
    now: datetime.datetime,
) -> Progress:
    """From the steps' counts of the matched, non-conflicting workloads: the move, and whether
    the rollout is complete."""
    position = Position.of(policy, status)
    complete = counts[-1].done and not rollout.aborted
    if rollout.stepped:
        moved = advance(policy, position, counts, held=held, now=now)
    elif rollout.aborted:  # stays where it was aborted
        moved = Moved(position, Phase.ABORTED)
    else:  # back to the stable content, or everywhere already: past every step
        last = len(rollout.steps) - 1
        moved = Moved(Position(position.revision, position.steps_hash, last), Phase.ROLLING)
    if complete:
        stable: str | None = rollout.update.revision
    elif isinstance(rollout.stable, Content):
        stable = rollout.stable.revision
    else:
        stable = None if rollout.stable is HOLD else ""
    return Progress(moved, counts, complete, stable)
