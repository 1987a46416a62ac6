"""The slice of a Deployment the operator keeps in memory. Pure.

Every Deployment in the cluster is watched, so the in-memory copy holds only what planning and
status need: identity, labels, our annotations, policies' managedFields entries, the pod
template's containers and volumes, and the rollout status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar_operator.api import FIELD_MANAGER_PREFIX, INJECT_ANNOTATION, REVISION_ANNOTATION_PREFIX

_POD_FIELDS = ("initContainers", "containers", "volumes")


def compact(deployment: Mapping[str, Any]) -> dict[str, Any]:
    metadata = deployment.get("metadata", {})
    spec = deployment.get("spec", {})
    status = deployment.get("status") or {}
    pod = spec.get("template", {}).get("spec", {})
    annotations = {
        key: value
        for key, value in (metadata.get("annotations") or {}).items()
        if key.startswith(REVISION_ANNOTATION_PREFIX) or key == INJECT_ANNOTATION
    }
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
            "generation": metadata.get("generation", 0),
            "labels": dict(metadata.get("labels") or {}),
            "annotations": annotations,
            "managedFields": [
                entry
                for entry in metadata.get("managedFields") or []
                if entry.get("manager", "").startswith(FIELD_MANAGER_PREFIX)
            ],
        },
        "spec": {
            "replicas": spec.get("replicas", 1),
            "template": {"spec": {key: pod[key] for key in _POD_FIELDS if key in pod}},
        },
        "status": {
            "observedGeneration": status.get("observedGeneration", 0),
            "replicas": status.get("replicas", 0),
            "updatedReplicas": status.get("updatedReplicas", 0),
            "availableReplicas": status.get("availableReplicas", 0),
            "conditions": [
                {"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason")}
                for c in status.get("conditions") or []
            ],
        },
    }
