"""Every Kopf entry point, in one place. Each is thin: it hands the watched state to
`reconcile.Runtime`, which asks the pure core what to do and does it.

Kopf watches SidecarPolicies and Namespaces; Namespaces are only indexed and observed, so Kopf
writes no annotations or finalizers on them, and its bookkeeping stays on SidecarPolicies.
Deployments, the many, are watched by `watch.DeploymentWatch` (see there why not by Kopf).
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import kopf

from sidecar_operator import api
from sidecar_operator.kubeapi import POSTERS, ApiError, EventPoster, KubeApi, load_config
from sidecar_operator.reconcile import WRITERS, Runtime
from sidecar_operator.watch import DeploymentWatch

POLICIES = (f"{api.GROUP}/{api.VERSION}", api.PLURAL)
NAMESPACES = ("v1", "namespaces")
LIST_CHUNK = 100


class Options:
    """Set by the `run` command before Kopf starts."""

    operator_namespace: str | None = None
    resync_seconds: float = 60.0
    peering: str | None = None


runtime: Runtime | None = None
kube: KubeApi | None = None


def _runtime() -> Runtime:
    if runtime is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global runtime, kube
    prefix = api.GROUP
    settings.persistence.finalizer = f"{prefix}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Kopf's own warnings become Events; info does not
    settings.watching.server_timeout = 300
    settings.watching.chunk_size = LIST_CHUNK  # list in pages, not all in one response
    load_config()
    # One connection each for the writers, the Event posters, status and reads: the bound on
    # requests in flight across all policies.
    kube = KubeApi(connections=WRITERS + POSTERS + 4)
    if Options.peering:
        try:
            kube.ensure_cluster_peering(Options.peering)
        except ApiError as error:  # e.g. its CRD installed a moment ago and not served yet
            raise kopf.TemporaryError(
                f"cannot create the peering object: {error.message}", delay=2
            ) from None
    runtime = Runtime(
        kube,
        EventPoster(kube),
        loop=kube.loop,
        operator_namespace=Options.operator_namespace,
        resync_seconds=Options.resync_seconds,
        on_first_listing=_freeze_heap,
    )
    DeploymentWatch(kube, runtime, after=runtime.indexed).start()


def _freeze_heap() -> None:
    """What is alive after the first listing (Kopf, the modules, a snapshot of every Deployment)
    mostly lives as long as the process: frozen, the cyclic collector's full passes stop walking
    it. They took 0.10-0.24 s each, about once a rollout at N=5000, stalling every thread."""
    gc.collect()
    gc.freeze()


@kopf.on.cleanup()
def close(**_: Any) -> None:
    if kube is not None:
        kube.close()


# -- the watch caches ------------------------------------------------------------------------
# Kopf calls indexers for every object of the initial listings before any other handler or
# daemon, so Namespaces and policies are in the cache before the first worker pass (which also
# waits for the Deployment watch's first listing). They keep nothing in Kopf's own indexes
# (they return None) and never block, so they are coroutines, run on the event loop at once.


@kopf.index(*NAMESPACES)
async def namespaces(name: str, labels: kopf.Labels, **_: Any) -> None:
    _runtime().cache.put_namespace(name, labels)


@kopf.index(*POLICIES)
async def policies(body: kopf.Body, **_: Any) -> None:
    _runtime().cache.put_policy(body)


# -- reactions -------------------------------------------------------------------------------


@kopf.on.event(*NAMESPACES)
async def namespace_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
    state = _runtime()
    state.indexed.set()  # Kopf calls no event handler before every index is filled
    if event["type"] == "DELETED":
        state.cache.drop_namespace(name)
    state.poke_all()


@kopf.on.event(*POLICIES)
async def policy_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
    state = _runtime()
    state.indexed.set()
    if event["type"] == "DELETED":
        state.cache.drop_policy(name)
    state.policy_changed(name)


@kopf.daemon(*POLICIES, cancellation_timeout=10)
def policy_worker(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Injects, updates, repairs and reports for one policy until it is deleted."""
    _runtime().run_worker(name, lambda: bool(stopped))


@kopf.on.delete(*POLICIES)
def policy_deleted(name: str, **_: Any) -> None:
    """Holds the policy (by its finalizer) until no Deployment carries anything of it."""
    state = _runtime()
    if not state.listed.wait(30):
        raise kopf.TemporaryError("still listing Deployments", delay=1)
    failures = state.remove_everywhere(name)
    if failures:
        raise kopf.TemporaryError(
            f"could not clean up {len(failures)} Deployments: {'; '.join(failures[:5])}", delay=5
        )
    state.forget(name)
