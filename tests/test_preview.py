"""`sidecar-operator preview`: read-only, offline on manifests or against the cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tests.kube import REPO, SIDECAR_OPERATOR, Kubectl, run
from tests.scenario import (
    APP_WITH_OWN_FLUENT_BIT,
    FLUENT_BIT,
    LOG_MOUNT,
    LOG_VOLUME,
    Policies,
    deployment,
)

SAMPLES = REPO / "manifests" / "samples"


def preview(*args: str, kubeconfig: Path | None = None) -> tuple[int, str]:
    env = None if kubeconfig is None else {**os.environ, "KUBECONFIG": str(kubeconfig)}
    result = run([SIDECAR_OPERATOR, "preview", *args], check=False, env=env)
    assert result.returncode in (0, 1) and not result.stderr, result.stderr
    return result.returncode, result.stdout


def test_offline_preview_shows_the_matched_deployment_as_a_diff() -> None:
    code, out = preview("-f", str(SAMPLES / "log-shipping.yaml"), "--deployments", str(SAMPLES))
    assert code == 0
    assert out.startswith("CHANGE demo-shop/checkout\n")
    assert "+  - name: fluent-bit\n" in out and "+    image: fluent/fluent-bit:3.1.9\n" in out
    assert "+    volumeMounts:\n+    - name: app-logs\n+      mountPath: /var/log/app\n" in out
    assert "payments" not in out and "storefront" not in out
    assert out.endswith("1 workloads matched or affected, 0 conflicts\n")


def test_offline_preview_covers_every_kind_the_policy_targets() -> None:
    code, out = preview(
        "-f", str(SAMPLES / "statefulset-exporter.yaml"), "--workloads", str(SAMPLES)
    )
    assert code == 0
    assert out.startswith("CHANGE StatefulSet/demo-shop/orders-db\n")
    assert "+  - name: postgres-exporter\n" in out
    assert out.endswith("1 workloads matched or affected, 0 conflicts\n")
    code, out = preview(
        "-f", str(SAMPLES / "cronjob-native-sidecar.yaml"), "--workloads", str(SAMPLES)
    )
    assert code == 0
    assert out.startswith("CHANGE CronJob/demo-shop/nightly-report\n")
    assert "+  - name: vault-proxy\n" in out and "+    restartPolicy: Always\n" in out


def test_offline_preview_reports_conflicts_with_exit_code_1(tmp_path: Path) -> None:
    (tmp_path / "apps.yaml").write_text(
        deployment(
            "web",
            pod=APP_WITH_OWN_FLUENT_BIT,
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "sidecars.dev/v1alpha1",
                "kind": "SidecarPolicy",
                "metadata": {"name": "logs"},
                "spec": {
                    "selector": {"matchLabels": {"sidecar-test": "yes"}},
                    "containers": [FLUENT_BIT],
                    "volumes": [LOG_VOLUME],
                },
            }
        )
    )
    code, out = preview("-f", str(policy), "--deployments", str(tmp_path / "apps.yaml"))
    assert code == 1
    assert "CONFLICT default/web: container fluent-bit is already defined by the Deployment" in out


def test_offline_preview_shows_each_workloads_rendered_values(tmp_path: Path) -> None:
    apps = [
        yaml.safe_load(deployment(name, labels={"sidecar-test": "yes", **labels}))
        for name, labels in (("cart", {"team": "checkout"}), ("search", {}))
    ]
    (tmp_path / "apps.yaml").write_text(yaml.safe_dump_all(apps))
    policy = tmp_path / "policy.yaml"
    tagger = {
        "name": "tagger",
        "image": "fluent/fluent-bit:3.1.9",
        "args": ["-t", "{{ workload.namespace }}.{{ workload.name }}"],
        "env": [{"name": "TEAM", "value": "{{ workload.labels['team'] | default 'none' }}"}],
    }
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "sidecars.dev/v1alpha1",
                "kind": "SidecarPolicy",
                "metadata": {"name": "tags"},
                "spec": {
                    "selector": {"matchLabels": {"sidecar-test": "yes"}},
                    "containers": [tagger],
                    "podMetadata": {
                        "annotations": {"example.com/shipped-as": "{{ workload.name }}"}
                    },
                },
            }
        )
    )
    code, out = preview("-f", str(policy), "--deployments", str(tmp_path / "apps.yaml"))
    assert code == 0, out
    cart, search = out.split("CHANGE default/search\n")
    assert cart.startswith("CHANGE default/cart\n")
    assert "+    - default.cart\n" in cart and "+      value: checkout\n" in cart
    assert "+    example.com/shipped-as: cart\n" in cart
    assert "+    - default.search\n" in search and "+      value: none\n" in search
    assert "+    example.com/shipped-as: search\n" in search
    assert "{{" not in out


def spec_managers(workload: dict[str, Any]) -> list[str]:
    return [m["manager"] for m in workload["metadata"]["managedFields"] if "subresource" not in m]


def test_cluster_preview_is_read_only(
    kubectl: Kubectl, kubectl_admin: Kubectl, policies: Policies, namespace: str, tmp_path: Path
) -> None:
    kubectl.apply(deployment("web"))
    kubectl.apply(deployment("other", labels={"sidecar-test": "no"}))
    # The deployment controller writes status (and so the resourceVersion) whenever it gets to
    # it; a write by the preview would move the generation and the spec.
    before = kubectl.json("deployment", "web", "--show-managed-fields")
    policy = tmp_path / "policy.yaml"
    name = f"preview-{namespace[-5:]}"
    document = policies.document(
        name, containers=[FLUENT_BIT], volumes=[LOG_VOLUME], volumeMounts=[LOG_MOUNT]
    )
    policy.write_text(yaml.safe_dump(document))
    code, out = preview("-f", str(policy), kubeconfig=kubectl_admin.kubeconfig)
    assert code == 0, out
    assert f"CHANGE {namespace}/web\n" in out and f"{namespace}/other" not in out
    assert "+  - name: fluent-bit\n" in out
    after = kubectl.json("deployment", "web", "--show-managed-fields")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert spec_managers(after) == spec_managers(before)
    assert kubectl_admin.find("sidecarpolicy", name) is None


def test_a_file_that_is_not_yaml_is_named_with_its_line_and_exit_code_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Deployment\nmetadata: [web\n")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    policy = str(SAMPLES / "log-shipping.yaml")
    for args, line in (
        (["-f", str(broken)], "line 3"),
        (["-f", policy, "--workloads", str(tmp_path)], "can't decode"),
    ):
        result = run([SIDECAR_OPERATOR, "preview", *args], check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("error: ") and line in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and not result.stdout
