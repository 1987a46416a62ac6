"""Every Kopf entry point, in one place. Each is thin: it hands the watched state to
`reconcile.Runtime`, which asks the pure core what to do and does it.

Deployments and Namespaces are only indexed and observed (`@kopf.index`, `@kopf.on.event`), so
Kopf writes no annotations or finalizers on them; its bookkeeping stays on SidecarPolicies.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from sidecar_operator import api
from sidecar_operator.kubeapi import ApiError, EventPoster, KubeApi, load_config
from sidecar_operator.reconcile import WRITERS, Runtime

POLICIES = (f"{api.GROUP}/{api.VERSION}", api.PLURAL)
DEPLOYMENTS = ("apps/v1", "deployments")
NAMESPACES = ("v1", "namespaces")
LIST_CHUNK = 100


class Options:
    """Set by the `run` command before Kopf starts."""

    operator_namespace: str | None = None
    resync_seconds: float = 60.0
    peering: str | None = None


runtime: Runtime | None = None


def _runtime() -> Runtime:
    if runtime is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return runtime


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global runtime
    prefix = api.GROUP
    settings.persistence.finalizer = f"{prefix}/cleanup"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Kopf's own warnings become Events; info does not
    settings.watching.server_timeout = 300
    # Memory: list in pages rather than all Deployments in one response, and let each object's
    # worker (which holds its last full body) end soon after its events stop.
    settings.watching.chunk_size = LIST_CHUNK
    settings.batching.idle_timeout = 1.0
    load_config()
    kube = KubeApi(connections=WRITERS + 4)  # the writers, Events, status and reads
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
        operator_namespace=Options.operator_namespace,
        resync_seconds=Options.resync_seconds,
    )


# -- the watch caches ------------------------------------------------------------------------
# Kopf calls indexers for every object of the initial listings before any other handler or
# daemon, so the cache is complete before the first worker pass. They keep nothing in Kopf's own
# indexes (they return None): the cache holds one compact snapshot per Deployment, readable from
# the workers' threads under a lock. Indexers and event handlers never block, so they are
# coroutines: run on the event loop at once, a listing of thousands of Deployments is not queued
# up (full bodies and all) waiting for a thread pool.


@kopf.index(*DEPLOYMENTS)
async def deployments(body: kopf.Body, **_: Any) -> None:
    _runtime().cache.put_deployment(body)


@kopf.index(*NAMESPACES)
async def namespaces(name: str, labels: kopf.Labels, **_: Any) -> None:
    _runtime().cache.put_namespace(name, labels)


@kopf.index(*POLICIES)
async def policies(body: kopf.Body, **_: Any) -> None:
    _runtime().cache.put_policy(body)


# -- reactions -------------------------------------------------------------------------------


@kopf.on.event(*DEPLOYMENTS)
async def deployment_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    _runtime().deployment_changed(body, deleted=event["type"] == "DELETED")


@kopf.on.event(*NAMESPACES)
async def namespace_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
    state = _runtime()
    if event["type"] == "DELETED":
        state.cache.drop_namespace(name)
    state.poke_all()


@kopf.on.event(*POLICIES)
async def policy_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
    state = _runtime()
    if event["type"] == "DELETED":
        state.cache.drop_policy(name)
    state.worker(name).poke()


@kopf.daemon(*POLICIES, cancellation_timeout=10)
def policy_worker(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Injects, updates, repairs and reports for one policy until it is deleted."""
    _runtime().run_worker(name, lambda: bool(stopped))


@kopf.on.delete(*POLICIES)
def policy_deleted(name: str, **_: Any) -> None:
    """Holds the policy (by its finalizer) until no Deployment carries anything of it."""
    state = _runtime()
    failures = state.remove_everywhere(name)
    if failures:
        raise kopf.TemporaryError(
            f"could not clean up {len(failures)} Deployments: {'; '.join(failures[:5])}", delay=5
        )
    state.forget(name)
