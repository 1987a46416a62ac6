"""The mutating webhook: served by Kopf's webhook server (its TLS, and its restart when the
certificate files change), on the operator's one loop, but answered here.

Kopf's mutating handlers answer with `Patch.as_json_patch`: a deep copy of the object under
review and a diff of the whole of it against the copy the handler changed. That was 46% of the
webhook's CPU (docs/performance.md). The planner knows which few fields admission changes, so
the answer names them (`core.admission.json_patch`), and the review is read and written with
orjson. Every review the webhook configuration sends comes to this one path; it never denies.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import kopf
import orjson
import structlog

from sidecar_operator import metrics
from sidecar_operator.core import admission
from sidecar_operator.engine.runtime import Runtime

log = structlog.get_logger()

ADMISSION_ID = "inject.sidecars.dev"  # the webhook's URL path; a DNS name, as service paths need
WORKLOAD_RESOURCES = frozenset(
    {
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "cronjobs"),
    }
)


class AdmissionServer(kopf.WebhookServer):
    """Kopf's server, whose requests go to `answer` instead of Kopf's admission handlers."""

    def __init__(self, memo: kopf.Memo, **options: Any) -> None:
        super().__init__(**options)
        self._memo = memo  # where the runtime is, once the operator has started

    # Kopf's server calls `self._serve(fn, request)` for every request (kopf/_kits/webhooks.py,
    # the pinned release); its static method becomes this one, which never calls Kopf's `fn`.
    async def _serve(  # type: ignore[override]
        self, fn: Any, request: aiohttp.web.Request
    ) -> aiohttp.web.Response:
        try:
            review = orjson.loads(await request.read())
            asked = review["request"]
            uid, _, _ = asked["uid"], asked["resource"], asked["operation"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            # The API server sends none such: the call fails, and the configuration's
            # failurePolicy decides.
            raise aiohttp.web.HTTPBadRequest(reason=f"not an AdmissionReview: {error!r}") from None
        response: dict[str, Any] = {"uid": uid, "allowed": True}
        operations = answer(self._memo.get("runtime"), asked)
        if operations:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(orjson.dumps(operations)).decode()
        reply = {
            "apiVersion": review.get("apiVersion") or "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": response,
        }
        return aiohttp.web.Response(body=orjson.dumps(reply), content_type="application/json")


def answer(runtime: Runtime | None, request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch that does to a workload being created, or updated by its owner, what the
    controller would do now. Any failure lets the workload in unchanged (the controller catches
    up after): admission never blocks a deploy."""
    resource = request.get("resource") or {}
    if request.get("subResource") or request.get("operation") not in ("CREATE", "UPDATE"):
        return []  # scale and status have no pod template
    if (resource.get("group"), resource.get("resource")) not in WORKLOAD_RESOURCES:
        return []  # not ours: allowed unchanged
    started = time.perf_counter()
    workload, old = request["object"], request.get("oldObject")
    try:
        changed = None if runtime is None else runtime.admit(workload, old)
        updated = old is not None
        operations = (
            [] if changed is None else admission.json_patch(workload, changed, updated=updated)
        )
    except Exception as error:  # admission must never block a deploy
        log.warning("Admission failed; the workload goes in unchanged", error=repr(error))
        metrics.ADMISSION.labels(outcome="failed").observe(time.perf_counter() - started)
        return []
    outcome = "changed" if operations else "unchanged"
    metrics.ADMISSION.labels(outcome=outcome).observe(time.perf_counter() - started)
    return operations
