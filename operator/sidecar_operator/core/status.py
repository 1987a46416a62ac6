"""A policy's status, computed from the plans of every workload it concerns. Pure."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy
from sidecar_operator.core.stepping import Phase
from sidecar_operator.core.types import Action, Key, Kind


@dataclass(frozen=True)
class Counts:
    matched: int = 0
    updated: int = 0
    ready: int = 0
    conflicts: int = 0
    blocked: int = 0  # not matched, and its sidecars cannot be removed (`planner.removal`)


def share(action: Action, revision: str, rolled_out: bool) -> Counts:
    """One workload's share of the counts, from this policy's action on it; REMOVE means not
    matched. Updated means at the policy's `revision` (not at a stable one that waves keep it
    on); ready, updated and rolled out."""
    if action.kind is Kind.REMOVE:
        return _shares(0, 0, 0, 0, int(bool(action.conflict)))
    if action.kind is Kind.CONFLICT:
        return _shares(1, 0, 0, 1, 0)
    updated = action.kind is Kind.IN_SYNC and action.revision == revision
    return _shares(1, int(updated), int(updated and rolled_out), 0, 0)


@functools.cache
def _shares(*values: int) -> Counts:
    """One `Counts` per combination, shared: a tally holds one share per workload."""
    return Counts(*values)


def total(parts: Iterable[Counts]) -> Counts:
    """Counts added up (a policy's, from those of each kind). Field by field: `astuple` deep
    copies, and this runs in every pass."""
    parts = list(parts)
    return Counts(
        matched=sum(p.matched for p in parts),
        updated=sum(p.updated for p in parts),
        ready=sum(p.ready for p in parts),
        conflicts=sum(p.conflicts for p in parts),
        blocked=sum(p.blocked for p in parts),
    )


def _condition(kind: str, status: bool, reason: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
    }


def _names(keys: Sequence[Key]) -> str:
    names = ", ".join(str(key) for key in keys[:10])
    return names + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")


def halted_message(failing: Sequence[Key]) -> str:
    return (
        f"rollout halted: {_names(failing)} failed to progress with the current revision "
        "(ProgressDeadlineExceeded, or still rolling out after progressDeadlineSeconds); "
        "fix or exclude them, or change the policy, to resume"
    )


@dataclass(frozen=True)
class Wave:
    """Where a rollout in steps stands, for the conditions' words."""

    phase: Phase
    step: int
    steps: int
    name: str | None = None
    policy: str = ""
    resume_at: str | None = None  # a duration pause's end (RFC 3339)
    stable: str = ""  # the stable revision ("" for nothing)

    @property
    def label(self) -> str:
        named = f" ({self.name})" if self.name else ""
        return f"step {self.step + 1}/{self.steps}{named}"


def conditions(
    counts: Counts,
    *,
    paused: bool,
    failing: Sequence[Key] = (),
    owner_paused: Sequence[Key] = (),
    conflict_examples: Sequence[str] = (),
    wave: Wave | None = None,
) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded, following the Available/Progressing/Degraded
    conventions, without timestamps (merged in by `merge_conditions`)."""
    wanted = counts.matched - counts.conflicts
    done = counts.ready == wanted and counts.updated == wanted
    progress = f"{counts.ready}/{wanted} workloads ready, {counts.updated}/{wanted} updated"
    if owner_paused:
        progress += (
            f"; {len(owner_paused)} paused by their owners, waiting for them to resume "
            f"(kubectl rollout resume): {_names(owner_paused)}"
        )
    if done:
        ready = _condition(
            "Ready",
            True,
            "Complete",
            f"all {wanted} matched workloads carry the current revision and are rolled out",
        )
        progressing = _condition("Progressing", False, "Complete", progress)
    elif failing:
        ready = _condition("Ready", False, "RolloutHalted", progress)
        progressing = _condition("Progressing", False, "RolloutHalted", halted_message(failing))
    elif paused:
        ready = _condition("Ready", False, "Paused", progress)
        progressing = _condition(
            "Progressing", False, "Paused", f"updateStrategy.paused is true; {progress}"
        )
    elif wave is not None and wave.phase is not Phase.ROLLING:
        reason, message = _waiting(wave, progress)
        ready = _condition("Ready", False, reason, progress)
        progressing = _condition("Progressing", False, reason, message)
    else:
        if wave is not None and wave.steps > 1:
            progress = f"{wave.label}: {progress}"
        ready = _condition("Ready", False, "RollingOut", progress)
        progressing = _condition("Progressing", True, "RollingOut", progress)
    examples = "; ".join(conflict_examples[:3])
    if counts.conflicts:
        degraded = _condition(
            "Degraded",
            True,
            "Conflicts",
            f"{counts.conflicts} matched workloads skipped: {examples}",
        )
    elif counts.blocked:
        degraded = _condition(
            "Degraded",
            True,
            "RemovalBlocked",
            f"the sidecars cannot be removed from {counts.blocked} workloads: {examples}",
        )
    else:
        degraded = _condition("Degraded", False, "NoConflicts", "no matched workload skipped")
    return [ready, progressing, degraded]


def _waiting(wave: Wave, progress: str) -> tuple[str, str]:
    """A rollout in steps that waits: the reason, and what for."""
    stable = wave.stable or "nothing (no sidecars)"
    match wave.phase:
        case Phase.ABORTED:
            return Phase.ABORTED.value, (
                f"aborted: every workload goes back to the stable revision, {stable}; a change "
                f"of the spec starts a new rollout; {progress}"
            )
        case Phase.WAITING:
            return Phase.WAITING.value, (
                f"{wave.label} done, waiting for promotion (kubectl sidecars rollout promote "
                f"{wave.policy}); {progress}"
            )
        case _:
            return Phase.STEP_PAUSED.value, (
                f"{wave.label} done, pausing until {wave.resume_at}; {progress}"
            )


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[dict[str, Any]], *, now: str, generation: int
) -> list[dict[str, Any]]:
    """Keep lastTransitionTime unless the status flipped, so an unchanged status is equal."""
    previous = {c.get("type"): c for c in old}
    merged = []
    for condition in new:
        before = previous.get(condition["type"])
        same = before is not None and before.get("status") == condition["status"]
        stamp = before.get("lastTransitionTime") if same and before else now
        merged.append({**condition, "lastTransitionTime": stamp, "observedGeneration": generation})
    return merged


def policy_status(
    policy: Policy,
    counts: Counts,
    old: Mapping[str, Any],
    *,
    kinds: Iterable[WorkloadKind],
    failing: Sequence[Key],
    conflict_examples: Sequence[str],
    now: str,
    owner_paused: Sequence[Key] = (),
    wave: Wave | None = None,
    rollout: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The policy's whole status; `old` is the status it has, whose transition times hold;
    `rollout` the fields of its rollout in steps (`currentRevision`, `currentStep`, ...)."""
    return {
        **(rollout or {}),
        "observedGeneration": policy.generation,
        "revision": policy.spec.revision,
        "matchedWorkloads": counts.matched,
        "updatedWorkloads": counts.updated,
        "readyWorkloads": counts.ready,
        "conflicts": counts.conflicts,
        "workloadKinds": sorted({kind.value for kind in kinds}),
        "conditions": merge_conditions(
            old.get("conditions") or [],
            conditions(
                counts,
                paused=policy.spec.update_strategy.paused,
                failing=failing,
                owner_paused=owner_paused,
                conflict_examples=conflict_examples,
                wave=wave,
            ),
            now=now,
            generation=policy.generation,
        ),
    }


def removal_held(
    policy: Policy, old: Mapping[str, Any], failures: Sequence[str], *, now: str
) -> dict[str, Any]:
    """The status of a policy being deleted whose sidecars stay on some workloads: its
    finalizer holds the deletion, and the conditions say where and why."""
    shown = "; ".join(failures[:3]) + (
        f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
    )
    conditions = [
        _condition(
            "Ready",
            False,
            "Terminating",
            f"deleting: the sidecars stay on {len(failures)} workloads until they can be removed",
        ),
        _condition("Progressing", False, "Terminating", "the policy is being deleted"),
        _condition("Degraded", True, "RemovalBlocked", shown),
    ]
    return {
        "conditions": merge_conditions(
            old.get("conditions") or [], conditions, now=now, generation=policy.generation
        )
    }


def rolling_on(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The same rollout, of the same revision, at the same step: only its counts moved (and the
    messages quoting them), or workloads coming and going took it from complete to rolling out
    or back. Such a status keeps to a steady pace: under churn, written at once, it was a write
    (and a watch event in every replica) per created workload. A new generation or revision, a
    step, a halt, a pause or a conflict is written at once."""

    def phase(status: Mapping[str, Any]) -> tuple[Any, ...]:
        conditions = status.get("conditions") or []
        return (
            status.get("observedGeneration"),
            status.get("revision"),
            status.get("currentRevision"),
            status.get("currentStep"),
            tuple(
                (c.get("type"), "moving")
                if c.get("reason") in _MOVING
                else (c.get("type"), c.get("status"), c.get("reason"))
                for c in conditions
            ),
        )

    return bool(old) and phase(old) == phase(new)


_MOVING = frozenset({"Complete", "RollingOut"})  # the reasons counts alone move between
