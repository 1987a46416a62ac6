"""The shapes of the core/v1 objects a policy adds (Container, Volume, VolumeMount and everything
they hold): which lists the API server keys and by which fields, which values are quantities,
which fields nest objects, and the defaults the schema itself declares.

What a workload holds is compared with what a policy wants by these shapes (`core/stored`): a
list keyed by name is compared by key (others may add entries to it), a quantity as a number
(`0.5` is stored as `500m`), anything else exactly. The table is generated from the pinned
release's OpenAPI document (`make crds` writes `corev1.json`, a test checks it is current), so it
follows Kubernetes upgrades rather than a hand-kept list.

A shape, as the table stores it:
- `"string"`, `"integer"`, `"number"`, `"boolean"` or `"int-or-string"`: a value compared as
  it is;
- `"quantity"`: a resource.Quantity;
- `{"object": "Probe"}`: an object of that type (its fields are in the table);
- `{"map": SHAPE}`: string keys to values of one shape;
- `{"list": "atomic" | "set" | [KEY, ...], "items": SHAPE}`: a list replaced whole, a set of
  scalars, or a list keyed by those fields.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TABLE_FILE = Path(__file__).with_name("corev1.json")
ROOTS = ("Container", "Volume", "VolumeMount")
CORE_PREFIX = "io.k8s.api.core.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

Shape = str | Mapping[str, Any]


def _type_name(component: str) -> str:
    """core/v1 types by their own name, the few others (ObjectMeta, LabelSelector) in full."""
    return component.removeprefix(CORE_PREFIX)


def _is_zero(value: Any) -> bool:
    return value in ("", 0, False, None) or value == {} or value == []


class _Extractor:
    def __init__(self, openapi: Mapping[str, Any]) -> None:
        self.components: Mapping[str, Any] = openapi["components"]["schemas"]
        self.types: dict[str, dict[str, Any]] = {}
        self.pending: list[str] = []

    def run(self) -> dict[str, Any]:
        self.pending = [CORE_PREFIX + root for root in ROOTS]
        while self.pending:
            component = self.pending.pop()
            name = _type_name(component)
            if name in self.types:
                continue
            self.types[name] = {}  # before its fields: a type may (indirectly) hold itself
            fields, defaults = {}, {}
            for field, node in (self.components[component].get("properties") or {}).items():
                fields[field] = self.shape(node)
                if not _is_zero(node.get("default")):
                    defaults[field] = node["default"]
            self.types[name] = {"fields": fields, "defaults": defaults}
        return {"types": dict(sorted(self.types.items()))}

    def shape(self, node: Mapping[str, Any]) -> Shape:
        ref = node.get("$ref") or next(
            (option["$ref"] for option in node.get("allOf") or [] if "$ref" in option), None
        )
        if ref is not None:
            component = ref.rsplit("/", 1)[1]
            if component == QUANTITY:
                return "quantity"
            target = self.components[component]
            if not target.get("properties"):  # Time, IntOrString, FieldsV1: values, not objects
                return "int-or-string" if "oneOf" in target else str(target.get("type", "object"))
            if _type_name(component) not in self.types:
                self.pending.append(component)
            return {"object": _type_name(component)}
        if node.get("type") == "array":
            items = self.shape(node["items"])
            kind = node.get("x-kubernetes-list-type", "atomic")
            keys = node.get("x-kubernetes-list-map-keys") or []
            return {"list": list(keys) if kind == "map" else kind, "items": items}
        if node.get("type") == "object" and "additionalProperties" in node:
            return {"map": self.shape(node["additionalProperties"])}
        return str(node["type"])


def extract(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """The table, from an OpenAPI v3 document holding the core/v1 schemas."""
    return _Extractor(openapi).run()


def render(openapi: Mapping[str, Any]) -> str:
    return json.dumps(extract(openapi), indent=1, sort_keys=True) + "\n"


@functools.cache
def table() -> Mapping[str, Any]:
    """The checked-in table (read once)."""
    loaded: Mapping[str, Any] = json.loads(TABLE_FILE.read_text())["types"]
    return loaded


def fields(type_name: str) -> Mapping[str, Shape]:
    """The fields of a core type, by name; {} for a type the table does not know."""
    entry = table().get(type_name)
    return entry["fields"] if entry else {}


def declared_default(type_name: str, field: str) -> Any:
    """The default the schema declares for a field (ContainerPort's protocol: TCP), or None."""
    entry = table().get(type_name)
    return entry["defaults"].get(field) if entry else None


def main() -> None:
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
