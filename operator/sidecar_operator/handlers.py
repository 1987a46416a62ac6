"""Every Kopf entry point, in one place. Each is thin: it hands the watched state to
`engine.runtime.Runtime`, which asks the pure core what to do and does it.

Kopf runs each SidecarPolicy's worker and holds its finalizer, so its bookkeeping stays on
SidecarPolicies. What the operator decides from (policies, Namespaces, and the workloads of every
kind some policy needs) comes from its own watches (`kube.watch`, `engine.watches`; see there
why not Kopf's), which run in every replica. Every handler is a coroutine on Kopf's loop, where
everything else of the operator runs too: the watches, the leadership check and the Event
posters are tasks started here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import structlog

from sidecar_operator.api import names
from sidecar_operator.core import selection
from sidecar_operator.engine.heap import Heap
from sidecar_operator.engine.leadership import LIFETIME, Identity, Leadership
from sidecar_operator.engine.runtime import Runtime
from sidecar_operator.engine.tasks import spawn
from sidecar_operator.engine.watches import Watches
from sidecar_operator.engine.writer import WRITERS
from sidecar_operator.kube.client import ApiError, KubeApi
from sidecar_operator.kube.connection import NotConfigured
from sidecar_operator.kube.events import POSTERS, EventPoster
from sidecar_operator.webhook import AdmissionServer

log = structlog.get_logger()
POLICIES = (f"{names.GROUP}/{names.VERSION}", names.PLURAL)
LIST_CHUNK = 100


@dataclass(frozen=True)
class Webhook:
    """Where admission is served, and with which certificate, the same in every replica:
    `certs`, a directory holding `tls.crt`, `tls.key` and `ca.crt` (a TLS Secret's layout), or
    `secret`, a Secret in the operator's namespace that the first replica creates for `service`
    (`kube.webhook_tls`), whose CA goes into the webhook `configuration`."""

    port: int
    certs: Path | None = None
    secret: str | None = None
    service: str = "sidecar-operator-webhook"
    configuration: str | None = None


@dataclass(frozen=True)
class Options:
    """What the `run` command passes in Kopf's memo (`memo.options`)."""

    identity: Identity
    operator_namespace: str | None = None
    resync_seconds: float = 60.0
    peering: str | None = None
    webhook: Webhook | None = None
    shard: str | None = None  # the policies served: `core.selection.serves`


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf keeps a copy of each object's spec to diff it for on-create/on-update handlers; by
    default in an annotation, which refuses a spec over 256 KiB (and then deletion looped on
    "Too long"). The operator has no such handlers: it derives everything from the object itself.
    So nothing is kept, and Kopf sees every event as new, with no handler to call for it."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime | None = memo.get("runtime")
    if runtime is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Everything the handlers share goes into Kopf's memo, which every handler is given (and of
    which every object's memo is a shallow copy, made after start-up)."""
    options: Options = memo.options
    settings.persistence.finalizer = names.finalizer(options.shard)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.WARNING  # Kopf's own warnings become Events; info does not
    settings.watching.server_timeout = 300
    settings.watching.chunk_size = LIST_CHUNK  # list in pages, not all in one response
    settings.peering.lifetime = LIFETIME
    if "kube" not in memo:  # not again when a retry of this handler comes back here
        # One connection each for the writers, the Event posters, the watch, status and reads:
        # the bound on requests in flight across all policies.
        try:
            memo.kube = await KubeApi.connect(connections=WRITERS + POSTERS + 5)
        except NotConfigured as error:  # no retry mends a missing kubeconfig: exit, saying so
            raise kopf.PermanentError(str(error)) from None
    kube: KubeApi = memo.kube
    if options.peering:
        try:
            await kube.ensure_cluster_peering(options.peering)
        except ApiError as error:  # e.g. its CRD installed a moment ago and not served yet
            raise kopf.TemporaryError(
                f"cannot create the peering object: {error.message}", delay=2
            ) from None
    if options.webhook is not None:
        # The webhook configuration is the installer's (its selectors, timeout and failure
        # policy are not Kopf's to set), so Kopf only serves it.
        certs = await _webhook_certs(kube, options.webhook, options.operator_namespace)
        settings.admission.managed = None
        settings.admission.server = AdmissionServer(
            memo,
            addr="0.0.0.0",  # the API server calls in from outside the pod
            port=options.webhook.port,
            certfile=str(certs / "tls.crt"),
            pkeyfile=str(certs / "tls.key"),
            cafile=str(certs / "ca.crt"),
        )
    memo.leadership = leadership = Leadership(options.identity, peering=options.peering)
    memo.events = events = EventPoster(kube)
    memo.runtime = runtime = Runtime(
        kube,
        events,
        leadership=leadership,
        operator_namespace=options.operator_namespace,
        resync_seconds=options.resync_seconds,
        shard=options.shard,
    )
    heap = Heap(runtime.cache)
    runtime.on_first_listing = heap.freeze
    leadership.on_change = runtime.became
    memo.watches = watches = Watches(
        kube,
        runtime,
        after=runtime.indexed,
        dropped=runtime.kind_dropped,
        history_namespace=runtime.history_namespace,
    )
    runtime.watch_kinds = watches.want
    runtime.relist = watches.relist
    memo.tasks = [spawn(leadership.run(kube), "leadership"), spawn(heap.run(), "heap")]


async def _webhook_certs(kube: KubeApi, webhook: Webhook, namespace: str | None) -> Path:
    if webhook.certs is not None:
        return webhook.certs
    if webhook.secret is None or namespace is None:
        raise kopf.PermanentError("--webhook-secret needs --operator-namespace")
    # Only here: generating a certificate is the one use of `cryptography` on the run path.
    from sidecar_operator.kube import webhook_tls

    try:
        return await webhook_tls.prepare(
            kube,
            namespace=namespace,
            secret=webhook.secret,
            service=webhook.service,
            configuration=webhook.configuration,
        )
    except (ApiError, ConnectionError) as error:
        raise kopf.TemporaryError(
            f"cannot prepare the webhook's certificate: {error}", delay=2
        ) from None


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "leadership" in memo:
        memo.leadership.stop()
    tasks: list[asyncio.Task[None]] = memo.get("tasks", [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if "watches" in memo:
        await memo.watches.stop()
    if "events" in memo:
        await memo.events.close()
    if "kube" in memo:
        await memo.kube.close()


@kopf.on.probe(id="workloads")
async def workload_watches(memo: kopf.Memo, **_: Any) -> str:
    """What /healthz reports: each workload watch's state, named as it is. An API server that
    is away is not the operator's fault, and a restart would not bring it back: the probe stays
    healthy and says so, while the watches and the workers retry by themselves."""
    return memo.watches.state if "watches" in memo else "starting"


@kopf.on.probe(id="role")
async def role(memo: kopf.Memo, **_: Any) -> str:
    return "active" if "leadership" in memo and memo.leadership.active else "standby"


# -- policies: their workers and their deletion, in the active replica ------------------------
# What every replica knows of policies and Namespaces comes from the operator's own watches
# (`engine.watches`), not Kopf's: Kopf pauses its watches in a standby, which also answers
# admission. Kopf watches policies to run their workers and hold their finalizer.


def served(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> bool:
    """Kopf runs a worker and holds the finalizer only for the policies this operator serves
    (`--shard`); a policy relabelled away has its worker stopped and its finalizer removed."""
    options: Options = memo.options
    return selection.serves(options.shard, labels)


@kopf.daemon(*POLICIES, cancellation_timeout=10, when=served)
async def policy_worker(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Injects, updates, repairs and reports for one policy until Kopf cancels it (the policy
    is deleted, this replica stands by, or the operator stops)."""
    await _runtime(memo).run_worker(name)


@kopf.on.delete(*POLICIES, when=served)
async def policy_deleted(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Holds the policy (by its finalizer) until no workload carries anything of it."""
    state = _runtime(memo)
    if not await state.listings.wait(state.cache.kinds_of(name), 30):
        raise kopf.TemporaryError("still listing workloads", delay=1)
    failures = await state.cleanup.remove_everywhere(name)
    if failures:
        await state.removal_held(name, failures)
        raise kopf.TemporaryError(
            f"could not clean up {len(failures)} workloads: {'; '.join(failures[:5])}", delay=5
        )
    state.forget(name)
