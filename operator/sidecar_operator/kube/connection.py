"""Where the API server is and how to be let in: the pod's service account in a cluster,
elsewhere the kubeconfig's current context.

The common kubeconfig shapes (a client certificate, a bearer token or token file, inline or in
files) are read here, without the kubernetes package: importing it costs a second of CPU, most of
what a `kubectl sidecars` call or a `preview` spent starting. Everything else (the service
account, whose token is rotated; credentials an exec plugin or auth provider renews; several
kubeconfig files to merge; keys this does not know) is the kubernetes package's loaders' to read
and keep fresh, so a shape read here is one that needs no renewing."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The keys a context's cluster and user may have for it to be read here; any other sends it to
# the kubernetes package (`exec`, `auth-provider`, `username`, `extensions`...).
CLUSTER_KEYS = frozenset(
    {
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "proxy-url",
    }
)
USER_KEYS = frozenset(
    {
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "token",
        "tokenFile",
    }
)
Refresher = Coroutine[Any, Any, None]


class NotConfigured(Exception):
    """Neither in a cluster nor a usable kubeconfig: what a command says before exiting."""


async def _anonymous() -> str | None:
    return None


@dataclass(frozen=True)
class Connection:
    """What every request needs: the server's URL, the TLS context (its CA, our client
    certificate), the `Authorization` header's value (asked for each request: the kubernetes
    package's loaders renew it), a proxy and the name the server's certificate carries."""

    host: str
    ssl: ssl.SSLContext
    authorization: Callable[[], Awaitable[str | None]] = _anonymous
    proxy: str | None = None
    server_name: str | None = None


def _tls(
    *,
    ca_file: str | None = None,
    ca_data: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """The one TLS context of both readers: the CA trusted (the system's when none is named),
    our client certificate, or no verification at all."""
    context = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def find() -> tuple[Connection, Refresher | None]:
    """The connection, and a coroutine to run beside it that keeps its credentials fresh, when
    they need it. Raises NotConfigured."""
    found = from_kubeconfig(os.environ)
    if found is not None:
        return found, None
    return await _by_kubernetes()


def from_kubeconfig(environ: Mapping[str, str]) -> Connection | None:
    """The kubeconfig's current context when it is one of the shapes read here (the module's
    docstring); None for the kubernetes package to read (and to say what is wrong with it)."""
    if "KUBERNETES_SERVICE_HOST" in environ:  # in a pod: its service account first, as kubectl
        return None
    location = environ.get("KUBECONFIG", "~/.kube/config")
    if not location or os.pathsep in location:  # several files are merged: not here
        return None
    path = Path(location).expanduser()
    try:
        document = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        context = _named(document["contexts"], document["current-context"])["context"]
        cluster = _named(document["clusters"], context["cluster"])["cluster"]
        user = _named(document["users"], context["user"]).get("user") or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(cluster, dict) or not isinstance(user, dict):
        return None
    if not set(cluster) <= CLUSTER_KEYS or not set(user) <= USER_KEYS or "server" not in cluster:
        return None
    return _connection(cluster, user, path.parent)


def _named(entries: Any, name: Any) -> dict[str, Any]:
    """The entry of a kubeconfig list (`clusters`, `users`, `contexts`) called `name`."""
    for entry in entries:
        if entry.get("name") == name:
            return dict(entry)
    raise KeyError(name)


def _connection(cluster: dict[str, Any], user: dict[str, Any], base: Path) -> Connection | None:
    def data(entry: dict[str, Any], key: str) -> bytes | None:
        """`key-data` (base64) or the file `key` names, relative to the kubeconfig."""
        if inline := entry.get(f"{key}-data"):
            return base64.b64decode(inline)
        return (base / entry[key]).read_bytes() if entry.get(key) else None

    try:
        ca = data(cluster, "certificate-authority")
        certificate, key = data(user, "client-certificate"), data(user, "client-key")
        token = (base / user["tokenFile"]).read_text() if "tokenFile" in user else user.get("token")
        with tempfile.TemporaryDirectory() as directory:
            # ssl loads a client certificate only from files; read in at once, then gone.
            cert_file = key_file = None
            if certificate is not None:
                cert_file = os.path.join(directory, "cert")
                Path(cert_file).write_bytes(certificate)
            if key is not None:
                key_file = os.path.join(directory, "key")
                Path(key_file).write_bytes(key)
            context = _tls(
                ca_data=ca.decode() if ca is not None else None,
                cert_file=cert_file,
                key_file=key_file,
                verify=not cluster.get("insecure-skip-tls-verify", False),
            )
    except (OSError, ValueError, ssl.SSLError):  # the kubernetes package says what is wrong
        return None
    bearer = f"Bearer {token.strip()}" if token else None

    async def authorization() -> str | None:
        return bearer

    return Connection(
        host=str(cluster["server"]).rstrip("/"),
        ssl=context,
        authorization=authorization,
        proxy=cluster.get("proxy-url"),
        server_name=cluster.get("tls-server-name"),
    )


async def _by_kubernetes() -> tuple[Connection, Refresher | None]:
    # Here, not at the top: a second of CPU to import, for what `from_kubeconfig` leaves.
    from kubernetes.aio import config
    from kubernetes.aio.client import Configuration

    configuration = Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        loader = None
    except config.ConfigException:
        try:
            loader = await config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as error:
            raise NotConfigured(f"no cluster to talk to: {error}") from None

    async def authorization() -> str | None:
        # Asked each time: the in-cluster loader's hook reads a rotated token again.
        token: str | None = await configuration.get_api_key_with_prefix(
            "BearerToken", alias="authorization"
        )
        return token

    connection = Connection(
        host=configuration.host,
        ssl=_tls(
            ca_file=configuration.ssl_ca_cert,
            cert_file=configuration.cert_file,
            key_file=configuration.key_file,
            verify=configuration.verify_ssl,
        ),
        authorization=authorization,
        proxy=configuration.proxy,
        server_name=configuration.tls_server_name,
    )
    # An exec plugin's token renewed before it expires (the loader's task; None otherwise).
    refresher = None if loader is None else config.refresh_token(loader, configuration)  # type: ignore[no-untyped-call]
    return connection, refresher
