"""The core's small shared types: what identifies a workload, and what a policy must do to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from sidecar_operator.api.kinds import WorkloadKind


class Key(NamedTuple):
    """A workload: a Deployment and a StatefulSet may share a namespace and a name."""

    namespace: str
    name: str
    kind: WorkloadKind = WorkloadKind.DEPLOYMENT

    @classmethod
    def of(cls, workload: Mapping[str, Any]) -> Key:
        metadata = workload["metadata"]
        return cls(metadata["namespace"], metadata["name"], WorkloadKind.of(workload))

    def __str__(self) -> str:
        """As messages name it: `namespace/name`, after the kind unless a Deployment."""
        path = f"{self.namespace}/{self.name}"
        return path if self.kind is WorkloadKind.DEPLOYMENT else f"{self.kind}/{path}"


class Kind(StrEnum):
    APPLY = "apply"  # send `body`: inject, update or repair
    REMOVE = "remove"  # send `body` (empty): release everything the policy owns
    IN_SYNC = "in-sync"  # matched and already as desired: write nothing
    CONFLICT = "conflict"  # matched but skipped; `body` releases what it had, if anything
    HOLD = "hold"  # matched; its target (a stable revision whose content is gone) is unknown


class Change(StrEnum):
    """What a write does to the Deployment: names its Events and labels its metrics."""

    INJECT = "inject"  # the policy had nothing there
    UPDATE = "update"  # it carries an older revision
    REPAIR = "repair"  # it carries the current revision, but something was edited or deleted
    REMOVE = "remove"  # the policy lets go of everything it added
    ADOPT = "adopt"  # admission added it as the current revision: the write takes ownership


@dataclass(frozen=True, slots=True)  # thousands are held in the plan memo
class Action:
    policy: str
    kind: Kind
    body: dict[str, Any] | None = None
    force: bool = False  # take back fields someone else changed inside the policy's own items
    change: Change | None = None  # what sending `body` does
    conflict: str = ""  # why a CONFLICT skips the workload (or a REMOVE cannot go), in words
    revision: str = ""
    drift: str = ""  # where an APPLY finds the workload unlike the policy, for messages
