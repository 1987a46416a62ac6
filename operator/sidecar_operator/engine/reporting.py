"""What the operator tells people: Events on Deployments and policies, each said once.

Per policy it remembers what it reported (a conflict, a halt) so that a pass every few seconds
does not repeat it, what the API server rejected (so the same content is not sent again), and
what was changed since the last aggregated Event. Events go to an `EventSink`, which posts them
in the background.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar_operator import metrics
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy
from sidecar_operator.api.names import GROUP, INJECT_KEY, KIND, VERSION
from sidecar_operator.core import status, stepping, waves, workloads
from sidecar_operator.core.types import Action, Change, Key, Kind
from sidecar_operator.state.cache import Cache

EVENT_NAMES_SHOWN = 5
EVENT_INTERVAL = 10.0  # seconds between a policy's aggregated Events of one reason
# A Deployment whose writes keep failing is told after this long, and retried at least this often.
FAILING_REPORTED_AFTER = 30.0
FAILING_RETRY_MAX = 30.0

# A Deployment's Normal Event after a write: its reference, reason and message.
Announcement = tuple[dict[str, Any], str, str]

_PAST = {
    Change.INJECT: ("Injected", "added"),
    Change.UPDATE: ("Updated", "updated"),
    Change.REPAIR: ("Repaired", "restored"),
    Change.REMOVE: ("Removed", "removed"),
    Change.ADOPT: ("Admitted", "added at admission; its field manager now owns them"),
}


class EventSink(Protocol):
    def __call__(self, ref: dict[str, Any], *, type: str, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Rejection:
    """The API server refused this content for this Deployment as it was then: sending it again
    waits for the policy (`revision`) or the Deployment (`inputs`, as planned from) to change."""

    revision: str
    inputs: tuple[Any, ...]
    reason: str


@dataclass
class Failing:
    """Writes to this Deployment keep getting answers that say "later" while others go through
    (a webhook that is down answers 500 for the Deployments it covers). It waits, doubling,
    before its next try, so that the rest of the rollout takes its place; after
    FAILING_REPORTED_AFTER it is reported like a conflict, and written once the cause is gone."""

    since: float
    reason: str = ""
    attempts: int = 0
    retry_at: float = 0.0
    reported: bool = False

    def waiting(self) -> bool:
        return time.monotonic() < self.retry_at


@dataclass
class Memory:
    """What was reported for one policy. A pass reads it for every Deployment, so it is handed
    out once per pass rather than looked up each time."""

    conflicts: dict[Key, str] = field(default_factory=dict)  # last reported, to report once
    rejected: dict[Key, Rejection] = field(default_factory=dict)
    failing: dict[Key, Failing] = field(default_factory=dict)
    halted_on: list[Key] = field(default_factory=list)
    owner_paused: set[Key] = field(default_factory=set)  # told they wait for their owners
    steps_told: set[tuple[str, str, int]] = field(default_factory=set)  # (what, revision, step)
    done: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    held_since: float = 0.0  # when the oldest change in `done` was made

    def no_conflict(self, key: Key) -> None:
        self.conflicts.pop(key, None)


def workload_ref(workload: Mapping[str, Any]) -> dict[str, Any]:
    metadata, kind = workload["metadata"], WorkloadKind.of(workload)
    return {
        "apiVersion": kind.api_version,
        "kind": kind.value,
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
    }


def key_of(workload: Mapping[str, Any]) -> Key:
    return Key.of(workload)


class Reporter:
    def __init__(self, events: EventSink, cache: Cache) -> None:
        self.events = events
        self.cache = cache  # for the policies' uids
        self._memories: dict[str, Memory] = {}
        self._unclear_opt_outs: dict[Key, str] = {}  # told once per value

    def memory(self, policy: str) -> Memory:
        return self._memories.setdefault(policy, Memory())

    def forget(self, policy: str) -> None:
        self._memories.pop(policy, None)

    def policy_ref(self, name: str) -> dict[str, Any]:
        entry = self.cache.policy(name)
        uid = entry[1].get("metadata", {}).get("uid") if entry else None
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "uid": uid},
        }

    # -- conflicts and rejections ------------------------------------------------------------

    def conflict(self, policy: str, workload: Mapping[str, Any], message: str) -> None:
        """A Warning on the workload and on the policy, once per distinct message."""
        key = key_of(workload)
        memory = self.memory(policy)
        if memory.conflicts.get(key) == message:
            return
        memory.conflicts[key] = message
        metrics.CONFLICTS.labels(policy=policy).inc()
        self.events(
            workload_ref(workload),
            type="Warning",
            reason="SidecarConflict",
            message=f"SidecarPolicy {policy} skipped this {key.kind}: {message}",
        )
        self.events(
            self.policy_ref(policy),
            type="Warning",
            reason="Conflict",
            message=f"Skipped {key}: {message}",
        )

    def removal_blocked(self, policy: str, workload: Mapping[str, Any], message: str) -> None:
        """A Warning on the workload and on the policy, once per distinct message: what the
        policy added stays there until someone acts (the message says what to do)."""
        key = key_of(workload)
        memory = self.memory(policy)
        if memory.conflicts.get(key) == message:
            return
        memory.conflicts[key] = message
        metrics.REMOVALS_BLOCKED.labels(policy=policy).inc()
        self.events(
            workload_ref(workload),
            type="Warning",
            reason="SidecarRemovalBlocked",
            message=f"SidecarPolicy {policy} cannot remove its sidecars from this {key.kind}: "
            f"{message}",
        )
        self.events(
            self.policy_ref(policy),
            type="Warning",
            reason="RemovalBlocked",
            message=f"Cannot remove its sidecars from {key}: {message}",
        )

    def rejected(
        self, action: Action, deployment: Mapping[str, Any], reason: str, inputs: tuple[Any, ...]
    ) -> None:
        """Not to be sent again while the policy's revision and the workload are as now."""
        rejection = Rejection(action.revision, inputs, reason)
        self.memory(action.policy).rejected[key_of(deployment)] = rejection
        if action.kind is Kind.REMOVE:
            self.removal_blocked(action.policy, deployment, reason)
        else:
            self.conflict(action.policy, deployment, reason)

    def failing(self, action: Action, deployment: Mapping[str, Any], message: str) -> None:
        key, now = key_of(deployment), time.monotonic()
        entry = self.memory(action.policy).failing.setdefault(key, Failing(since=now))
        entry.attempts += 1
        entry.retry_at = now + min(FAILING_RETRY_MAX, 2.0**entry.attempts)
        entry.reason = f"writes keep failing: {message}"
        if now - entry.since >= FAILING_REPORTED_AFTER:
            entry.reported = True
            self.conflict(action.policy, deployment, entry.reason)

    def written(self, policy: str, key: Key) -> None:
        """A write went through (or the Deployment is gone): whatever kept failing, did not."""
        memory = self.memory(policy)
        if memory.failing.pop(key, None) is not None:
            memory.no_conflict(key)

    def halted(self, policy: str, failing: list[Key]) -> None:
        memory = self.memory(policy)
        if failing and failing != memory.halted_on:
            self.events(
                self.policy_ref(policy),
                type="Warning",
                reason="RolloutHalted",
                message=status.halted_message(failing),
            )
        memory.halted_on = failing

    def owner_paused(self, policy: str, paused: list[Key]) -> None:
        """Once per paused Deployment (again if it is paused again after resuming): the
        policy's change is written, and waits there for its owner."""
        memory = self.memory(policy)
        for key in set(paused) - memory.owner_paused:
            held = self.cache.workload(key)
            if held is None:
                continue
            self.events(
                workload_ref(held),
                type="Normal",
                reason="SidecarsWaitForResume",
                message=f"SidecarPolicy {policy} changed the pod template of this paused "
                f"{key.kind}: its pods change when its owner resumes it (kubectl rollout "
                "resume); until then it takes no place in the policy's rollout budget",
            )
        memory.owner_paused = set(paused)

    def unclear_opt_out(self, workload: Mapping[str, Any], value: str | None) -> None:
        """A workload some policy selects whose `sidecars.dev/inject` is neither true nor
        false: a Warning naming the value, once per value."""
        key = key_of(workload)
        if value is None or self._unclear_opt_outs.get(key) == value:
            if value is None:
                self._unclear_opt_outs.pop(key, None)
            return
        self._unclear_opt_outs[key] = value
        self.events(
            workload_ref(workload),
            type="Warning",
            reason="UnclearOptOut",
            message=f"{INJECT_KEY}: {value!r} is neither true nor false, so this {key.kind} "
            "is not opted out: policies that select it add their sidecars. Set it to "
            '"false" to opt out',
        )

    def forget_workload(self, key: Key) -> None:
        self._unclear_opt_outs.pop(key, None)

    def steps(self, name: str, policy: Policy, moved: stepping.Moved) -> None:
        """An Event when a step of a rollout in steps finishes, and when the next starts."""
        if len(policy.spec.update_strategy.steps) == 0:
            return
        memory = self.memory(name)
        steps = waves.steps_of(policy)
        revision = moved.position.revision
        for what, indexes in (("finished", moved.finished), ("started", moved.started)):
            for index in indexes:
                told = (what, revision, index)
                if told in memory.steps_told:
                    continue
                memory.steps_told.add(told)
                step = steps[index]
                label = f"Step {index + 1}/{len(steps)}" + (f" ({step.name})" if step.name else "")
                if what == "finished":
                    pause = step.pause
                    then = (
                        "the next step follows"
                        if pause is None
                        else f"pausing {pause.duration}"
                        if pause.duration
                        else f"waiting for promotion (kubectl sidecars rollout promote {name})"
                    )
                    message = f"{label} of revision {revision} finished: {then}"
                else:
                    message = f"{label} of revision {revision} started"
                self.events(
                    self.policy_ref(name),
                    type="Normal",
                    reason="StepFinished" if what == "finished" else "StepStarted",
                    message=message,
                )

    def selects_everything(self, policy: str) -> None:
        self.events(
            self.policy_ref(policy),
            type="Warning",
            reason="SelectsEverything",
            message="spec.selector is empty: every workload of its kinds in the matched "
            "namespaces gets this policy's sidecars",
        )

    # -- changes -----------------------------------------------------------------------------

    def changed(self, action: Action, workload: Mapping[str, Any]) -> Announcement:
        """Count a written change towards the policy's next aggregated Event; returns the
        workload's own Event, which the caller posts after its batch of writes."""
        change = action.change or Change.UPDATE
        reason, verb = _PAST[change]
        memory = self.memory(action.policy)
        if not any(memory.done.values()):
            memory.held_since = time.monotonic()
        memory.done[reason].append(str(key_of(workload)))
        message = f"Sidecars of SidecarPolicy {action.policy} {verb}"
        if change is Change.INJECT and self._born_after(action.policy, workload):
            # Admission should have added them (the operator was down, or the webhook timed
            # out or is not installed): its first pods ran without them.
            metrics.INJECTED_AFTER_CREATION.labels(
                policy=action.policy, kind=key_of(workload).kind.value
            ).inc()
            message += " after the workload was created: its first pods ran without them"
        if workloads.on_delete(workload):
            message += "; its pods change when they are deleted (updateStrategy OnDelete)"
        return workload_ref(workload), f"Sidecars{reason}", message

    def _born_after(self, policy: str, workload: Mapping[str, Any]) -> bool:
        """Created while the policy existed (timestamps are to the second: the same second
        counts, since a workload created then was not seen before the policy either)."""
        entry = self.cache.policy(policy)
        created = workload["metadata"].get("creationTimestamp") or ""
        return entry is not None and bool(entry[0].created) and created >= entry[0].created

    def announce(self, announcement: Announcement) -> None:
        ref, reason, message = announcement
        self.events(ref, type="Normal", reason=reason, message=message)

    def events_due(self, policy: str) -> float | None:
        """When `flush` has aggregated Events to post (monotonic time), or None: nothing held."""
        memory = self.memory(policy)
        if not any(memory.done.values()):
            return None
        return memory.held_since + EVENT_INTERVAL

    def flush(self, policy: str, *, now: bool = False) -> None:
        """One Event per reason for everything done in the EVENT_INTERVAL seconds after the
        first change: a rollout over 800 Deployments makes a handful, not 800."""
        memory = self.memory(policy)
        due = self.events_due(policy)
        if due is None or (not now and time.monotonic() < due):
            return
        done, memory.done = memory.done, collections.defaultdict(list)
        for reason, names in done.items():
            if not names:
                continue
            shown = ", ".join(sorted(names)[:EVENT_NAMES_SHOWN])
            more = len(names) - EVENT_NAMES_SHOWN
            suffix = f" and {more} more" if more > 0 else ""
            self.events(
                self.policy_ref(policy),
                type="Normal",
                reason=reason,
                message=f"{reason} sidecars in {len(names)} workloads: {shown}{suffix}",
            )
