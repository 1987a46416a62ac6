"""kwok Stages: kwok's own (Nodes Ready, Pods Running and Ready, deleted Pods gone) plus one of
this project's: a Pod with any container image tagged `never-ready` turns Running but never
Ready, as a crash-looping sidecar would leave it. Its Deployment then misses its progress
deadline, so rollout failures are tested for real without a container runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NEVER_READY_TAG = ":never-ready"
_BROKEN_CONTAINERS = (
    "[(.spec.containers // [])[], (.spec.initContainers // [])[]] | .[]"
    f' | select(.image | endswith("{NEVER_READY_TAG}")) | .name'
)


def _statuses(field: str) -> str:
    """Every container of the list running; those with a never-ready image not ready."""
    return (
        f"{field}Statuses:\n{{{{ range .spec.{field}s }}}}\n"
        "- image: {{ .image | Quote }}\n"
        "  name: {{ .name | Quote }}\n"
        f'  ready: {{{{ not (hasSuffix "{NEVER_READY_TAG}" .image) }}}}\n'
        "  restartCount: 0\n"
        "  started: true\n"
        "  state: {running: {startedAt: {{ $now | Quote }}}}\n"
        "{{ end }}\n"
    )


_NEVER_READY_STATUS = (
    "{{ $now := Now }}\n"
    "conditions:\n"
    '- {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}\n'
    '- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: Ready,'
    " reason: ContainersNotReady}\n"
    '- {lastTransitionTime: {{ $now | Quote }}, status: "False", type: ContainersReady,'
    " reason: ContainersNotReady}\n"
    + _statuses("container")
    + _statuses("initContainer")
    + "phase: Running\n"
    "startTime: {{ $now | Quote }}\n"
)


def _never_ready_stage() -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": "pod-never-ready"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".status.phase", "operator": "In", "values": ["Pending"]},
                    {"key": _BROKEN_CONTAINERS, "operator": "Exists"},
                ]
            },
            "next": {"statusTemplate": _NEVER_READY_STATUS},
        },
    }


def write(kwok_stages: Path, destination: Path) -> Path:
    """kwok's stages, with its pod-ready stage told to leave never-ready Pods alone, and ours."""
    stages = [stage for stage in yaml.safe_load_all(kwok_stages.read_text()) if stage]
    for stage in stages:
        if stage["metadata"]["name"] == "pod-ready":
            stage["spec"]["selector"]["matchExpressions"].append(
                {"key": _BROKEN_CONTAINERS, "operator": "DoesNotExist"}
            )
    stages.append(_never_ready_stage())
    destination.write_text(yaml.safe_dump_all(stages, sort_keys=False))
    return destination
