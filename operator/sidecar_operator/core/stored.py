"""Whether what a workload holds is what a policy wants, judged the way the API server stores
it. Pure.

The API server does not keep a policy's content byte for byte. It drops what Go leaves out of
JSON (`env: []`, `args: []`, `workingDir: ""`, `stdin: false`, `readOnly: false`), fills in
defaults (`imagePullPolicy`, `terminationMessagePath`, a port's `protocol`, a probe's
thresholds), and writes quantities in canonical form (`0.5` as `500m`). Other field managers and
webhooks may add entries to a sidecar's keyed lists (an env var, a port). None of that is drift;
a changed value is. So a wanted value is held when:

- it is empty or zero and the workload holds nothing, the zero value, or the value the API server
  puts in its place (`DEFAULTS`, and the defaults the schema declares);
- it is a quantity (where the core/v1 schema says so, nowhere else) of the same amount;
- it is a keyed list each of whose items is held by the workload's item of the same key, or
  an object each of whose fields is held; any other list element by element, any other value
  exactly.

Fields the policy does not set are not compared: they are the defaults or other managers' own.
`core/v1` shapes come from `api/corev1`, generated from the pinned release's OpenAPI document.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from sidecar_operator.api import corev1
from sidecar_operator.api.corev1 import Shape

Path = tuple[str, ...]


def _pull_policy(image: Any) -> str:
    """`SetDefaults_Container`: Always for the `latest` tag (or none, which means it), else
    IfNotPresent (a digest without a tag too)."""
    reference = str(image or "")
    if "@" in reference:
        reference, _ = reference.split("@", 1)
        tagged = reference.rsplit("/", 1)[-1]
        return "Always" if tagged.endswith(":latest") else "IfNotPresent"
    last = reference.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


# What kube-apiserver puts in place of an empty or zero value: the defaulting functions of the
# pinned release (`pkg/apis/core/v1/defaults.go`) that the schema does not declare. Each is a
# function of the object the field is in. The property test against the real control plane
# (`tests/test_stored.py`) finds any this table lacks.
DEFAULTS: dict[tuple[str, str], Callable[[Mapping[str, Any]], Any]] = {
    ("Container", "imagePullPolicy"): lambda c: _pull_policy(c.get("image")),
    ("Container", "terminationMessagePath"): lambda _: "/dev/termination-log",
    ("Container", "terminationMessagePolicy"): lambda _: "File",
    ("Probe", "timeoutSeconds"): lambda _: 1,
    ("Probe", "periodSeconds"): lambda _: 10,
    ("Probe", "successThreshold"): lambda _: 1,
    ("Probe", "failureThreshold"): lambda _: 3,
    ("HTTPGetAction", "path"): lambda _: "/",
    ("HTTPGetAction", "scheme"): lambda _: "HTTP",
    ("ObjectFieldSelector", "apiVersion"): lambda _: "v1",
    ("ImageVolumeSource", "pullPolicy"): lambda v: _pull_policy(v.get("reference")),
}

_SUFFIXES: dict[str, Decimal] = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


_LONGEST_FIRST = sorted(_SUFFIXES, key=len, reverse=True)


def quantity(value: Any) -> Decimal | None:
    """A resource.Quantity's amount (`500m`, `0.5`, `1Gi`, `1e3`), or None if it is not one."""
    return _amount(str(value).strip())


@functools.lru_cache(maxsize=1024)  # a policy's few quantities, compared on every plan
def _amount(text: str) -> Decimal | None:
    for suffix in _LONGEST_FIRST:
        if text.endswith(suffix):
            number, factor = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, factor = text, Decimal(1)
    try:
        amount = Decimal(number) * factor
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def _milli(amount: Decimal) -> Decimal:
    """Resource lists are rounded up to thousandths (`SetDefaults_ResourceList`)."""
    return Decimal(math.ceil(amount * 1000)) / 1000


def _zero(value: Any) -> bool:
    return value is None or value is False or value == "" or value == 0 or value in ({}, [])


class Drift:
    """Compares, and says where the first difference is (for messages)."""

    def __init__(self) -> None:
        self.where: Path = ()

    def object(self, live: Any, wanted: Mapping[str, Any], type_name: str, path: Path) -> bool:
        live = live if isinstance(live, Mapping) else {}
        shapes = corev1.fields(type_name)
        for field, value in wanted.items():
            shape = shapes.get(field, "unknown")
            here = (*path, field)
            held = live.get(field)
            if _zero(value):
                if _zero(held) or held == self._default(type_name, field, wanted):
                    continue
                return self._differs(here)
            if held is None or not self.value(held, value, shape, here):
                return self._differs(here)
        return True

    def value(self, live: Any, wanted: Any, shape: Shape, path: Path) -> bool:
        if shape == "quantity":
            have, want = quantity(live), quantity(wanted)
            if have is None or want is None:
                return bool(live == wanted)
            if len(path) >= 2 and path[-2] in ("limits", "requests"):
                have, want = _milli(have), _milli(want)
            return have == want
        nested = shape if isinstance(shape, Mapping) else {}
        if isinstance(wanted, Mapping):
            if "map" in nested:
                live = live if isinstance(live, Mapping) else {}
                for key, value in wanted.items():
                    here = (*path, key)
                    if key not in live or not self.value(live[key], value, nested["map"], here):
                        return self._differs(here)
                return True
            # A field the table does not know (newer than the pinned release) is compared
            # field by field all the same.
            return self.object(live, wanted, nested.get("object", ""), path)
        if isinstance(wanted, list):
            if "list" not in nested:
                nested = {"list": "atomic", "items": "unknown"}
            return self._list(live if isinstance(live, list) else [], wanted, nested, path)
        return bool(live == wanted)

    def _list(
        self, live: list[Any], wanted: list[Any], shape: Mapping[str, Any], path: Path
    ) -> bool:
        kind, items = shape["list"], shape["items"]
        if kind == "set":
            return all(value in live for value in wanted)
        if kind == "atomic":
            return len(live) == len(wanted) and all(
                self.value(have, want, items, (*path, str(index)))
                for index, (have, want) in enumerate(zip(live, wanted, strict=True))
            )
        type_name = items["object"]
        by_key = {
            item_key(item, kind, type_name): item for item in live if isinstance(item, Mapping)
        }
        for item in wanted:
            key = item_key(item, kind, type_name)
            here = (*path, "/".join(str(part) for part in key))
            if key not in by_key or not self.object(by_key[key], item, type_name, here):
                return self._differs(here)
        return True

    def _default(self, type_name: str, field: str, wanted: Mapping[str, Any]) -> Any:
        rule = DEFAULTS.get((type_name, field))
        return rule(wanted) if rule else corev1.declared_default(type_name, field)

    def _differs(self, path: Path) -> bool:
        if len(path) > len(self.where):
            self.where = path
        return False


def item_key(item: Mapping[str, Any], fields: Sequence[str], type_name: str) -> tuple[Any, ...]:
    """A keyed list's key, with the schema's defaults for key fields left out (a port's
    protocol is TCP whether written or not)."""
    return tuple(
        item.get(field) or corev1.declared_default(type_name, field) or item.get(field)
        for field in fields
    )


def holds(live: Mapping[str, Any] | None, wanted: Mapping[str, Any], type_name: str) -> bool:
    """Whether `live` (a Container, Volume or VolumeMount the workload holds) is `wanted` as
    the API server stores it."""
    return live is not None and Drift().object(live, wanted, type_name, ())


def difference(live: Mapping[str, Any] | None, wanted: Mapping[str, Any], type_name: str) -> str:
    """Where `live` differs from `wanted`, as a path (`env/LEVEL/value`), or "" if it does not."""
    if live is None:
        return "(missing)"
    key = (id(live), id(wanted), type_name)
    known = _DIFFERENCES.get(key)
    if known is not None and known[0] is live and known[1] is wanted:
        return str(known[2])
    drift = Drift()
    found = "" if drift.object(live, wanted, type_name, ()) else "/".join(drift.where)
    _DIFFERENCES.put(key, (live, wanted, found))
    return found


class _Kept:
    """The results of recent comparisons, in two generations: one found in the older is
    moved into the newer, and the older goes when the newer is full. What is used often
    stays; a workload's own items (its app containers' mounts) pass through."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._new: dict[Any, Any] = {}
        self._old: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        found = self._new.get(key)
        if found is None and (found := self._old.pop(key, None)) is not None:
            self.put(key, found)
        return found

    def put(self, key: Any, value: Any) -> None:
        if len(self._new) >= self.size:
            self._old, self._new = self._new, {}
        self._new[key] = value


# `difference` of one pair of objects, kept: the snapshots hold one object per distinct item
# (`state.snapshot.Shared`) and a content builds each item's API form once, so a thousand
# workloads carrying one sidecar compare the same pair, and comparing it was half of planning
# each (258 -> 107 us for an in-sync plan of the bench's sidecar). Both objects are held, so
# that their ids are not reused while kept; neither side is ever modified (snapshots and
# contents are not).
_DIFFERENCES = _Kept(2048)
