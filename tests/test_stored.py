"""What the API server stores of a policy's content is no drift, and a changed value is: the
planner against the real control plane, over sidecars drawn from the whole core/v1 Container,
Volume and VolumeMount schemas (`tests/corev1_values`: every optional field absent, empty or
zero, defaulted, or set).

Each drawn policy goes through the CRD (which fills in the core/v1 schema's own defaults, as for
a real policy) and its apply body through a server-side dry-run on a real Deployment, with the
policy's own field manager: what comes back is what the API server would store. The planner,
given that, must want no further write (a write it still wanted went out on every event, a
hundred a second). Then one value the policy sets is changed in what is stored, as an edit by
hand would, and the comparison must see it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner, stored
from sidecar_operator.core.ownership import field_manager
from sidecar_operator.core.types import Kind
from tests.corev1_values import leaves, mutated, policy_content
from tests.kube import Kubectl
from tests.scenario import deployment

POLICY = f"stored-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def app(crd_installed: Kubectl) -> Iterator[tuple[Kubectl, dict[str, Any]]]:
    """One Deployment, as its owner created it, with its managedFields."""
    namespace = f"stored-{uuid.uuid4().hex[:5]}"
    crd_installed("create", "namespace", namespace)
    kubectl = crd_installed.in_namespace(namespace)
    kubectl.apply(deployment("app"))
    live = kubectl.json("deployment", "app", "--show-managed-fields")
    yield kubectl, live
    crd_installed("delete", "namespace", namespace, "--wait=false")


def dry_run(kubectl: Kubectl, body: dict[str, Any], *, manager: str) -> dict[str, Any]:
    result = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        f"--field-manager={manager}",
        "--show-managed-fields",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(body),
        check=False,
    )
    assert result.returncode == 0, (
        f"the API server refused a drawn {body['kind']} (tests/corev1_values draws only valid "
        f"ones): {result.stderr}\n{json.dumps(body, indent=1)}"
    )
    return dict(json.loads(result.stdout))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(content=policy_content(), data=st.data())
def test_what_the_api_server_stores_is_no_drift_and_a_changed_value_is(
    app: tuple[Kubectl, dict[str, Any]], content: dict[str, Any], data: st.DataObject
) -> None:
    kubectl, live = app
    spec = {"selector": {}, "allowPrivileged": True, **content}
    policy_body = {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": POLICY},
        "spec": spec,
    }
    policy = Policy.from_object(dry_run(kubectl, policy_body, manager="kubectl"))
    (action,) = planner.plan(live, {}, [policy])
    assert action.kind is Kind.APPLY and action.body is not None
    written = dry_run(kubectl, action.body, manager=field_manager(POLICY))

    (again,) = planner.plan(written, {}, [policy])
    assert again.kind is Kind.IN_SYNC, f"stored otherwise than the planner expects: {again.drift}"

    pod = written["spec"]["template"]["spec"]
    targets: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        (pod["containers"][1], policy.spec.containers[0].to_api(), "Container"),
        (pod["volumes"][0], policy.spec.volumes[0].to_api(), "Volume"),
        (
            next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "shared"),
            policy.spec.volume_mounts[0].to_api(),
            "VolumeMount",
        ),
    ]
    held, wanted, type_name = data.draw(st.sampled_from(targets))
    assert stored.holds(held, wanted, type_name)
    path = data.draw(st.sampled_from(leaves(wanted, type_name)))
    changed = mutated(held, wanted, path)
    assert not stored.holds(changed, wanted, type_name), f"{path} changed, and not seen"
