"""Keeping each policy's revision history as ControllerRevisions (`core.history`): the update
revision's kept, as the newest; the stable one labelled; the oldest pruned beyond
`revisionHistoryLimit`. Only the active replica writes; every replica watches them
(`engine.watches`), since admission needs the stable content too. A write that fails is tried
again on the policy's next pass: nothing waits on history but a rollout's first step."""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from sidecar_operator.api import names
from sidecar_operator.api.models import Policy
from sidecar_operator.core import history
from sidecar_operator.engine.leadership import Leadership
from sidecar_operator.kube.client import ApiError
from sidecar_operator.state.history import Histories

log = structlog.get_logger()


class Api(Protocol):
    async def create_revision(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch_revision(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]: ...

    async def delete_revision(self, namespace: str, name: str) -> None: ...


class Keeper:
    def __init__(
        self, api: Api, histories: Histories, *, leadership: Leadership, namespace: str
    ) -> None:
        self.api = api
        self.histories = histories
        self.leadership = leadership
        self.namespace = namespace

    async def sync(self, policy: Policy, stable: str | None) -> None:
        """Keep the policy's history as its rollout stands: `stable` is the stable revision
        ("" for nothing; None: not known, left as it is)."""
        if not self.leadership.active or not policy.uid:
            return
        try:
            await self._update_is_newest(policy)
            if stable is not None:  # not known: nothing of the history may go
                await self._label_stable(policy, stable)
                await self._prune(policy, stable)
        except (ApiError, ConnectionError) as error:
            log.warning("Revision history not kept yet", policy=policy.name, error=str(error))

    async def _update_is_newest(self, policy: Policy) -> None:
        revisions = self.histories.of(policy.name)
        held = revisions.get(policy.spec.revision)
        newest = max((r.number for r in revisions.values()), default=0)
        if held is not None and held.number == newest:
            return
        number = history.next_number(revisions.values())
        if held is None:
            body = history.body(
                policy, policy.spec.content, namespace=self.namespace, number=number
            )
            try:
                self.histories.put(await self.api.create_revision(body))
            except ApiError as error:
                if error.status != 409:  # made meanwhile: its watch event brings it
                    raise
        else:  # content used again (an undo): the next number, as a Deployment's history does
            patched = await self.api.patch_revision(self.namespace, held.name, {"revision": number})
            self.histories.put(patched)

    async def _label_stable(self, policy: Policy, stable: str) -> None:
        for revision in list(self.histories.of(policy.name).values()):
            wanted = revision.revision == stable
            if revision.stable != wanted:
                label = "true" if wanted else None
                patch = {"metadata": {"labels": {names.HISTORY_STABLE_LABEL: label}}}
                self.histories.put(
                    await self.api.patch_revision(self.namespace, revision.name, patch)
                )

    async def _prune(self, policy: Policy, stable: str) -> None:
        revisions = list(self.histories.of(policy.name).values())
        keep = policy.spec.revision_history_limit
        for revision in history.pruned(
            revisions, keep=keep, stable=stable, update=policy.spec.revision
        ):
            await self.api.delete_revision(self.namespace, revision.name)
            self.histories.put({"metadata": {"name": revision.name}}, deleted=True)
