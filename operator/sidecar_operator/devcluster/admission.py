"""Admission on a local cluster: the operator runs on the host and the API server calls it at
https://localhost. The API server's own serving certificate names localhost and the cluster's CA
signed it, so the operator serves with that pair; the webhook configuration is the shipped one
(`manifests/webhook.yaml`), pointed at the host. `make demo`, the tests and the bench share it.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import yaml

from sidecar_operator.devcluster.cluster import Cluster


def certs(cluster: Cluster) -> Path:
    """The serving certificate, its key and the CA, laid out as a mounted TLS Secret is (what
    `run --webhook-certs` reads)."""
    directory = cluster.directory / "webhook-certs"
    directory.mkdir(exist_ok=True)
    pki = cluster.pki
    for source, target in (
        (pki.serving_cert, "tls.crt"),
        (pki.serving_key, "tls.key"),
        (pki.ca_cert, "ca.crt"),
    ):
        shutil.copy(source, directory / target)
    return directory


def configuration(
    cluster: Cluster,
    manifest: Path,
    *,
    port: int,
    name: str | None = None,
    namespace_selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The MutatingWebhookConfiguration of `manifest`, calling the operator on the host's
    `port`; renamed and narrowed to other namespaces when asked (the tests admit only theirs)."""
    document = yaml.safe_load(manifest.read_text())
    if name is not None:
        document["metadata"]["name"] = name
    ca = base64.b64encode(cluster.pki.ca_cert.read_bytes()).decode()
    for webhook in document["webhooks"]:
        path = webhook["clientConfig"]["service"]["path"]
        webhook["clientConfig"] = {"url": f"https://localhost:{port}{path}", "caBundle": ca}
        if namespace_selector is not None:
            webhook["namespaceSelector"] = namespace_selector
    return dict(document)
