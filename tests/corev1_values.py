"""Sidecars drawn over the whole core/v1 Container, Volume and VolumeMount schemas, for the
property tests of `core/stored` against the real API server.

Every optional field of every object is drawn absent, at its empty or zero value, at the value
the API server puts in its place (`stored.DEFAULTS`, and what the schema declares), or at a
valid value of its own. The fields come from `api/corev1`'s table, so a field a Kubernetes
upgrade adds is drawn too (at its zero value) without a change here. What the table cannot say
is which values the API server accepts: `SEEDS` are the smallest valid objects of the types
that need something set (a probe needs a handler), `VALUES` valid values for the fields whose
zero alone would say little, and `SKIPPED` the few fields whose valid values depend on what
the pod has elsewhere. A drawn sidecar the API server refuses fails the test: the drawing is
meant to be valid, so a refusal is a defect of this module, said with the server's message.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from sidecar_operator.api import corev1
from sidecar_operator.api.corev1 import Shape
from sidecar_operator.core import stored

Draw = st.DrawFn

HANDLERS: list[dict[str, Any]] = [
    {"exec": {"command": ["true"]}},
    {"httpGet": {"port": 8080}},
    {"tcpSocket": {"port": 8080}},
]
# The smallest valid objects of types that need something set; drawn whole, then the rest of
# their fields drawn beside them (but for `UNIONS`, of which the seed already chose one).
SEEDS: dict[str, list[dict[str, Any]]] = {
    "Probe": [*HANDLERS, {"grpc": {"port": 8080}}],
    "LifecycleHandler": [*HANDLERS, {"sleep": {"seconds": 1}}],
    "EnvVarSource": [
        {"fieldRef": {"fieldPath": "metadata.name"}},
        {"configMapKeyRef": {"name": "settings", "key": "level"}},
        {"secretKeyRef": {"name": "token", "key": "value"}},
        {"resourceFieldRef": {"resource": "limits.memory"}},
    ],
    "EnvFromSource": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "token"}}],
    "ExecAction": [{"command": ["true"]}],
    "HTTPGetAction": [{"port": 8080}, {"port": "http"}],
    "TCPSocketAction": [{"port": 8080}],
    "GRPCAction": [{"port": 8080}],
    "SleepAction": [{"seconds": 1}],
    "ObjectFieldSelector": [{"fieldPath": "metadata.name"}],
    "ResourceFieldSelector": [{"resource": "limits.cpu"}],
    "ConfigMapKeySelector": [{"name": "settings", "key": "level"}],
    "SecretKeySelector": [{"name": "token", "key": "value"}],
    "ConfigMapEnvSource": [{"name": "settings"}],
    "SecretEnvSource": [{"name": "token"}],
    "HTTPHeader": [{"name": "X-Probe", "value": "1"}],
    "ContainerResizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}],
    "Capabilities": [{"drop": ["ALL"]}, {"add": ["NET_BIND_SERVICE"]}],
    "SeccompProfile": [{"type": "RuntimeDefault"}],
    "AppArmorProfile": [{"type": "RuntimeDefault"}],
    "KeyToPath": [{"key": "level", "path": "level"}],
    "DownwardAPIVolumeFile": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}],
    "VolumeProjection": [
        {"configMap": {"name": "settings"}},
        {"secret": {"name": "token"}},
        {"serviceAccountToken": {"path": "token"}},
        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
    ],
    "ServiceAccountTokenProjection": [{"path": "token"}],
    "ConfigMapProjection": [{"name": "settings"}],
    "SecretProjection": [{"name": "token"}],
    "DownwardAPIProjection": [{}],
    "Volume": [
        {"emptyDir": {}},
        {"emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"configMap": {"name": "settings"}},
        {"secret": {"secretName": "token"}},
        {"downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"projected": {"sources": [{"configMap": {"name": "settings"}}]}},
        {"persistentVolumeClaim": {"claimName": "data"}},
        {"hostPath": {"path": "/var/log"}},
        {"nfs": {"server": "nfs.example", "path": "/exports"}},
        {"csi": {"driver": "csi.example.com"}},
        {"image": {"reference": "registry.example/data:1"}},
        {
            "ephemeral": {
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    }
                }
            }
        },
    ],
}
# Of these one at most may be set: the seed chooses.
UNIONS: dict[str, frozenset[str]] = {
    "Probe": frozenset({"exec", "httpGet", "tcpSocket", "grpc"}),
    "LifecycleHandler": frozenset({"exec", "httpGet", "tcpSocket", "sleep"}),
    "EnvVarSource": frozenset(corev1.fields("EnvVarSource")),
    "EnvFromSource": frozenset({"configMapRef", "secretRef"}),
    "VolumeProjection": frozenset(corev1.fields("VolumeProjection")),
    "Volume": frozenset(corev1.fields("Volume")) - {"name"},
}
# Valid values beside the zero and the default.
VALUES: dict[tuple[str, str], list[Any]] = {
    ("Container", "image"): [
        "busybox",
        "busybox:latest",
        "busybox:1.36",
        "registry.example:5000/tools/busybox",
        "busybox@sha256:" + "a" * 64,
        "busybox:latest@sha256:" + "b" * 64,
    ],
    ("Container", "imagePullPolicy"): ["Always", "IfNotPresent", "Never"],
    ("Container", "args"): [["--level", "1000"], [""], ["a b", "1k"]],
    ("Container", "command"): [["/bin/sh", "-c"], ["run"]],
    ("Container", "workingDir"): ["/work"],
    ("Container", "terminationMessagePath"): ["/tmp/message"],
    ("Container", "terminationMessagePolicy"): ["File", "FallbackToLogsOnError"],
    ("Container", "stdin"): [True],
    ("Container", "stdinOnce"): [True],
    ("Container", "tty"): [True],
    ("EnvVar", "value"): ["1000", "1k", "x", " "],
    ("ContainerPort", "containerPort"): [80, 8080, 9090],
    ("ContainerPort", "protocol"): ["TCP", "UDP", "SCTP"],
    ("ContainerPort", "name"): ["metrics"],
    ("ResourceRequirements", "limits"): [
        {"cpu": "0.5", "memory": "128Mi"},
        {"cpu": "500m"},
        {"memory": "1e3"},
        {"cpu": "0.0001"},
        {"cpu": "2"},
    ],
    ("Probe", "initialDelaySeconds"): [5],
    ("Probe", "timeoutSeconds"): [3],
    ("Probe", "periodSeconds"): [20],
    ("Probe", "failureThreshold"): [5],
    ("HTTPGetAction", "path"): ["/healthz"],
    ("HTTPGetAction", "scheme"): ["HTTP", "HTTPS"],
    ("HTTPGetAction", "host"): ["localhost"],
    ("SecurityContext", "allowPrivilegeEscalation"): [False],
    ("SecurityContext", "readOnlyRootFilesystem"): [True],
    ("SecurityContext", "runAsNonRoot"): [True],
    ("SecurityContext", "runAsUser"): [1000],
    ("SecurityContext", "runAsGroup"): [1000],
    ("SecurityContext", "procMount"): ["Default"],
    ("VolumeMount", "readOnly"): [True],
    ("VolumeMount", "mountPropagation"): ["None", "HostToContainer"],
    ("VolumeMount", "subPath"): ["logs"],
    ("EmptyDirVolumeSource", "medium"): ["Memory"],
    ("EmptyDirVolumeSource", "sizeLimit"): ["0.5Gi", "64Mi"],
    ("ConfigMapVolumeSource", "defaultMode"): [0o400, 0o644],
    ("SecretVolumeSource", "defaultMode"): [0o400],
    ("ConfigMapVolumeSource", "optional"): [True],
    ("HostPathVolumeSource", "type"): ["Directory", "DirectoryOrCreate"],
    ("PersistentVolumeClaimVolumeSource", "readOnly"): [True],
    ("CSIVolumeSource", "volumeAttributes"): [{"size": "1Gi"}],
    ("ImageVolumeSource", "pullPolicy"): ["Always", "IfNotPresent"],
}
# Fields whose valid values depend on the rest of the pod (a claim the pod lists, a block
# device, a restart policy only init containers take, the pod's OS), or that only a readiness
# probe must leave out: drawn absent.
SKIPPED: frozenset[tuple[str, str]] = frozenset(
    {
        ("Container", "name"),
        ("Container", "volumeDevices"),
        ("Container", "restartPolicy"),
        ("Container", "restartPolicyRules"),
        ("Container", "volumeMounts"),  # drawn apart, naming the drawn volumes
        ("ResourceRequirements", "claims"),
        ("ResourceRequirements", "requests"),  # drawn equal to the limits (never above them)
        ("Lifecycle", "stopSignal"),  # needs the pod's os
        ("Probe", "successThreshold"),  # 1 for liveness and startup probes
        ("Probe", "terminationGracePeriodSeconds"),  # not for readiness probes
        ("SecurityContext", "privileged"),  # true needs allowPrivilegeEscalation
        ("SecurityContext", "seLinuxOptions"),
        ("SecurityContext", "windowsOptions"),
        ("VolumeMount", "name"),
        ("VolumeMount", "mountPath"),
        ("VolumeMount", "recursiveReadOnly"),  # Enabled needs readOnly and no propagation
        ("VolumeMount", "subPathExpr"),  # not beside subPath
        ("VolumeMount", "bindMountOptions"),
        ("Volume", "name"),
        ("HTTPGetAction", "httpHeaders"),
        ("HTTPGetAction", "protocol"),
        ("GRPCAction", "mode"),
        ("ConfigMapVolumeSource", "defaultUser"),
        ("SecretVolumeSource", "defaultUser"),
        ("DownwardAPIVolumeSource", "defaultUser"),
        ("ProjectedVolumeSource", "defaultUser"),
        ("KeyToPath", "user"),
        ("DownwardAPIVolumeFile", "user"),
        ("ServiceAccountTokenProjection", "user"),
        ("ServiceAccountTokenProjection", "expirationSeconds"),
        ("EmptyDirVolumeSource", "mode"),
    }
)
# Optional enums the API server keeps when set: their empty value is refused, not dropped.
NO_ZERO: frozenset[tuple[str, str]] = frozenset(
    {
        ("VolumeMount", "mountPropagation"),
        ("SecurityContext", "procMount"),
        ("SeccompProfile", "localhostProfile"),
        ("AppArmorProfile", "localhostProfile"),
    }
)
DEPTH = 4


def zero(shape: Shape) -> Any:
    """The value Go leaves out of JSON for a field of this shape."""
    if isinstance(shape, Mapping):
        return [] if "list" in shape else {}
    return {"boolean": False, "integer": 0, "number": 0, "int-or-string": 0}.get(shape, "")


def _default(type_name: str, field: str, obj: Mapping[str, Any]) -> Any:
    rule = stored.DEFAULTS.get((type_name, field))
    return rule(obj) if rule else corev1.declared_default(type_name, field)


@st.composite
def obj(draw: Draw, type_name: str, depth: int = 0) -> dict[str, Any]:
    """One object of a core type, valid as the API server judges it."""
    seeds = SEEDS.get(type_name)
    value: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(seeds))) if seeds else {}
    union = UNIONS.get(type_name, frozenset())
    for field, shape in corev1.fields(type_name).items():
        if field in value or field in union or (type_name, field) in SKIPPED:
            continue
        choice = draw(field_value(type_name, field, shape, value, depth))
        if choice is not _ABSENT:
            value[field] = choice
    if type_name == "ResourceRequirements" and "limits" in value and draw(st.booleans()):
        value["requests"] = copy.deepcopy(value["limits"])
    return value


_ABSENT = object()


def field_value(
    type_name: str, field: str, shape: Shape, obj_so_far: Mapping[str, Any], depth: int
) -> st.SearchStrategy[Any]:
    """Absent (most often), zero, the default, a valid value of its own, or a drawn object."""
    options: list[st.SearchStrategy[Any]] = [st.just(_ABSENT), st.just(_ABSENT)]
    # A seeded type is invalid empty.
    seeded = isinstance(shape, Mapping) and shape.get("object") in SEEDS
    if not seeded and (type_name, field) not in NO_ZERO:
        options.append(st.just(zero(shape)))
    default = _default(type_name, field, obj_so_far)
    if default is not None:
        options.append(st.just(default))
    if (type_name, field) in VALUES:
        options.append(st.sampled_from(VALUES[(type_name, field)]))
    elif depth < DEPTH and isinstance(shape, Mapping):
        options.append(_nested(shape, depth + 1))
    return st.one_of(options)


def _nested(shape: Mapping[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if "object" in shape:
        return obj(shape["object"], depth)
    if "list" in shape and isinstance(shape["items"], Mapping) and "object" in shape["items"]:
        items = obj(shape["items"]["object"], depth)
        keys = shape["list"]
        if not isinstance(keys, list):  # unkeyed, but often unique by some field all the same
            return st.lists(items, min_size=1, max_size=1)
        return st.lists(
            items, min_size=1, max_size=2, unique_by=lambda item: tuple(item.get(k) for k in keys)
        )
    return st.just(zero(shape))


@st.composite
def env(draw: Draw) -> list[dict[str, Any]]:
    """Env vars by unique names, each a value or a source (not both)."""
    names = draw(st.lists(st.sampled_from(["LEVEL", "N", "TAG"]), max_size=3, unique=True))
    found = []
    for name in names:
        var: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            var["valueFrom"] = draw(obj("EnvVarSource", 1))
            if draw(st.booleans()):
                var["value"] = ""
        else:
            choice = draw(field_value("EnvVar", "value", "string", var, 1))
            if choice is not _ABSENT:
                var["value"] = choice
        found.append(var)
    return found


@st.composite
def ports(draw: Draw) -> list[dict[str, Any]]:
    numbers = draw(st.lists(st.sampled_from([80, 8080, 9090]), max_size=2, unique=True))
    found: list[dict[str, Any]] = []
    for number in numbers:
        port = {"containerPort": number}
        for field in ("protocol", "name", "hostIP"):
            choice = draw(field_value("ContainerPort", field, "string", port, 1))
            if choice is not _ABSENT and not (field == "name" and found):
                port[field] = choice
        found.append(port)
    return found


@st.composite
def mounts(draw: Draw, volumes: list[str], prefix: str) -> list[dict[str, Any]]:
    """Mounts of these volumes at distinct paths under `prefix`."""
    chosen = draw(st.lists(st.sampled_from(volumes), max_size=2, unique=True)) if volumes else []
    found = []
    for index, volume in enumerate(chosen):
        mount = draw(obj("VolumeMount", 1))
        mount.update(name=volume, mountPath=f"{prefix}/{index}")
        found.append(mount)
    return found


@st.composite
def sidecar(draw: Draw, name: str, volumes: list[str]) -> dict[str, Any]:
    """A Container drawn over its whole schema, with its env, ports and mounts valid."""
    container = draw(obj("Container"))
    container["name"] = name
    container.setdefault("image", "busybox:1.36")
    if not container["image"]:
        container["image"] = "busybox:1.36"
    for field, strategy in (("env", env()), ("ports", ports())):
        if field in container:
            container[field] = draw(strategy)
    if draw(st.booleans()):
        container["volumeMounts"] = draw(mounts(volumes, f"/mnt/{name}"))
    return container


@st.composite
def volume(draw: Draw, name: str) -> dict[str, Any]:
    drawn = draw(obj("Volume"))
    drawn["name"] = name
    return drawn


@st.composite
def policy_content(draw: Draw) -> dict[str, Any]:
    """What a policy adds: a sidecar, a volume, and a mount of it for the app."""
    shared = draw(volume("shared"))
    container = draw(sidecar("drawn", ["shared"]))
    mount = draw(obj("VolumeMount", 1))
    mount.update(name="shared", mountPath="/var/shared")
    return {"containers": [container], "volumes": [shared], "volumeMounts": [mount]}


def leaves(wanted: Any, type_name: str, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every value the policy sets, by path (a keyed list's item as a `Keyed` step), for
    mutation: the values of keyed lists' items, of maps' keys, and of objects' fields, and
    atomic lists whole."""
    found: list[tuple[Any, ...]] = []
    for field, value in wanted.items():
        shape = corev1.fields(type_name).get(field, "unknown")
        here = (*path, field)
        if isinstance(shape, Mapping) and "object" in shape and isinstance(value, Mapping):
            found += leaves(value, shape["object"], here) or [here]
        elif isinstance(shape, Mapping) and isinstance(shape.get("list"), list) and value:
            item_type = shape["items"]["object"]
            for item in value:
                step = Keyed(tuple(shape["list"]), item_type, item)
                inner = {k: v for k, v in item.items() if k not in shape["list"]}
                found += leaves(inner, item_type, (*here, step))
        elif isinstance(shape, Mapping) and "map" in shape and value:
            found += [(*here, key) for key in value]
        elif not (isinstance(shape, Mapping) and "list" in shape and not value):
            found.append(here)  # a value, an atomic list, or a set
    return found


@dataclasses.dataclass(frozen=True)
class Keyed:
    """A step into a keyed list: the item with `wanted`'s key."""

    fields: tuple[str, ...]
    type_name: str
    wanted: Mapping[str, Any] = dataclasses.field(hash=False, compare=False)


def mutated(live: Mapping[str, Any], wanted: Mapping[str, Any], path: tuple[Any, ...]) -> Any:
    """`live` with the value at `path` changed to one that neither the policy's value there
    nor its default equals."""
    result = copy.deepcopy(dict(live))
    node: Any = result
    want: Any = wanted
    for step in path[:-1]:
        if isinstance(step, Keyed):
            key = stored.item_key(step.wanted, step.fields, step.type_name)
            node = next(
                item for item in node if stored.item_key(item, step.fields, step.type_name) == key
            )
            want = step.wanted
        else:
            node = node.setdefault(step, {})
            want = want.get(step, {}) if isinstance(want, Mapping) else {}
    last = path[-1]
    node[last] = _other(node[last] if last in node else want.get(last))
    return result


def _other(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return not value
    if isinstance(value, int | float):
        return value + 7777
    if isinstance(value, list):
        return [*value, "changed"]
    if isinstance(value, Mapping):
        return {**value, "changed": "1"}
    amount = stored.quantity(value)
    if amount is not None and amount != 0:
        return str(amount * 2)
    return f"{value}-changed" if value else "changed"
