"""The kubeconfig read without the kubernetes package (`kube.connection`): each shape it reads
connects as the kubernetes package's loader would have it, and every other shape is left to that
loader."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.aio import config
from kubernetes.aio.client import Configuration

from sidecar_operator.kube.connection import Connection, from_kubeconfig
from sidecar_operator.kube.webhook_tls import generate

PEM = generate("api", "default")  # a CA, and a certificate and key it signed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _kubeconfig(directory: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path = directory / "config"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "https://elsewhere"}},
            {"name": "here", "cluster": cluster},
        ],
        "users": [{"name": "here", "user": user}],
        "contexts": [{"name": "here", "context": {"cluster": "here", "user": "here"}}],
        "current-context": "here",
    }
    path.write_text(yaml.safe_dump(document))
    return path


def _shapes(directory: Path) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each shape read here: the cluster and the user, files named relative to the kubeconfig."""
    for name, data in PEM.items():
        (directory / name).write_bytes(data)
    (directory / "token").write_text("from-a-file\n")
    server = "https://127.0.0.1:6443/"
    return {
        "certificate data": (
            {"server": server, "certificate-authority-data": _b64(PEM["ca.crt"])},
            {
                "client-certificate-data": _b64(PEM["tls.crt"]),
                "client-key-data": _b64(PEM["tls.key"]),
            },
        ),
        "certificate files": (
            {"server": server, "certificate-authority": "ca.crt"},
            {"client-certificate": "tls.crt", "client-key": "tls.key"},
        ),
        "token": ({"server": server, "certificate-authority": "ca.crt"}, {"token": "abc"}),
        "token file": (
            {"server": server, "insecure-skip-tls-verify": True},
            {"tokenFile": "token"},
        ),
        "proxy and server name": (
            {
                "server": server,
                "certificate-authority-data": _b64(PEM["ca.crt"]),
                "proxy-url": "http://proxy:3128",
                "tls-server-name": "api.internal",
            },
            {"token": "abc"},
        ),
    }


@pytest.mark.parametrize(
    "shape",
    ["certificate data", "certificate files", "token", "token file", "proxy and server name"],
)
async def test_a_kubeconfig_read_here_connects_as_the_kubernetes_package_would(
    tmp_path: Path, shape: str
) -> None:
    cluster, user = _shapes(tmp_path)[shape]
    path = _kubeconfig(tmp_path, cluster, user)
    ours = from_kubeconfig({"KUBECONFIG": str(path)})
    assert isinstance(ours, Connection)
    theirs = Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=theirs)  # type: ignore[no-untyped-call]

    assert ours.host == theirs.host == "https://127.0.0.1:6443"
    expected = await theirs.get_api_key_with_prefix("BearerToken", alias="authorization")
    assert await ours.authorization() == (expected.strip() if expected else None)
    assert (ours.proxy, ours.server_name) == (theirs.proxy, theirs.tls_server_name)
    verifies = ssl.CERT_REQUIRED if theirs.verify_ssl else ssl.CERT_NONE
    assert ours.ssl.verify_mode == verifies
    if theirs.ssl_ca_cert:  # the CA trusted: the one the kubeconfig names, not the system's
        trusted = {c["serialNumber"] for c in ours.ssl.get_ca_certs()}
        expected_ca = ssl.create_default_context(cafile=theirs.ssl_ca_cert).get_ca_certs()
        assert trusted == {c["serialNumber"] for c in expected_ca}
    if shape == "token file":
        assert await ours.authorization() == "Bearer from-a-file"


@pytest.mark.parametrize(
    "user",
    [
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "login"}},
        {"auth-provider": {"name": "oidc", "config": {}}},
        {"username": "admin", "password": "secret"},
    ],
    ids=["exec", "auth-provider", "basic"],
)
def test_credentials_that_need_renewing_or_are_unknown_go_to_the_kubernetes_package(
    tmp_path: Path, user: dict[str, Any]
) -> None:
    path = _kubeconfig(tmp_path, {"server": "https://127.0.0.1:6443"}, user)
    assert from_kubeconfig({"KUBECONFIG": str(path)}) is None


def test_what_it_does_not_read_goes_to_the_kubernetes_package(tmp_path: Path) -> None:
    cluster, user = _shapes(tmp_path)["token"]
    path = _kubeconfig(tmp_path, cluster, user)
    assert from_kubeconfig({"KUBECONFIG": str(path)}) is not None  # the shape itself is read
    assert from_kubeconfig({"KUBECONFIG": f"{path}:{path}"}) is None  # several files to merge
    assert from_kubeconfig({"KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    assert from_kubeconfig({"KUBECONFIG": str(tmp_path / "absent")}) is None
    extended = _kubeconfig(tmp_path, {**cluster, "extensions": [{"name": "x"}]}, user)
    assert from_kubeconfig({"KUBECONFIG": str(extended)}) is None
    (tmp_path / "config").write_text("current-context: nowhere\ncontexts: []\n")
    assert from_kubeconfig({"KUBECONFIG": str(path)}) is None


def test_connecting_with_a_kubeconfig_read_here_does_not_import_the_kubernetes_package(
    tmp_path: Path,
) -> None:
    """What it is for: `kubectl sidecars` and `preview` spent a second of CPU importing it."""
    cluster, user = _shapes(tmp_path)["certificate data"]
    path = _kubeconfig(tmp_path, cluster, user)
    script = (
        "import asyncio, sys\n"
        "from sidecar_operator.kube.client import KubeApi\n"
        "async def main():\n"
        "    api = await KubeApi.connect()\n"
        "    await api.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"KUBECONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
