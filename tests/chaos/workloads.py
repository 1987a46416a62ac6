"""The apps a chaos trial rolls sidecars into, and the policy it rolls: varied enough that a
lost, doubled or reordered part shows."""

from __future__ import annotations

import copy
from typing import Any

from tests.scenario import APP_WITH_INIT_AND_DATA

LABEL = "chaos"
GROUPS = ("a", "b")  # the policy selects both; relabelling b to UNMATCHED removes its sidecars
UNMATCHED = "gone"


def deployment(index: int, *, min_ready_seconds: int = 3) -> dict[str, Any]:
    """Three shapes in turn: a lone app; an app with its own init container, volume and mount;
    two containers with env, resources and a shared volume."""
    name = f"app-{index:02d}"
    shapes: list[dict[str, Any]] = [
        {"containers": [{"name": "app", "image": "nginx:1.27"}]},
        copy.deepcopy(APP_WITH_INIT_AND_DATA),
        {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "env": [{"name": "MODE", "value": "chaos"}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                },
                {"name": "proxy", "image": "envoyproxy/envoy:v1.31.0"},
            ],
            "volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}],
        },
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {LABEL: "yes", "group": GROUPS[index % 2]}},
        "spec": {
            "replicas": 1,
            "minReadySeconds": min_ready_seconds,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": shapes[index % 3]},
        },
    }


def policy_spec(namespace: str, image: str, *, max_concurrent: int = 5) -> dict[str, Any]:
    """A log shipper, a native-sidecar config sync, a shared volume mounted into the app."""
    return {
        "selector": {
            "matchLabels": {LABEL: "yes"},
            "matchExpressions": [{"key": "group", "operator": "In", "values": list(GROUPS)}],
        },
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "containers": [
            {
                "name": "shipper",
                "image": image,
                "volumeMounts": [{"name": "chaos-logs", "mountPath": "/logs", "readOnly": True}],
            }
        ],
        "initContainers": [
            {
                "name": "config-sync",
                "image": "registry.k8s.io/git-sync/git-sync:v4.2.4",
                "restartPolicy": "Always",
            }
        ],
        "volumes": [{"name": "chaos-logs", "emptyDir": {}}],
        "volumeMounts": [{"name": "chaos-logs", "mountPath": "/var/log/chaos"}],
        "updateStrategy": {"maxConcurrent": max_concurrent},
    }


def other_kinds() -> list[dict[str, Any]]:
    """A CronJob and a StatefulSet, as the orphans trial needs them."""
    template = {
        "metadata": {"labels": {"app": "other"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
    job_template = {
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [{"name": "job", "image": "busybox:1.36"}],
                }
            }
        }
    }
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "labels": {LABEL: "yes"}},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": job_template},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "store", "labels": {LABEL: "yes"}},
            "spec": {
                "replicas": 1,
                "serviceName": "store",
                "selector": {"matchLabels": {"app": "other"}},
                "template": template,
            },
        },
    ]
