"""What the API server stores of what a policy wants is no drift; a changed value is (the
property test against the real control plane, `tests/test_stored.py`, covers every field)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar_operator.core import stored

SENT: dict[str, Any] = {
    "name": "shipper",
    "image": "fluent/fluent-bit:3.1",
    "env": [{"name": "LEVEL", "value": "1000"}, {"name": "EMPTY", "value": ""}],
    "args": [],
    "workingDir": "",
    "stdin": False,
    "imagePullPolicy": "",
    "ports": [{"containerPort": 2020}],
    "resources": {"limits": {"cpu": "0.5", "memory": "1e3"}, "requests": {"cpu": "0.0001"}},
    "livenessProbe": {"httpGet": {"port": 2020, "path": ""}, "timeoutSeconds": 0},
    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app", "readOnly": False}],
}
# As the API server stores SENT: zero values dropped, defaults filled in, quantities canonical.
STORED: dict[str, Any] = {
    "name": "shipper",
    "image": "fluent/fluent-bit:3.1",
    "imagePullPolicy": "IfNotPresent",
    "env": [{"name": "LEVEL", "value": "1000"}, {"name": "EMPTY"}],
    "ports": [{"containerPort": 2020, "protocol": "TCP"}],
    "resources": {"limits": {"cpu": "500m", "memory": "1k"}, "requests": {"cpu": "1m"}},
    "livenessProbe": {
        "httpGet": {"port": 2020, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    },
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app"}],
}


def test_what_the_server_drops_defaults_or_rewrites_is_no_drift() -> None:
    assert stored.difference(STORED, SENT, "Container") == ""


def test_entries_others_add_to_a_keyed_list_are_no_drift() -> None:
    extended = {
        **STORED,
        "env": [*STORED["env"], {"name": "MESH", "value": "on"}],
        "ports": [*STORED["ports"], {"containerPort": 15090, "protocol": "TCP"}],
    }
    assert stored.holds(extended, SENT, "Container")


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("env", 0, "value"), "1k", "env/LEVEL/value"),  # a quantity only where the schema says
        (("env", 0, "value"), "1e3", "env/LEVEL/value"),
        (("imagePullPolicy",), "Always", "imagePullPolicy"),
        (("stdin",), True, "stdin"),
        (("resources", "limits", "cpu"), "501m", "resources/limits/cpu"),
        (("livenessProbe", "timeoutSeconds"), 5, "livenessProbe/timeoutSeconds"),
        (("volumeMounts", 0, "readOnly"), True, "volumeMounts//var/log/app/readOnly"),
    ],
)
def test_a_changed_value_is_drift(path: tuple[Any, ...], value: Any, where: str) -> None:
    edited: Any = {**STORED}
    node = edited
    for step in path[:-1]:
        node[step] = (
            [dict(i) for i in node[step]] if isinstance(node[step], list) else {**node[step]}
        )
        node = node[step]
    node[path[-1]] = value
    assert stored.difference(edited, SENT, "Container") == where


def test_a_missing_item_of_a_keyed_list_is_drift() -> None:
    assert stored.difference({**STORED, "env": STORED["env"][1:]}, SENT, "Container") == "env/LEVEL"


def test_an_atomic_list_is_compared_whole() -> None:
    wanted = {"name": "s", "image": "x", "args": ["--a", "1"]}
    assert stored.holds({**wanted}, wanted, "Container")
    assert not stored.holds({**wanted, "args": ["--a", "1", "--b"]}, wanted, "Container")
    assert not stored.holds({**wanted, "args": ["--a"]}, wanted, "Container")


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("registry.example:5000/busybox", "Always"),
        ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
        ("busybox:latest@sha256:" + "a" * 64, "Always"),
    ],
)
def test_an_empty_pull_policy_is_the_one_the_image_gets(image: str, policy: str) -> None:
    wanted = {"name": "s", "image": image, "imagePullPolicy": ""}
    assert stored.holds(
        {"name": "s", "image": image, "imagePullPolicy": policy}, wanted, "Container"
    )
    other = "Never"
    assert not stored.holds(
        {"name": "s", "image": image, "imagePullPolicy": other}, wanted, "Container"
    )


def test_quantities_are_amounts() -> None:
    assert stored.quantity("500m") == stored.quantity("0.5")
    assert stored.quantity("1k") == stored.quantity("1e3") == 1000
    assert stored.quantity("1Gi") == 2**30
    assert stored.quantity("fast") is None
