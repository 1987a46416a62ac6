"""The policies' revision histories as their ControllerRevisions are seen (a watch in every
replica: admission needs the stable content too). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar_operator.core.history import Revision


class Histories:
    def __init__(self) -> None:
        self._of: dict[str, dict[str, Revision]] = {}  # policy -> revision hash -> Revision
        self._names: dict[str, Revision] = {}  # object name -> Revision
        self.version = 0  # moves with every change: rollouts derived from history follow it

    def put(self, obj: Mapping[str, Any], *, deleted: bool = False) -> Revision | None:
        """The revision now held under the object's name (None: deleted, or not a policy's)."""
        name = (obj.get("metadata") or {}).get("name", "")
        held = self._names.pop(name, None)
        if held is not None:
            self._of.get(held.policy, {}).pop(held.revision, None)
        revision = None if deleted else Revision.from_object(obj)
        if revision is not None:
            self._names[name] = revision
            self._of.setdefault(revision.policy, {})[revision.revision] = revision
        if held != revision:
            self.version += 1
        return revision

    def retain(self, names: set[str]) -> None:
        """A complete listing: forget what it lacks."""
        for name in set(self._names) - names:
            self.put({"metadata": {"name": name}}, deleted=True)

    def of(self, policy: str) -> Mapping[str, Revision]:
        return self._of.get(policy, {})
