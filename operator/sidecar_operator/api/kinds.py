"""The kinds of workload a policy can target, and where each keeps its pod template."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    DAEMON_SET = "DaemonSet"
    CRON_JOB = "CronJob"

    @property
    def api_version(self) -> str:
        return "batch/v1" if self is WorkloadKind.CRON_JOB else "apps/v1"

    @property
    def plural(self) -> str:
        return f"{self.value.lower()}s"

    @property
    def template_path(self) -> tuple[str, ...]:
        """Where the pod template is: a CronJob's shapes every Job it starts."""
        # Looked up, not built: planning one workload asks it a dozen times.
        return _TEMPLATE_PATHS[self]

    @property
    def fields_path(self) -> tuple[str, ...]:
        """`template_path` as managedFields' fieldsV1 spells it."""
        return _FIELDS_PATHS[self]

    @classmethod
    def of(cls, workload: Mapping[str, Any]) -> WorkloadKind:
        """The kind an object names (the snapshots keep it); Deployment, the default target,
        where it names none."""
        named = workload.get("kind")
        # A dict, not `cls(named)`: a pass asks this several times of every workload.
        return _BY_NAME.get(named) or cls(named or cls.DEPLOYMENT)


_BY_NAME: dict[Any, WorkloadKind] = {kind.value: kind for kind in WorkloadKind}
_TEMPLATE_PATHS = {
    kind: ("spec", "jobTemplate", "spec", "template")
    if kind is WorkloadKind.CRON_JOB
    else ("spec", "template")
    for kind in WorkloadKind
}
_FIELDS_PATHS = {kind: tuple(f"f:{key}" for key in path) for kind, path in _TEMPLATE_PATHS.items()}


def dig(node: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    """The mapping at `path`, or {} where any step is missing."""
    for key in path:
        node = node.get(key) or {}
    return node


def nest(path: tuple[str, ...], leaf: Any) -> Any:
    """`leaf` wrapped in one mapping per step of `path`."""
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf
