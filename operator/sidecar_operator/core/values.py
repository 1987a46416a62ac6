"""Per-workload values: a policy's content with its placeholders (`api/placeholders`) rendered for
one workload. Pure.

A content without placeholders is returned as it is, so its bodies stay shared (`core/bodies`).
Rendered contents are kept per revision and keyed by the values, a few hundred at most: a
placeholder naming the namespace or a team label gives many workloads one content, and one
naming the workload gives each its own, which is made again when its plan is (once per change of
the workload, `state/plans`) rather than kept for every workload.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from sidecar_operator.api import placeholders
from sidecar_operator.api.models import LABEL_VALUE, Content
from sidecar_operator.api.placeholders import VOLUME_REFERENCES

KEPT_PER_REVISION = 256
REVISIONS_KEPT = 64  # an edited policy's old revisions go, oldest first
_KEPT: OrderedDict[str, OrderedDict[tuple[str, ...], Content]] = OrderedDict()
# What the API server takes as a ConfigMap's, a Secret's or a claim's name: a DNS subdomain.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMED = {(source, field): source for source, field in VOLUME_REFERENCES.items()}
_LABEL_VALUE = re.compile(LABEL_VALUE)


class Unrendered(ValueError):
    """Why the content cannot be rendered for a workload, naming the field: a conflict for that
    workload alone."""


def rendered(content: Content, workload: Mapping[str, Any]) -> Content:
    """The content with this workload's values in. Raises Unrendered."""
    try:
        templates = content.templates
    except placeholders.PlaceholderError as error:
        raise Unrendered(f"{_field(content, error.place)}: {error}") from None
    if not templates:
        return content
    values = []
    for place, parts in templates:
        try:
            value = placeholders.render(parts, workload)
        except placeholders.MissingValue as error:
            raise Unrendered(f"{_field(content, place)}: {error}") from None
        _check(content, place, value)
        values.append(value)
    key = tuple(values)
    kept = _KEPT.setdefault(content.revision, OrderedDict())
    _KEPT.move_to_end(content.revision)
    if len(_KEPT) > REVISIONS_KEPT:
        _KEPT.popitem(last=False)
    found = kept.get(key)
    if found is not None:
        kept.move_to_end(key)
        return found
    places = [place for place, _ in templates]
    found = kept[key] = content.with_values(_replaced(content.to_api(), places, key), key)
    if len(kept) > KEPT_PER_REVISION:
        kept.popitem(last=False)
    return found


def _replaced(
    api: dict[str, Any], places: list[tuple[str | int, ...]], values: tuple[str, ...]
) -> dict[str, Any]:
    """`api` with the strings at `places` replaced, copying only what leads to them: the rest
    stays the very objects `api` holds (a thousand workloads' contents share them)."""
    root = dict(api)
    copied = {id(root)}
    for place, value in zip(places, values, strict=True):
        node: Any = root
        for step in place[:-1]:
            child = node[step]
            if id(child) not in copied:
                child = list(child) if isinstance(child, list) else dict(child)
                copied.add(id(child))
                node[step] = child
            node = child
        node[place[-1]] = value
    return root


def _check(content: Content, place: tuple[str | int, ...], value: str) -> None:
    """A rendered name the API server would refuse is this workload's conflict, said here
    rather than as a refused write."""
    source = _NAMED.get(place[-2:])  # type: ignore[arg-type]
    if source is not None and not (len(value) <= 253 and _OBJECT_NAME.fullmatch(value)):
        raise Unrendered(
            f"{_field(content, place)} renders {value!r}, not a valid {source} name "
            "(lowercase letters, digits, '-' and '.')"
        )
    if place[:2] == ("podMetadata", "labels") and not (
        len(value) <= 63 and _LABEL_VALUE.fullmatch(value)
    ):
        raise Unrendered(
            f"{_field(content, place)} renders {value!r}, not a valid label value (at most 63 "
            "letters, digits, '-', '_' or '.', beginning and ending with a letter or digit)"
        )


def _field(content: Content, place: tuple[str | int, ...]) -> str:
    """A string's place as a user reads it: `containers[log].env[TAG].value`, `args[0]`."""
    if place[0] == "podMetadata":
        return f"podMetadata.{place[1]}['{place[2]}']"
    value: Any = content.to_api()
    words = ""
    for step in place:
        inner = value[step] if step != "key" else None
        if isinstance(step, int):
            named = inner.get("name") if isinstance(inner, Mapping) else None
            words += f"[{named if isinstance(named, str) else step}]"
        else:
            words += f".{step}" if words else str(step)
        value = inner
    return words
