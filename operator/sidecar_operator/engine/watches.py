"""What the operator lists and watches: SidecarPolicies, Namespaces and the policies' revision
history (ControllerRevisions in the operator's namespace) always, in every replica (a standby
answers admission, so it decides from current state too, and takes over with a warm cache), and
each kind of workload some policy needs; per kind, whether it has been listed whole.

A kind costs nothing until a policy needs it (`Cache.kinds_wanted`): a cluster with 5000
StatefulSets and only Deployment policies never lists them. A kind no policy needs any more is
let go: its watch stops and its snapshots are dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import structlog

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.names import HISTORY_POLICY_LABEL
from sidecar_operator.core.types import Key
from sidecar_operator.engine.flags import Flag
from sidecar_operator.engine.tasks import spawn
from sidecar_operator.kube.client import NAMESPACES, POLICIES, revisions_path, workloads_path
from sidecar_operator.kube.watch import Identity, Resource, Source, Watch

log = structlog.get_logger()


class Listings:
    """Per kind, whether its watch has listed every workload of it since it started: until
    then the cache lacks some, and no pass counts on it."""

    def __init__(self) -> None:
        self._flags: dict[WorkloadKind, Flag] = {}

    def _flag(self, kind: WorkloadKind) -> Flag:
        return self._flags.setdefault(kind, Flag())

    def listed(self, kind: WorkloadKind) -> None:
        self._flag(kind).set()

    def unlisted(self, kind: WorkloadKind) -> None:
        self._flag(kind).clear()

    def complete(self, kinds: Iterable[WorkloadKind]) -> bool:
        return all(self._flag(kind).is_set() for kind in kinds)

    async def wait(self, kinds: Iterable[WorkloadKind], seconds: float | None = None) -> bool:
        """True once every one of these kinds is listed; False if `seconds` passed first."""
        waits = [self._flag(kind).wait_at_most(seconds) for kind in kinds]
        return all(await asyncio.gather(*waits))


class WorkloadSink(Protocol):
    def workload_changed(self, workload: dict[str, Any], *, deleted: bool) -> None: ...

    def workloads_listed(self, kind: WorkloadKind, keys: Iterable[Key]) -> None: ...


class Sink(WorkloadSink, Protocol):
    def policy_seen(self, policy: dict[str, Any], deleted: bool) -> None: ...

    def policies_listed(self, seen: list[Identity]) -> None: ...

    def namespace_seen(self, namespace: dict[str, Any], deleted: bool) -> None: ...

    def namespaces_listed(self, seen: list[Identity]) -> None: ...

    def revision_seen(self, revision: dict[str, Any], deleted: bool) -> None: ...

    def revisions_listed(self, seen: list[Identity]) -> None: ...


def workload_resource(kind: WorkloadKind, sink: WorkloadSink) -> Resource:
    """Every workload of one kind, handed to the sink."""

    def listed(seen: list[Identity]) -> None:
        sink.workloads_listed(kind, [Key(namespace, name, kind) for namespace, name in seen])

    return Resource(
        name=kind.plural,
        path=workloads_path(kind),
        changed=lambda workload, deleted: sink.workload_changed(workload, deleted=deleted),
        listed=listed,
        kind=kind.value,
    )


class Watches:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        *,
        after: asyncio.Event,
        dropped: Callable[[WorkloadKind], None],
        history_namespace: str,
    ) -> None:
        self.source = source
        self.sink = sink
        self.after = after  # set once policies and namespaces are known
        self.dropped = dropped  # a kind let go: forget what the cache holds of it
        self._running: dict[WorkloadKind, tuple[Watch, asyncio.Task[None]]] = {}
        now = asyncio.Event()
        now.set()
        self._always = [
            Watch(source, resource, after=now)
            for resource in (
                Resource("sidecarpolicies", POLICIES, sink.policy_seen, sink.policies_listed),
                Resource("namespaces", NAMESPACES, sink.namespace_seen, sink.namespaces_listed),
                Resource(
                    "controllerrevisions",
                    revisions_path(history_namespace),
                    sink.revision_seen,
                    sink.revisions_listed,
                    label_selector=HISTORY_POLICY_LABEL,
                ),
            )
        ]
        self._tasks = [spawn(watch.run(), f"watch {watch.resource.name}") for watch in self._always]

    def want(self, kinds: Iterable[WorkloadKind]) -> None:
        """Watch exactly these kinds from now on."""
        wanted = set(kinds)
        for kind in wanted - self._running.keys():
            watch = Watch(self.source, workload_resource(kind, self.sink), after=self.after)
            self._running[kind] = (watch, spawn(watch.run(), f"watch {kind.plural}"))
            log.info("Watching", kind=kind.value)
        for kind in self._running.keys() - wanted:
            _, task = self._running.pop(kind)
            task.cancel()
            self.dropped(kind)
            log.info("Stopped watching", kind=kind.value)

    def relist(self) -> None:
        """List every watched kind again (then watch on): the snapshots keep more than before."""
        for kind, (_, task) in list(self._running.items()):
            task.cancel()
            watch = Watch(self.source, workload_resource(kind, self.sink), after=self.after)
            self._running[kind] = (watch, spawn(watch.run(), f"watch {kind.plural}"))
            log.info("Listing again", kind=kind.value)

    @property
    def state(self) -> str:
        """What /healthz reports: each watch's state."""
        watches = [*self._always, *(watch for _, (watch, _) in sorted(self._running.items()))]
        return ", ".join(f"{watch.resource.name}: {watch.state}" for watch in watches)

    async def stop(self) -> None:
        tasks = [*self._tasks, *(task for _, task in self._running.values())]
        self._running.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
