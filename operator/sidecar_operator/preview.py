"""What a policy would do, before it is applied: the same planner the operator runs, then the API
server's apply as `core.ssa` models it, shown as a unified diff of each pod template."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, ssa, workloads
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.core.types import Key, Kind


@dataclass(frozen=True)
class Entry:
    key: Key
    kind: Kind
    diff: str = ""  # unified diff of the pod template, for writes
    conflict: str = ""


def _template_yaml(workload: Mapping[str, Any]) -> list[str]:
    """The pod template as YAML: its labels and annotations (which podMetadata sets), then its
    spec."""
    template = workloads.pod_template(workload)
    metadata = template.get("metadata") or {}
    shown: dict[str, Any] = {}
    kept = {key: metadata[key] for key in ("labels", "annotations") if metadata.get(key)}
    if kept:
        shown["metadata"] = kept
    shown["spec"] = dict(template.get("spec") or {})
    return yaml.safe_dump(shown, sort_keys=False, width=100).splitlines(keepends=True)


def is_workload(document: Mapping[str, Any]) -> bool:
    return document.get("kind") in {kind.value for kind in WorkloadKind}


def preview(
    policy: Policy,
    deployments: Iterable[Mapping[str, Any]],
    namespace_labels: Mapping[str, Mapping[str, str]],
    *,
    other_policies: Iterable[Policy] = (),
    operator_namespace: str | None = None,
) -> list[Entry]:
    """One Entry per workload the policy matches or would remove itself from."""
    others = [p for p in other_policies if p.name != policy.name]
    entries = []
    for deployment in deployments:
        metadata = deployment["metadata"]
        namespace = metadata.get("namespace") or "default"
        placed = {**deployment, "metadata": {**metadata, "namespace": namespace}}
        actions = planner.plan(
            placed,
            namespace_labels.get(namespace, {}),
            [*others, policy],
            operator_namespace=operator_namespace,
        )
        mine = next((a for a in actions if a.policy == policy.name), None)
        if mine is None:
            continue
        diff = ""
        if mine.body is not None:
            after = ssa.apply(placed, field_manager(policy.name), mine.body)
            label = str(Key.of(placed))
            diff = "".join(
                difflib.unified_diff(
                    _template_yaml(placed),
                    _template_yaml(after),
                    fromfile=f"{label} (now)",
                    tofile=f"{label} (with {policy.name})",
                )
            )
        conflict = mine.conflict if mine.kind is Kind.CONFLICT else ""
        entries.append(Entry(Key.of(placed), mine.kind, diff, conflict))
    return sorted(entries, key=lambda entry: entry.key)


class Unreadable(ValueError):
    """A file that is not YAML (or not text): which, and where in it."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML or JSON document in a file, or in a directory's files (recursively)."""
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
    )
    documents: list[dict[str, Any]] = []
    for file in files:
        try:
            with file.open(encoding="utf-8") as stream:  # its errors name the file and line
                loaded = list(yaml.safe_load_all(stream))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise Unreadable(f"{file}: {error}") from None
        for document in loaded:
            if isinstance(document, dict) and document.get("kind") == "List":
                documents.extend(document.get("items") or [])
            elif isinstance(document, dict):
                documents.append(document)
    return documents


def report(entries: list[Entry]) -> str:
    lines = []
    for entry in entries:
        where = str(entry.key)
        if entry.kind is Kind.CONFLICT:
            lines.append(f"CONFLICT {where}: {entry.conflict}\n")
        elif entry.kind is Kind.IN_SYNC:
            lines.append(f"UP TO DATE {where}\n")
        elif entry.kind is Kind.REMOVE:
            lines.append(f"REMOVE {where}\n{entry.diff}")
        else:
            lines.append(f"CHANGE {where}\n{entry.diff}")
    conflicts = sum(1 for entry in entries if entry.kind is Kind.CONFLICT)
    lines.append(f"{len(entries)} workloads matched or affected, {conflicts} conflicts\n")
    return "".join(lines)
