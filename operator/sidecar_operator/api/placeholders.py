"""Placeholders: the few per-workload values a policy's strings may name, and nothing else.

    {{ workload.name }}   {{ workload.namespace }}   {{ workload.kind }}
    {{ workload.labels['team'] }}   {{ workload.annotations["owner"] | default 'none' }}

`\\{` writes a literal `{` (so `\\{{` writes `{{`); a `{{` that does not begin a placeholder is
an error, so a misspelt placeholder is never shipped as text. No expressions, no functions beyond
`default`: a workload's owner picks values, not what is evaluated.

One grammar, two readers: the CRD's CEL rule (`VALUE`, an RE2 pattern) refuses at apply what this
module's parser refuses, so what passes `kubectl apply` renders. In `api`, beside the other rules
the CRD and the core share. Not a template engine: none evaluates only this, and reports where a
value goes wrong in the words of a field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Source(StrEnum):
    """What of the workload a placeholder names."""

    NAME = "name"
    NAMESPACE = "namespace"
    KIND = "kind"
    LABELS = "labels"
    ANNOTATIONS = "annotations"


_KEYED = (Source.LABELS, Source.ANNOTATIONS)
# A label or annotation key: an optional DNS prefix and a name (the API server checks the rest).
_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_QUOTED_KEY = rf"'({_KEY})'|\"({_KEY})\""
_DEFAULT = r"'([^']*)'|\"([^\"]*)\""
_SPACE = r"[ \t]"  # not `\s`: Python's takes in Unicode spaces, RE2's does not
# One placeholder; Python's `re` and RE2 read it alike (no lookaround, no backreference).
PLACEHOLDER = (
    rf"\{{\{{{_SPACE}*workload\.(?:(name|namespace|kind)|(labels|annotations)\[(?:"
    + _QUOTED_KEY
    + rf")\]){_SPACE}*(?:\|{_SPACE}*default{_SPACE}+(?:"
    + _DEFAULT
    + rf"){_SPACE}*)?\}}\}}"
)
_ESCAPE = r"\\\{"
_CHAR = r"[^{]"
# A `{` alone: followed by the end, an escape or a character that is not `{` (taken with it:
# RE2 has no lookahead).
_LONE = rf"\{{(?:{_ESCAPE}|{_CHAR}|$)"
# One placeholder without capturing groups, for the patterns that embed it.
PLACEHOLDER_PATTERN = re.sub(r"\((?!\?)", "(?:", PLACEHOLDER)
# A whole value: what the CRD's rule matches each templated string against.
VALUE = rf"^(?:{PLACEHOLDER_PATTERN}|{_ESCAPE}|{_LONE}|{_CHAR})*$"

_ANYWHERE = re.compile(PLACEHOLDER)
_TOKEN = re.compile(
    rf"(?P<placeholder>{PLACEHOLDER})|(?P<escape>{_ESCAPE})|(?P<text>[^{{\\]+|.)", re.DOTALL
)


@dataclass(frozen=True)
class Placeholder:
    source: Source
    key: str = ""  # the label or annotation key
    default: str | None = None

    def __str__(self) -> str:
        named = f"workload.{self.source}"
        if self.source in _KEYED:
            named += f"['{self.key}']"
        return named


Part = str | Placeholder


class PlaceholderError(ValueError):
    """A string the grammar refuses: where, and why."""

    def __init__(
        self, text: str, position: int, reason: str, place: tuple[str | int, ...] = ()
    ) -> None:
        super().__init__(f"at character {position + 1}: {reason}")
        self.text = text
        self.position = position
        self.reason = reason
        self.place = place  # where the string is, when it is part of a policy's content


class MissingValue(LookupError):
    """A placeholder the workload has no value for, and no default."""

    def __init__(self, placeholder: Placeholder) -> None:
        super().__init__(f"{{{{ {placeholder} }}}} has no value and no default")
        self.placeholder = placeholder


def parse(text: str) -> tuple[Part, ...]:
    """The string as literal text and placeholders, adjacent texts joined. Raises
    PlaceholderError at the first `{{` that does not begin a placeholder."""
    parts: list[Part] = []
    position = 0
    while position < len(text):
        found = _TOKEN.match(text, position)
        assert found is not None  # `.` matches any character
        if found["placeholder"]:
            parts.append(_placeholder(found))
        elif found["escape"]:
            _add_text(parts, "{")
        elif text.startswith("{{", position):
            raise PlaceholderError(text, position, _why(text[position:]))
        else:
            _add_text(parts, found["text"])
        position = found.end()
    return tuple(parts)


def first_placeholder(text: str) -> int | None:
    """Where the first placeholder is, in a string of a field that reads none: it is refused
    there rather than shipped as text (other braces, a Go template's say, are that field's own)."""
    found = _ANYWHERE.search(text)
    return None if found is None else found.start()


def render(parts: tuple[Part, ...], workload: Mapping[str, object]) -> str:
    """The string for this workload (its `metadata`, and `kind`). Raises MissingValue."""
    return "".join(part if isinstance(part, str) else _value(part, workload) for part in parts)


def escape(text: str) -> str:
    """Literal text written so that `parse` gives it back unchanged."""
    return text.replace("{", "\\{")


def _value(placeholder: Placeholder, workload: Mapping[str, object]) -> str:
    metadata = workload.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    match placeholder.source:
        case Source.KIND:
            found = workload.get("kind")
        case Source.NAME | Source.NAMESPACE:
            found = metadata.get(placeholder.source.value)
        case _:
            held = metadata.get(placeholder.source.value)
            found = held.get(placeholder.key) if isinstance(held, Mapping) else None
    if isinstance(found, str):
        return found
    if placeholder.default is not None:
        return placeholder.default
    raise MissingValue(placeholder)


def _placeholder(found: re.Match[str]) -> Placeholder:
    plain, keyed, single_key, double_key, single_default, double_default = found.group(
        2, 3, 4, 5, 6, 7
    )
    default = single_default if single_default is not None else double_default
    if plain:
        return Placeholder(Source(plain), default=default)
    return Placeholder(Source(keyed), single_key or double_key, default)


def _add_text(parts: list[Part], text: str) -> None:
    if parts and isinstance(parts[-1], str):
        parts[-1] += text
    else:
        parts.append(text)


def _why(rest: str) -> str:
    """What is wrong with a `{{` that begins no placeholder, as precisely as can be said."""
    if "}}" not in rest:
        return "'{{' without a closing '}}' (write '\\{{' for literal braces)"
    inside = rest[2 : rest.index("}}")].strip()
    name = inside.split("|")[0].strip()
    if not name.startswith("workload."):
        return (
            f"unknown placeholder '{{{{ {inside} }}}}': only workload.name, workload.namespace, "
            "workload.kind, workload.labels['key'] and workload.annotations['key'] "
            "(write '\\{{' for literal braces)"
        )
    if "|" in inside and not re.fullmatch(
        rf"\s*default\s+(?:{_DEFAULT})\s*", inside.split("|", 1)[1]
    ):
        return f"in '{{{{ {inside} }}}}': the only filter is default 'value', in quotes"
    return (
        f"unknown placeholder '{{{{ {inside} }}}}': only workload.name, workload.namespace, "
        "workload.kind, workload.labels['key'] and workload.annotations['key']"
    )


# Where placeholders are read: strings a container passes on, the names a volume refers to, and
# the values of the pod template's labels and annotations
# (never `image` or `securityContext`: a workload's owner must not choose what runs with the
# policy's privileges).
_CONTAINER_TEXT = ("command", "args")
POD_METADATA = ("labels", "annotations")  # the values, not the keys
VOLUME_REFERENCES = {
    "configMap": "name",
    "secret": "secretName",
    "persistentVolumeClaim": "claimName",
}


def templatable(content: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Every string of `content` (as `Content.to_api` gives it) placeholders may be in."""
    found: list[tuple[tuple[str | int, ...], str]] = []
    for pod_list in ("containers", "initContainers"):
        for index, container in enumerate(content.get(pod_list) or []):
            for field in _CONTAINER_TEXT:
                for at, text in enumerate(container.get(field) or []):
                    found.append(((pod_list, index, field, at), text))
            for at, variable in enumerate(container.get("env") or []):
                if isinstance(variable.get("value"), str):
                    found.append(((pod_list, index, "env", at, "value"), variable["value"]))
    for index, volume in enumerate(content.get("volumes") or []):
        for source, field in VOLUME_REFERENCES.items():
            if isinstance(name := (volume.get(source) or {}).get(field), str):
                found.append((("volumes", index, source, field), name))
    for field in POD_METADATA:
        for key, text in ((content.get("podMetadata") or {}).get(field) or {}).items():
            found.append((("podMetadata", field, key), text))
    return found


def strings(
    value: Any, place: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], str]]:
    """Every string in a content (`Content.to_api`), with its place (map keys included)."""
    if isinstance(value, str):
        return [(place, value)]
    found: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(value, Mapping):
        for key, inner in value.items():
            found += strings(key, (*place, "key"))
            found += strings(inner, (*place, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += strings(inner, (*place, index))
    return found
