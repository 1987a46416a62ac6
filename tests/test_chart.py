"""The Helm chart: linted, rendered into manifests/ unchanged, installed, upgraded and
uninstalled with helm (built from its pinned Go module) on the real control plane. On kwok the
operator's pods are Ready without running, so these check the install, not the operator (the
rest of the suite runs that)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar_operator.api.names import SHARD_NAME
from tests.conftest import OperatorProcess
from tests.kube import REPO, Kubectl, eventually, refused, service_account_kubeconfig
from tests.scenario import FLUENT_BIT, LOG_VOLUME, Policies
from tests.tools import CHART, RELEASE, Helm, helm, run

VARIANTS = {
    "defaults": [],
    "webhook off": ["--set", "webhook.enabled=false"],
    "cert-manager": ["--set", "webhook.certificate.source=cert-manager"],
    "cert-manager, an issuer": [
        "--set",
        "webhook.certificate.source=cert-manager",
        "--set",
        "webhook.certificate.certManager.issuerRef.name=ca,"
        "webhook.certificate.certManager.issuerRef.kind=ClusterIssuer",
    ],
    "monitoring": [
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true",
    ],
    "one replica, scheduling": [
        "--set",
        "replicaCount=1,priorityClassName=system-cluster-critical",
        "--set",
        "nodeSelector.kubernetes\\.io/os=linux",
    ],
}


def _template(
    *args: str, namespace: str = "sidecar-operator-system", release: str = RELEASE
) -> list[dict[str, Any]]:
    out = run(helm(), "template", release, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def _args(docs: list[dict[str, Any]]) -> list[str]:
    deployment = _find(docs, "Deployment")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def test_a_403_is_told_from_numbers_that_hold_403() -> None:
    """The RBAC checks fail on the operator's log lines that report a 403: not on a replica's
    pid, a timestamp or a duration that happen to hold the digits."""
    log = "\n".join(
        [
            '{"event": "Active", "replica": "vm/25403", "timestamp": "2026-12-07T04:42:07Z"}',
            '{"event": "Pass", "timestamp": "2026-12-07T04:46:03.184033Z", "seconds": 0.403}',
            '{"event": "Patch rejected", "status": 403, "error": "no"}',
            "kopf: APIForbiddenError: Forbidden",
        ]
    )
    assert refused(log) == log.splitlines()[2:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_chart_lints_strictly(variant: str) -> None:
    linted = run(helm(), "lint", "--strict", str(CHART), *VARIANTS[variant])
    assert "0 chart(s) failed" in linted.stdout


def test_a_wrong_value_is_refused_by_the_schema() -> None:
    refused = run(
        helm(), "template", str(CHART), "--set", "webhook.certificate.source=vault", check=False
    )
    assert refused.returncode != 0
    assert "/webhook/certificate/source" in refused.stderr, refused.stderr
    assert "cert-manager" in refused.stderr, refused.stderr


def test_a_release_serving_a_shard_runs_with_it_and_its_own_peering() -> None:
    """Two releases side by side, one the default's policies, one a shard's: each its own
    peering (the release's name), the shard's policies picked by their label."""
    default = _args(_template())
    blue = _args(_template("--set", "operator.shard=blue", release="sidecars-blue"))
    assert not [a for a in default if a.startswith("--shard")]
    assert "--shard=blue" in blue
    assert [a for a in default if a.startswith("--peering")] != [
        a for a in blue if a.startswith("--peering")
    ]
    refused = run(helm(), "template", str(CHART), "--set", "operator.shard=Blue", check=False)
    assert refused.returncode != 0 and "/operator/shard" in refused.stderr, refused.stderr
    schema = json.loads((CHART / "values.schema.json").read_text())
    pattern = schema["properties"]["operator"]["properties"]["shard"]["pattern"]
    assert pattern == f"^({SHARD_NAME.pattern})?$"  # what `run --shard` accepts, or empty


def test_manifests_are_the_chart_rendered_with_its_defaults(tmp_path: Path) -> None:
    """`make manifests` output is checked in; the chart is the one source of both."""
    subprocess.run(
        [sys.executable, str(REPO / "hack" / "render-manifests.py"), helm(), str(tmp_path)],
        check=True,
    )
    rendered = sorted(path.name for path in tmp_path.iterdir())
    assert rendered, "rendered nothing"
    for name in rendered:
        checked_in = REPO / "manifests" / name
        assert checked_in.is_file(), f"manifests/{name} missing: run `make manifests`"
        assert (tmp_path / name).read_text() == checked_in.read_text(), (
            f"manifests/{name} differs from the chart: run `make manifests`"
        )
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"../crds", "namespace.yaml", *rendered}
    for crd in (CHART / "crds").iterdir():
        assert crd.read_text() == (REPO / "crds" / crd.name).read_text(), (
            f"charts/sidecar-operator/crds/{crd.name} differs from crds/: run `make crds`"
        )


def test_the_webhook_certificate_from_cert_manager() -> None:
    """Rendered only: the test cluster has no cert-manager."""
    namespace = "ops"
    docs = _template("--set", "webhook.certificate.source=cert-manager", namespace=namespace)
    certificate = _find(docs, "Certificate")
    assert certificate["spec"]["secretName"] == "sidecar-operator-webhook"
    assert certificate["spec"]["dnsNames"] == [
        f"sidecar-operator-webhook.{namespace}.svc",
        f"sidecar-operator-webhook.{namespace}.svc.cluster.local",
    ]
    assert certificate["spec"]["issuerRef"]["name"] == _find(docs, "Issuer")["metadata"]["name"]
    webhook = _find(docs, "MutatingWebhookConfiguration")
    assert webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{namespace}/sidecar-operator-webhook"
    )
    args = _args(docs)
    assert "--webhook-certs=/certs" in args
    assert not [a for a in args if a.startswith(("--webhook-secret", "--webhook-configuration"))]
    pod = _find(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "certs", "secret": {"secretName": "sidecar-operator-webhook"}} in pod["volumes"]
    # No access to Secrets or to the webhook configuration: cert-manager does both.
    assert not [d for d in docs if d["kind"] == "Role" and "certificate" in d["metadata"]["name"]]
    role = _find(docs, "ClusterRole", "sidecar-operator")
    assert not [r for r in role["rules"] if "mutatingwebhookconfigurations" in r["resources"]]


def test_monitoring_objects_carry_the_rules_file_and_the_dashboard() -> None:
    docs = _template(
        "--set",
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true",
        "--set",
        "prometheusRule.runbookBaseUrl=https://wiki.example/runbook",
    )
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    spec = _find(docs, "PrometheusRule")["spec"]
    assert [r["alert"] for g in spec["groups"] for r in g["rules"]] == [
        r["alert"] for g in rules["groups"] for r in g["rules"]
    ]
    for rule in (r for g in spec["groups"] for r in g["rules"]):
        url = rule["annotations"]["runbook_url"]
        assert url == f"https://wiki.example/runbook#{rule['alert'].lower()}"
    dashboard = _find(docs, "ConfigMap", "sidecar-operator-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "dashboard.json").read_text())
    assert json.loads(dashboard["data"]["sidecar-operator.json"]) == shipped
    monitor = _find(docs, "ServiceMonitor")
    service = _find(docs, "Service", "sidecar-operator-metrics")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


# The session applied the CRDs with kubectl (as `kubectl apply -k manifests/` does): Helm 4
# applies the chart's server-side, and a CRD's `spec.versions`, an atomic list the API server
# fills defaults into, conflicts with any other manager's. As docs/operating.md tells whoever
# moves from kustomize to Helm: force them.
INSTALL = ("--create-namespace", "--force-conflicts", "--wait", "--timeout=3m")


@pytest.fixture
def release(crd_installed: Kubectl) -> Iterator[Helm]:
    """A namespace for a release of the chart, named RELEASE as the docs install it; whatever
    the test leaves installed is uninstalled after it."""
    namespace = f"helm-{uuid.uuid4().hex[:6]}"
    installer = Helm(crd_installed, namespace)
    yield installer
    installer("uninstall", RELEASE, "--wait", "--ignore-not-found")
    crd_installed("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def _present(admin: Kubectl, objects: list[dict[str, Any]]) -> None:
    """Each object of the release as the API server holds it."""
    for obj in objects:
        where = obj["metadata"].get("namespace")
        got = admin.json(
            obj["kind"].lower(), obj["metadata"]["name"], *(["-n", where] if where else [])
        )
        assert got["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def _ready_pods(admin: Kubectl, namespace: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pods = admin.json("pods", "-n", namespace, "-l", "app.kubernetes.io/name=sidecar-operator")[
            "items"
        ]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        ok = [
            p
            for p in live
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return ok if len(ok) == count == len(live) else None

    return eventually(ready, timeout=120, what=f"{count} operator pods Ready")


@pytest.mark.exclusive  # installs cluster-wide objects, and a webhook no pod answers
def test_install_upgrade_and_uninstall_with_defaults(
    release: Helm, crd_installed: Kubectl, kubectl: Kubectl, policies: Policies
) -> None:
    release("install", RELEASE, str(CHART), *INSTALL)
    objects = release.objects()
    kinds = {obj["kind"] for obj in objects}
    assert {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    } <= kinds
    _present(crd_installed, objects)
    _ready_pods(crd_installed, release.namespace, 2)
    webhook = crd_installed.json("mutatingwebhookconfiguration", RELEASE)["webhooks"][0]
    assert webhook["clientConfig"]["service"]["namespace"] == release.namespace
    assert webhook["failurePolicy"] == "Ignore"
    # The CRDs come from the chart's crds/ (here already there: helm leaves them be).
    crd_installed("get", "crd", "sidecarpolicies.sidecars.dev")

    name = policies.apply(containers=[FLUENT_BIT], volumes=[LOG_VOLUME])

    release(
        "upgrade",
        RELEASE,
        str(CHART),
        "--reuse-values",
        "--set",
        "replicaCount=3,operator.resyncSeconds=30",
        "--wait",
        "--timeout=3m",
    )
    deployment = crd_installed.json("deployment", RELEASE, "-n", release.namespace)
    assert deployment["spec"]["replicas"] == 3
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--resync-seconds=30" in args and "--resync-seconds=60" not in args
    _ready_pods(crd_installed, release.namespace, 3)
    history = json.loads(release("history", RELEASE, "-o", "json").stdout)
    assert [entry["revision"] for entry in history] == [1, 2]

    release("uninstall", RELEASE, "--wait")
    for obj in objects:
        where = obj["metadata"].get("namespace")
        gone = crd_installed(
            "get",
            obj["kind"].lower(),
            obj["metadata"]["name"],
            *(["-n", where] if where else []),
            check=False,
        )
        assert gone.returncode != 0 and "NotFound" in gone.stderr, obj["metadata"]["name"]
    # Helm never deletes a chart's CRDs, so no policy goes with the operator.
    crd_installed("get", "crd", "sidecarpolicies.sidecars.dev")
    assert crd_installed.json("sidecarpolicy", name)["metadata"]["name"] == name


@pytest.mark.exclusive  # installs cluster-wide objects, and a webhook no pod answers
def test_install_without_the_webhook(release: Helm, crd_installed: Kubectl) -> None:
    release("install", RELEASE, str(CHART), *INSTALL, "--set", "webhook.enabled=false")
    objects = release.objects()
    _present(crd_installed, objects)
    _ready_pods(crd_installed, release.namespace, 2)
    assert "MutatingWebhookConfiguration" not in {obj["kind"] for obj in objects}
    services = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Service"]
    assert services == [f"{RELEASE}-metrics"]
    args = _args(objects)
    assert not [arg for arg in args if arg.startswith("--webhook")]
    roles = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Role"]
    assert roles == [f"{RELEASE}-history"], "no access to any Secret without the webhook"


SAMPLES = REPO / "manifests" / "samples"
DEMO_POLICIES = [
    "log-shipper",
    "statsd-exporter",
    "config-sync",
    "postgres-exporter",
    "vault-proxy",
]
# What `make demo` shows (README): each sample workload's containers once converged.
CONVERGED = {
    ("deployment", "checkout"): ["checkout", "fluent-bit"],
    ("deployment", "payments"): ["payments", "statsd-exporter"],
    ("deployment", "storefront"): ["storefront"],
    ("statefulset", "orders-db"): ["postgres", "postgres-exporter"],
}


def _sample_documents(policies: bool) -> str:
    documents = [
        doc
        for path in sorted(SAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and (doc["kind"] == "SidecarPolicy") == policies and doc["kind"] != "Namespace"
    ]
    return yaml.safe_dump_all(documents)


@pytest.mark.exclusive
def test_the_demo_samples_converge_under_the_chart_s_service_account(
    release: Helm, crd_installed: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    """What the chart grants is what the operator needs. On kwok its pods do not run, so the
    operator runs on the host with their ServiceAccount's token and the Deployment's own flags
    (the webhook aside: the chart's points at its in-cluster Service), in place of the session's
    operator."""
    release("install", RELEASE, str(CHART), *INSTALL, "--set", "webhook.enabled=false")
    args = [
        arg.replace("$(POD_NAMESPACE)", release.namespace)
        for arg in _args(release.objects())
        if not arg.startswith(("--liveness-port", "--metrics-port"))
    ]
    kubeconfig = service_account_kubeconfig(
        crd_installed, release.namespace, RELEASE, tmp_path / "kubeconfig"
    )
    charted = OperatorProcess(kubeconfig, tmp_path / "operator.log", *args)
    shop = crd_installed.in_namespace("demo-shop")
    operator.stop()
    charted.start()
    try:
        crd_installed("apply", "-f", str(SAMPLES / "00-namespace.yaml"))
        crd_installed.apply(_sample_documents(policies=False))
        crd_installed.apply(_sample_documents(policies=True))
        crd_installed(
            "wait",
            "--for=condition=Ready",
            *(f"sidecarpolicy/{name}" for name in DEMO_POLICIES),
            "--timeout=180s",
        )
        for (kind, name), containers in CONVERGED.items():
            spec = shop.json(kind, name)["spec"]["template"]["spec"]
            assert [c["name"] for c in spec["containers"]] == containers, name
        checkout = shop.json("deployment", "checkout")["spec"]["template"]["spec"]
        assert "demo-shop.checkout" in checkout["containers"][1]["args"]  # its own tag
        payments = shop.json("deployment", "payments")["spec"]["template"]["metadata"]
        assert payments["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9102",
        }
        storefront = shop.json("deployment", "storefront")["spec"]["template"]["spec"]
        assert [c["name"] for c in storefront["initContainers"]] == ["git-sync", "wait-for-db"]
        report = shop.json("cronjob", "nightly-report")["spec"]["jobTemplate"]["spec"]["template"]
        assert [c["name"] for c in report["spec"]["initContainers"]] == ["vault-proxy"]

        crd_installed("delete", "sidecarpolicy", *DEMO_POLICIES, "--timeout=120s")
        checkout = shop.json("deployment", "checkout")["spec"]["template"]["spec"]
        assert [c["name"] for c in checkout["containers"]] == ["checkout"]
        payments = shop.json("deployment", "payments")["spec"]["template"]["metadata"]
        assert "annotations" not in payments
    finally:
        crd_installed(
            "delete", "sidecarpolicy", *DEMO_POLICIES, "--ignore-not-found", "--wait=false"
        )
        crd_installed("delete", "namespace", "demo-shop", "--ignore-not-found", "--timeout=120s")
        charted.stop()
        operator.start()
        errors = refused(charted.log())
        assert errors == [], "\n".join(errors[:5])
