"""The SidecarPolicy CRD: generated from the models, and rejecting bad policies at apply time."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
import yaml

from sidecar_operator.api import corev1, crd
from sidecar_operator.devcluster import binaries
from tests.kube import CRD_FILE, Kubectl


def _openapi() -> dict[str, Any]:
    return json.loads(binaries.openapi_document(binaries.ensure()).read_text())


def test_checked_in_crd_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd.render(_openapi()), "crds/ is stale: run `make crds`"


def test_checked_in_core_v1_shapes_match_the_pinned_release() -> None:
    table = corev1.TABLE_FILE.read_text()
    assert table == corev1.render(_openapi()), "api/corev1.json is stale: run `make crds`"


def _policy(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "selector": {"matchLabels": {"logging": "enabled"}},
        "containers": [{"name": "shipper", "image": "fluent/fluent-bit:3.1"}],
    }
    base.update(spec)
    return {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": f"crd-{uuid.uuid4().hex[:8]}"},
        "spec": {key: value for key, value in base.items() if value is not None},
    }


def _apply(kubectl: Kubectl, policy: dict[str, Any]) -> tuple[bool, str]:
    """Validated and defaulted by the API server as an apply would be, and not stored: a policy
    stored even for a moment (`selector: {}`) would be served, and inject into the Deployments
    of tests running beside this one."""
    result = kubectl.apply(yaml.safe_dump(policy), "--dry-run=server", check=False)
    return result.returncode == 0, result.stderr


PRIVILEGED = {"securityContext": {"privileged": True}}
ESCALATION = {"securityContext": {"allowPrivilegeEscalation": True}}
CAPABILITIES = {"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}
SIDECAR = {"name": "shipper", "image": "fluent/fluent-bit:3.1"}
ALLOW_IT = "; set spec.allowPrivileged: true to allow it"
# Each thing the Pod Security Standards' baseline level refuses, as a policy would add it.
BASELINE_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "privileged sidecar": (
        {"containers": [{**SIDECAR, **PRIVILEGED}]},
        "a sidecar sets securityContext.privileged: true" + ALLOW_IT,
    ),
    "privileged init container": (
        {"initContainers": [{"name": "sync", "image": "git-sync", **PRIVILEGED}]},
        "a sidecar sets securityContext.privileged: true" + ALLOW_IT,
    ),
    "privilege escalation in an init container": (
        {"initContainers": [{"name": "sync", "image": "git-sync", **ESCALATION}]},
        "a sidecar sets securityContext.allowPrivilegeEscalation: true",
    ),
    "added capabilities": (
        {"containers": [{**SIDECAR, **CAPABILITIES}]},
        "a sidecar's securityContext.capabilities.add goes beyond the Pod Security baseline set",
    ),
    "a capability beyond baseline after baseline ones": (
        {
            "initContainers": [
                {
                    "name": "sync",
                    "image": "git-sync",
                    "securityContext": {"capabilities": {"add": ["CHOWN", "KILL", "SYS_ADMIN"]}},
                }
            ]
        },
        "a sidecar's securityContext.capabilities.add goes beyond the Pod Security baseline set",
    ),
    "unmasked procMount": (
        {"containers": [{**SIDECAR, "securityContext": {"procMount": "Unmasked"}}]},
        "a sidecar sets securityContext.procMount other than Default" + ALLOW_IT,
    ),
    "unconfined seccomp": (
        {
            "containers": [
                {**SIDECAR, "securityContext": {"seccompProfile": {"type": "Unconfined"}}}
            ]
        },
        "a sidecar sets securityContext.seccompProfile.type to Unconfined",
    ),
    "unconfined AppArmor": (
        {
            "containers": [
                {**SIDECAR, "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}
            ]
        },
        "a sidecar sets securityContext.appArmorProfile.type to Unconfined",
    ),
    "custom SELinux type": (
        {"containers": [{**SIDECAR, "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}]},
        "a sidecar sets securityContext.seLinuxOptions user, role, or a type other than",
    ),
    "SELinux user": (
        {"containers": [{**SIDECAR, "securityContext": {"seLinuxOptions": {"user": "system_u"}}}]},
        "a sidecar sets securityContext.seLinuxOptions user, role, or a type other than",
    ),
    "Windows hostProcess": (
        {"containers": [{**SIDECAR, "securityContext": {"windowsOptions": {"hostProcess": True}}}]},
        "a sidecar sets securityContext.windowsOptions.hostProcess: true" + ALLOW_IT,
    ),
    "hostPort": (
        {
            "containers": [
                {
                    **SIDECAR,
                    "ports": [
                        {"containerPort": 2020},
                        {"containerPort": 24224, "hostPort": 24224},
                    ],
                }
            ]
        },
        "a sidecar sets hostPort in ports" + ALLOW_IT,
    ),
    "probe aimed at another host": (
        {
            "containers": [
                {**SIDECAR, "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}
            ]
        },
        "a sidecar's probe or lifecycle handler sets httpGet.host or tcpSocket.host",
    ),
    "hostPath volume": (
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        "a volume is a hostPath volume" + ALLOW_IT,
    ),
}

REJECTED = {
    "selector missing": ({"selector": None}, "spec.selector: Required value"),
    "container without name": (
        {"containers": [{"image": "busybox"}]},
        "spec.containers[0].name: Required value",
    ),
    "container without image": (
        {"containers": [{"name": "shipper"}]},
        "spec.containers[0].image: Required value",
    ),
    "init container without image": (
        {"initContainers": [{"name": "sync"}]},
        "spec.initContainers[0].image: Required value",
    ),
    "duplicate container names": (
        {"containers": [SIDECAR, {**SIDECAR, "image": "other"}]},
        'spec.containers[1]: Duplicate value: {"name":"shipper"}',
    ),
    "duplicate init container names": (
        {"initContainers": [SIDECAR, SIDECAR]},
        "spec.initContainers[1]: Duplicate value",
    ),
    "duplicate volume names": (
        {"volumes": [{"name": "logs", "emptyDir": {}}, {"name": "logs", "emptyDir": {}}]},
        "spec.volumes[1]: Duplicate value",
    ),
    "name in both containers and initContainers": (
        {"initContainers": [{**SIDECAR, "restartPolicy": "Always"}]},
        "a name is used in both containers and initContainers",
    ),
    "volumeMount naming an undefined volume": (
        {"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]},
        "every volumeMounts entry must name a volume defined in this policy's volumes",
    ),
    "maxConcurrent zero": (
        {"updateStrategy": {"maxConcurrent": 0}},
        "maxConcurrent must be a positive integer or a percentage from 1% to 100%",
    ),
    "maxConcurrent 0%": (
        {"updateStrategy": {"maxConcurrent": "0%"}},
        "maxConcurrent must be a positive integer or a percentage from 1% to 100%",
    ),
    "maxConcurrent 101%": (
        {"updateStrategy": {"maxConcurrent": "101%"}},
        "maxConcurrent must be a positive integer or a percentage from 1% to 100%",
    ),
    "maxConcurrent a word": (
        {"updateStrategy": {"maxConcurrent": "fast"}},
        "maxConcurrent must be a positive integer or a percentage from 1% to 100%",
    ),
    "priority of the wrong type": (
        {"priority": "high"},
        'spec.priority: Invalid value: "string": spec.priority in body must be of type integer',
    ),
    "containers of the wrong type": (
        {"containers": "fluent-bit"},
        "spec.containers in body must be of type array",
    ),
    "a label value no label can have": (
        {"selector": {"matchLabels": {"team": "équipe"}}},
        "spec.selector.matchLabels.team in body should match",
    ),
    "a label key no label can have": (
        {"namespaceSelector": {"matchLabels": {"équipe/team": "a"}}},
        "matchLabels: every key must be a label key",
    ),
    "an expression value no label can have": (
        {"selector": {"matchExpressions": [{"key": "t", "operator": "In", "values": ["a b"]}]}},
        "spec.selector.matchExpressions[0].values[0] in body should match",
    ),
    "an image with blanks": (
        {"containers": [{"name": "shipper", "image": " fluent/fluent-bit:3.1 "}]},
        "spec.containers[0].image in body should match",
    ),
    "an unknown kind": (
        {"kinds": ["Deployment", "Job"]},
        'spec.kinds[1]: Unsupported value: "Job": supported values: "Deployment", '
        '"StatefulSet", "DaemonSet", "CronJob"',
    ),
    "no kinds": (
        {"kinds": []},
        "spec.kinds: Invalid value: 0: spec.kinds in body should have at least 1 items",
    ),
    "a kind twice": (
        {"kinds": ["CronJob", "CronJob"]},
        'spec.kinds[1]: Duplicate value: "CronJob"',
    ),
    "a progress deadline of 0": (
        {"updateStrategy": {"progressDeadlineSeconds": 0}},
        "spec.updateStrategy.progressDeadlineSeconds in body should be greater than or equal to 1",
    ),
    "nothing to add": (
        {"containers": []},
        "a policy must add something: set at least one of containers, initContainers, "
        "volumes, volumeMounts or podMetadata",
    ),
    "a step that covers nothing more": (
        {"updateStrategy": {"steps": [{"pause": {}}, {"percent": 100}]}},
        "a step covers more workloads: give it a selector, a namespaceSelector or a percent",
    ),
    "a step's percent over 100": (
        {"updateStrategy": {"steps": [{"percent": 150}]}},
        "spec.updateStrategy.steps[0].percent: Invalid value: 150",
    ),
    "two steps of one name": (
        {"updateStrategy": {"steps": [{"name": "a", "percent": 10}, {"name": "a", "percent": 50}]}},
        "step names must be unique",
    ),
    "a pause that is no duration": (
        {"updateStrategy": {"steps": [{"percent": 10, "pause": {"duration": "ten minutes"}}]}},
        "spec.updateStrategy.steps[0].pause.duration in body should match",
    ),
    "a negative history limit": (
        {"revisionHistoryLimit": -1},
        "spec.revisionHistoryLimit in body should be greater than or equal to 0",
    ),
    "an unknown placeholder": (
        {"containers": [{**SIDECAR, "env": [{"name": "N", "value": "{{ workload.uid }}"}]}]},
        "spec.containers[0].env[0].value in body should match",
    ),
    "a filter other than default": (
        {"containers": [{**SIDECAR, "args": ["{{ workload.name | upper }}"]}]},
        "spec.containers[0].args[0] in body should match",
    ),
    "a placeholder in the image": (
        {"containers": [{**SIDECAR, "image": "fluent/{{workload.name}}:3.1"}]},
        "spec.containers[0].image in body should match",
    ),
    "a placeholder in the securityContext": (
        {
            "initContainers": [
                {
                    "name": "sync",
                    "image": "git-sync",
                    "securityContext": {"seLinuxOptions": {"level": "{{ workload.name }}"}},
                }
            ]
        },
        "spec.initContainers[0].securityContext.seLinuxOptions.level in body should match",
    ),
    "a placeholder in resources": (
        {"containers": [{**SIDECAR, "resources": {"limits": {"memory": "{{ workload.name }}"}}}]},
        "spec.containers[0].resources.limits.memory in body should match",
    ),
    "a quantity that is no quantity": (
        {"initContainers": [{**SIDECAR, "resources": {"requests": {"cpu": "half a core"}}}]},
        "spec.initContainers[0].resources.requests.cpu in body should match",
    ),
    "a placeholder that does not close in a volume's ConfigMap": (
        {"volumes": [{"name": "conf", "configMap": {"name": "{{ workload.name"}}]},
        "spec.volumes[0].configMap.name in body should match",
    ),
    "a pod label under sidecars.dev/": (
        {"podMetadata": {"labels": {"sidecars.dev/inject": "false"}}},
        "podMetadata.labels: every key must be a label key",
    ),
    "a pod annotation under a subdomain of sidecars.dev/": (
        {"podMetadata": {"annotations": {"policy.sidecars.dev/logs": "abc"}}},
        "podMetadata.annotations: every key must be a label key",
    ),
    "a pod label the workload controllers set": (
        {"podMetadata": {"labels": {"pod-template-hash": "x"}}},
        "podMetadata.labels: every key must be a label key",
    ),
    "a pod label key that is no label key": (
        {"podMetadata": {"labels": {"has space": "x"}}},
        "podMetadata.labels: every key must be a label key",
    ),
    "a pod label value that is no label value": (
        {"podMetadata": {"labels": {"team": "-shop"}}},
        "spec.podMetadata.labels.team in body should match",
    ),
    "a pod label value of 64 characters": (
        {"podMetadata": {"labels": {"team": "a" * 64}}},
        "spec.podMetadata.labels.team in body should match",
    ),
    "an unknown placeholder in a pod annotation": (
        {"podMetadata": {"annotations": {"owner": "{{ workload.uid }}"}}},
        "spec.podMetadata.annotations.owner in body should match",
    ),
    "a policy adding only an empty podMetadata": (
        {"containers": None, "podMetadata": {"labels": {}}},
        "a policy must add something",
    ),
    **BASELINE_REFUSED,
}


@pytest.mark.parametrize("spec, message", REJECTED.values(), ids=REJECTED.keys())
def test_bad_policy_is_rejected_at_apply(
    crd_installed: Kubectl, spec: dict[str, Any], message: str
) -> None:
    accepted, stderr = _apply(crd_installed, _policy(**spec))
    assert not accepted
    assert message in stderr


def test_name_longer_than_63_characters_is_rejected(crd_installed: Kubectl) -> None:
    policy = _policy()
    policy["metadata"]["name"] = "p" * 64
    accepted, stderr = _apply(crd_installed, policy)
    assert not accepted
    assert "a SidecarPolicy name must be at most 63 characters" in stderr


ACCEPTED = {
    "the waves of the contract": {
        "revisionHistoryLimit": 5,
        "updateStrategy": {
            "steps": [
                {
                    "name": "canary",
                    "namespaceSelector": {"matchLabels": {"stage": "staging"}},
                    "pause": {},
                },
                {"percent": 25, "pause": {"duration": "10m"}},
                {"selector": {"matchLabels": {"tier": "web"}}, "pause": {"duration": "1h30m"}},
                {"percent": 100},
            ]
        },
    },
    "privileged with allowPrivileged": {
        "containers": [
            {**SIDECAR, "securityContext": {"privileged": True, "capabilities": {"add": ["ALL"]}}}
        ],
        "allowPrivileged": True,
    },
    **{
        f"{name} with allowPrivileged": {**spec, "allowPrivileged": True}
        for name, (spec, _) in BASELINE_REFUSED.items()
    },
    "what baseline admits, without allowPrivileged": {
        "containers": [
            {
                **SIDECAR,
                "ports": [{"containerPort": 2020, "hostPort": 0}],
                "livenessProbe": {"httpGet": {"path": "/", "port": 2020}},
                "securityContext": {
                    "privileged": False,
                    "allowPrivilegeEscalation": False,
                    "procMount": "Default",
                    "capabilities": {"add": ["NET_BIND_SERVICE", "CHOWN"], "drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "appArmorProfile": {"type": "Localhost", "localhostProfile": "shipper"},
                    "seLinuxOptions": {"type": "container_t", "level": "s0:c1,c2"},
                    "windowsOptions": {"hostProcess": False},
                },
            }
        ],
        "volumes": [{"name": "logs", "emptyDir": {}}],
    },
    "quantities written every way": {
        "containers": [
            {
                **SIDECAR,
                "resources": {
                    "requests": {"cpu": 1, "memory": "64Mi", "ephemeral-storage": "1e9"},
                    "limits": {"cpu": "1.5", "memory": ".5Gi", "nvidia.com/gpu": "+1"},
                },
            }
        ]
    },
    "maxConcurrent 100%": {"updateStrategy": {"maxConcurrent": "100%"}},
    "maxConcurrent 1%": {"updateStrategy": {"maxConcurrent": "1%"}},
    "maxConcurrent integer": {"updateStrategy": {"maxConcurrent": 3}},
    "only volumes and mounts": {
        "containers": None,
        "volumes": [{"name": "logs", "emptyDir": {}}],
        "volumeMounts": [{"name": "logs", "mountPath": "/var/log/app"}],
    },
    "sidecar mounting an app volume": {
        "containers": [{**SIDECAR, "volumeMounts": [{"name": "app-data", "mountPath": "/d"}]}]
    },
    "empty selector": {"selector": {}},
    "per-workload values where they are read": {
        "containers": [
            {
                **SIDECAR,
                "command": ["fluent-bit", "\\{{ literal }}", "{x}"],
                "args": ["-t", "{{ workload.namespace }}.{{ workload.name }}"],
                "env": [
                    {"name": "TEAM", "value": "{{ workload.labels['team'] | default 'none' }}"},
                    {"name": "OWNER", "value": '{{ workload.annotations["example.com/o"] }}'},
                ],
                "livenessProbe": {"exec": {"command": ["test", "{{.Ready}}"]}},
            }
        ],
        "volumes": [
            {"name": "conf", "configMap": {"name": "conf-{{ workload.labels['app'] }}"}},
            {"name": "creds", "secret": {"secretName": "{{ workload.name }}-creds"}},
        ],
    },
    "every kind": {"kinds": ["Deployment", "StatefulSet", "DaemonSet", "CronJob"]},
    "only pod metadata, with per-workload values": {
        "containers": None,
        "podMetadata": {
            "labels": {
                "app.kubernetes.io/part-of": "shop",
                "team": "{{ workload.labels['team'] | default 'none' }}-x",
                "empty": "",
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "example.com/owner": "{{ workload.namespace }}/{{ workload.name }}",
                "example.com/json": '{"a": [1, 2]}',
            },
        },
    },
}


@pytest.mark.parametrize("spec", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_good_policy_is_accepted(crd_installed: Kubectl, spec: dict[str, Any]) -> None:
    accepted, stderr = _apply(crd_installed, _policy(**spec))
    assert accepted, stderr


def test_defaults_are_filled_in(crd_installed: Kubectl) -> None:
    policy = _policy()
    dry_run = crd_installed.apply(yaml.safe_dump(policy), "--dry-run=server", "-o", "json")
    stored = json.loads(dry_run.stdout)["spec"]
    assert stored["priority"] == 0
    assert stored["allowPrivileged"] is False
    assert stored["updateStrategy"] == {
        "maxConcurrent": "25%",
        "paused": False,
        "progressDeadlineSeconds": 600,
        "steps": [],
    }
    assert stored["revisionHistoryLimit"] == 10
    assert stored["kinds"] == ["Deployment"]
    assert stored["initContainers"] == [] and stored["volumes"] == []


def test_kubectl_explain_documents_core_container_fields(crd_installed: Kubectl) -> None:
    explained = crd_installed("explain", "sidecarpolicy.spec.containers").stdout
    assert "core/v1 Containers appended after the app's containers" in explained
    for field in ("image", "volumeMounts", "securityContext", "restartPolicy", "resources"):
        assert f"\n  {field}\t" in explained
    probe = crd_installed("explain", "sidecarpolicy.spec.containers.livenessProbe.httpGet.port")
    assert "IntOrString" in probe.stdout or "port" in probe.stdout


def test_every_field_has_a_description() -> None:
    schema = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"
    ]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in node.get("properties", {}).items():
            if name != "metadata" and not child.get("description"):
                missing.append(f"{path}.{name}")
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(copy.deepcopy(schema), "")
    assert missing == []
