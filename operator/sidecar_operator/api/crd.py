"""Generate the SidecarPolicy CRD from the pydantic models and the Kubernetes OpenAPI document.

`python -m sidecar_operator.api.crd OPENAPI_JSON` prints the CRD (`make crds` writes it to `crds/`).
The models give the shape, descriptions and CEL rules; wherever a model is marked as a core/v1
object, the real core/v1 schema from the pinned release's OpenAPI document takes its place,
rewritten into the structural form CRDs require ($refs inlined, int-or-string unions marked).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema, to_jsonable_python

from sidecar_operator.api import models, names, placeholders

Schema = dict[str, Any]

CORE_PREFIX = "io.k8s.api.core.v1."
_DROPPED_CORE_KEYS = {
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-unions",
    "x-kubernetes-group-version-kind",
}
_INT_OR_STRING_UNIONS = ({"integer", "string"}, {"number", "string"})


class _WithFactoryDefaults(GenerateJsonSchema):
    """Pydantic leaves `default_factory` defaults out of JSON schemas; a CRD needs them so that
    the API server fills in `[]` and `{}` and CEL rules can rely on the fields being present."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> Schema:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().default_schema(schema)
        inner = self.generate_inner(schema["schema"])
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", by_alias=True)
        return {**inner, "default": to_jsonable_python(value)}


class _CoreSchemas:
    """core/v1 definitions from an OpenAPI v3 document, inlined into structural schemas."""

    def __init__(self, openapi: Schema) -> None:
        self._components: Schema = openapi["components"]["schemas"]

    def get(self, kind: str) -> Schema:
        return self._inline(self._components[CORE_PREFIX + kind], seen=())

    def _inline(self, node: Schema, seen: tuple[str, ...]) -> Schema:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name in seen:
                raise ValueError(f"recursive core schema {' -> '.join((*seen, name))}")
            return self._inline(self._components[name], (*seen, name))
        if "allOf" in node:
            (only,) = node["allOf"]
            siblings = {key: value for key, value in node.items() if key != "allOf"}
            return {**self._inline(only, seen), **siblings}
        if "oneOf" in node:
            types = {option["type"] for option in node["oneOf"]}
            if types not in _INT_OR_STRING_UNIONS:
                raise ValueError(f"unsupported oneOf in core schema: {node['oneOf']}")
            return _int_or_string(node.get("description"))
        result: Schema = {}
        for key, value in node.items():
            if key in _DROPPED_CORE_KEYS or (key == "format" and value == "int-or-string"):
                continue
            if key == "properties":
                result[key] = {name: self._inline(prop, seen) for name, prop in value.items()}
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                result[key] = self._inline(value, seen)
            else:
                result[key] = value
        return result


def _int_or_string(description: str | None) -> Schema:
    schema: Schema = {"x-kubernetes-int-or-string": True}
    if description:
        schema["description"] = description
    return schema


def _structural(node: Schema, defs: Schema, core: _CoreSchemas) -> Schema:
    """Rewrite a pydantic JSON schema node into a CRD structural schema."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if models.CORE_SCHEMA_KEY in target:
            resolved = core.get(target[models.CORE_SCHEMA_KEY])
            # Sidecars are pulled images: a container without one cannot run.
            if "image" in target.get("required", []):
                resolved["required"] = sorted({*resolved.get("required", []), "image"})
            # core/v1 defaults required strings to "": an empty name or image must not pass.
            for required in resolved.get("required", []):
                field = resolved["properties"][required]
                if field.get("type") == "string":
                    field.pop("default", None)
                    field["minLength"] = 1
            # Container and volume names are DNS labels; the bound keeps CEL rules within budget.
            resolved["properties"]["name"]["maxLength"] = 63
            # A Deployment takes an image with blanks, but its ReplicaSet can create no Pod
            # from it: the rollout would stall until its progress deadline.
            if "image" in resolved["properties"]:
                resolved["properties"]["image"]["pattern"] = r"^\S+$"
            _placeholder_patterns(target[models.CORE_SCHEMA_KEY], resolved)
            return {**resolved, **_structural(siblings, defs, core)}
        return _structural({**target, **siblings}, defs, core)
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        rest = {key: value for key, value in node.items() if key != "anyOf"}
        if {option.get("type") for option in options} in _INT_OR_STRING_UNIONS:
            return {**_int_or_string(None), **_structural(rest, defs, core)}
        (only,) = options
        return _structural({**only, **rest}, defs, core)
    result: Schema = {}
    for key, value in node.items():
        if key in ("title", "$defs") or (key == "additionalProperties" and value is False):
            continue
        if key == "additionalProperties" and value is True:
            result["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "properties":
            result[key] = {name: _structural(prop, defs, core) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            result[key] = _structural(value, defs, core)
        else:
            result[key] = value
    return result


def _model_schema(model: type[BaseModel], core: _CoreSchemas) -> Schema:
    schema = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    return _structural(schema, schema.get("$defs", {}), core)


def _printer_columns() -> list[Schema]:
    def column(
        name: str, path: str, kind: str = "integer", priority: int = 0, description: str = ""
    ) -> Schema:
        entry: Schema = {"name": name, "type": kind, "jsonPath": path}
        if description:
            entry["description"] = description
        if priority:
            entry["priority"] = priority
        return entry

    return [
        column("Matched", ".status.matchedWorkloads", description="workloads selected"),
        column("Updated", ".status.updatedWorkloads", description="carrying the revision"),
        column("Ready", ".status.readyWorkloads", description="updated and rolled out"),
        column("Conflicts", ".status.conflicts", description="skipped because of a clash"),
        column("Age", ".metadata.creationTimestamp", kind="date"),
        column("Priority", ".spec.priority", priority=1),
        column("Paused", ".spec.updateStrategy.paused", kind="boolean", priority=1),
        column("Kinds", ".spec.kinds", kind="string", priority=1),
        column("Step", ".status.currentStep", priority=1, description="the rollout's step"),
    ]


# A resource quantity as the API server parses one (`resource.ParseQuantity`): the schema of
# core/v1 says only int-or-string, so a placeholder, or any other word, in `resources` would pass
# and be refused on every workload's write instead.
QUANTITY = (
    r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?"
    r"|\.[0-9]+))?$"
)
# No `{{` at all (so no placeholder): for the image and the securityContext's strings, which a
# workload's owner must not choose.
_NO_PLACEHOLDER = r"^(?:[^{]|\{(?:[^{]|$))*$"


def _placeholder_patterns(core_type: str, resolved: Schema) -> None:
    """Where placeholders are read, a string must be a valid templated value
    (`placeholders.VALUE`); in the image and the securityContext, none may be. Schema patterns,
    not CEL rules: the API server prices a rule over strings and lists without bounds past its
    budget, and a pattern costs nothing there (its message quotes the pattern, the operator's
    conflict then names the character)."""
    properties = resolved["properties"]
    if core_type == "Container":
        for field in ("args", "command"):
            properties[field]["items"]["pattern"] = placeholders.VALUE
        properties["env"]["items"]["properties"]["value"]["pattern"] = placeholders.VALUE
        properties["image"]["pattern"] = r"^(?:[^\s{]|\{(?:[^\s{]|$))+$"
        _no_placeholders(properties["securityContext"])
        for amounts in ("limits", "requests"):
            properties["resources"]["properties"][amounts]["additionalProperties"]["pattern"] = (
                QUANTITY
            )
    elif core_type == "Volume":
        for source, field in placeholders.VOLUME_REFERENCES.items():
            properties[source]["properties"][field]["pattern"] = placeholders.VALUE


def _no_placeholders(node: Schema) -> None:
    """Every string under `node` without placeholders."""
    if node.get("type") == "string":
        node["pattern"] = _NO_PLACEHOLDER
    for inner in (node.get("properties") or {}).values():
        _no_placeholders(inner)
    if isinstance(node.get("items"), dict):
        _no_placeholders(node["items"])


def build(openapi: Schema) -> Schema:
    """The CustomResourceDefinition, as a dict ready to be written as YAML."""
    core = _CoreSchemas(openapi)
    root: Schema = {
        "type": "object",
        "description": "SidecarPolicy adds sidecar containers, init containers, volumes and "
        "volume mounts to every workload it selects, and removes them again when the "
        "workload stops matching or the policy is deleted.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "The API version: sidecars.dev/v1alpha1.",
            },
            "kind": {"type": "string", "description": "The kind: SidecarPolicy."},
            "metadata": {"type": "object"},
            "spec": _model_schema(models.SidecarPolicySpec, core),
            "status": _model_schema(models.SidecarPolicyStatus, core),
        },
        "x-kubernetes-validations": [
            {
                "rule": "size(self.metadata.name) <= 63",
                "message": "a SidecarPolicy name must be at most 63 characters: it becomes part "
                "of the annotation policy.sidecars.dev/<name> on every workload it touches",
            }
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names.PLURAL}.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "scope": "Cluster",
            "names": {
                "kind": names.KIND,
                "listKind": f"{names.KIND}List",
                "plural": names.PLURAL,
                "singular": names.SINGULAR,
                "shortNames": list(names.SHORT_NAMES),
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(openapi: Schema) -> str:
    header = (
        "# Generated by `make crds` from operator/sidecar_operator/api/models.py and the\n"
        "# Kubernetes OpenAPI document of the pinned release. Do not edit by hand.\n"
    )
    return header + yaml.safe_dump(build(openapi), sort_keys=False, width=100)


def main() -> None:
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))


if __name__ == "__main__":
    main()
