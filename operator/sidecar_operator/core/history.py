"""A policy's revision history, as apps/v1 ControllerRevisions: what one holds, which to keep,
and which to go back to. Pure.

Each distinct content a policy has had is one ControllerRevision named `<policy>-<revision>` in
the operator's namespace, owned by the (cluster-scoped) policy so that it is garbage-collected
with it. Its `data` is the content (what the policy adds, not its selector or strategy); its
`revision` number grows with each use, as the Deployment controller's ReplicaSets do: a content
used again (an undo) gets the next number. The stable revision's carries a label, so that it
survives a status lost or restored from a backup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from sidecar_operator.api import names
from sidecar_operator.api.models import CHANGE_CAUSE, Content, Policy


@dataclass(frozen=True)
class Revision:
    """One ControllerRevision of a policy."""

    name: str
    policy: str
    revision: str  # the content's hash
    number: int
    content: Content
    stable: bool = False
    cause: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Revision | None:
        """None for an object that is not a policy's revision (or whose content no longer
        reads)."""
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        policy = labels.get(names.HISTORY_POLICY_LABEL)
        revision = labels.get(names.HISTORY_REVISION_LABEL)
        if not policy or not revision:
            return None
        try:
            content = Content.model_validate(obj.get("data") or {})
        except ValidationError:
            return None
        return cls(
            name=metadata.get("name", ""),
            policy=policy,
            revision=revision,
            number=int(obj.get("revision") or 0),
            content=content,
            stable=labels.get(names.HISTORY_STABLE_LABEL) == "true",
            cause=(metadata.get("annotations") or {}).get(CHANGE_CAUSE, ""),
        )


def object_name(policy: str, revision: str) -> str:
    return f"{policy}-{revision}"


def body(
    policy: Policy, content: Content, *, namespace: str, number: int, stable: bool = False
) -> dict[str, Any]:
    """A ControllerRevision holding `content` as revision `number` of the policy."""
    labels = {
        names.HISTORY_POLICY_LABEL: policy.name,
        names.HISTORY_REVISION_LABEL: content.revision,
    }
    if stable:
        labels[names.HISTORY_STABLE_LABEL] = "true"
    metadata: dict[str, Any] = {
        "name": object_name(policy.name, content.revision),
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": f"{names.GROUP}/{names.VERSION}",
                "kind": names.KIND,
                "name": policy.name,
                "uid": policy.uid,
                "controller": True,
            }
        ],
    }
    if policy.change_cause:
        metadata["annotations"] = {CHANGE_CAUSE: policy.change_cause}
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": metadata,
        "data": content.to_api(),
        "revision": number,
    }


def next_number(revisions: Iterable[Revision]) -> int:
    return max((r.number for r in revisions), default=0) + 1


def pruned(
    revisions: Iterable[Revision], *, keep: int, stable: str | None, update: str
) -> list[Revision]:
    """What to delete: all but the stable, the update and the `keep` newest others."""
    others = sorted(
        (r for r in revisions if r.revision not in (stable, update)),
        key=lambda r: r.number,
        reverse=True,
    )
    return others[keep:]


def undo_target(
    revisions: Iterable[Revision], *, current: str, to_number: int | None
) -> Revision | None:
    """`kubectl rollout undo`'s choice: the revision numbered `to_number`, or else the newest
    before the current one (None: there is none)."""
    ordered = sorted(revisions, key=lambda r: r.number, reverse=True)
    if to_number is not None:
        return next((r for r in ordered if r.number == to_number), None)
    return next((r for r in ordered if r.revision != current), None)
