"""The tests' own calls to the API server over one kept connection per kubeconfig: the reads a
test polls with (`Kubectl.json`) and its fixtures' namespaces and clean-up. What a user types
(apply, edit, delete a policy, the plugin) stays kubectl.

Why not kubectl for these too: a kubectl process costs 0.07-0.14 s of CPU (Go's start-up, TLS,
printing) against 0.6 ms for a GET on a kept connection, and a `make test` made some 2900 of
them on two cores, most of them polls (docs/local-control-plane.md).

The kubeconfig loader and the connection pool are the kubernetes client's. Its DynamicClient
would resolve resource names too, but answers in wrappers of its own rather than the JSON kubectl
prints, and kubectl's arguments would still need reading: that, and discovery, is what is here."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes.client import Configuration
from kubernetes.client.rest import RESTClientObject
from kubernetes.config.kube_config import load_kube_config

# Aggregated discovery: every group's resources in one answer per root (Kubernetes 1.30+).
_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


class Unsupported(Exception):
    """The arguments ask for something only kubectl does; the caller runs kubectl instead."""


class NotFound(AssertionError):
    """A read or delete of an object (or a resource type) the API server does not have: an
    AssertionError, as kubectl's failure is to `tests.kube.run`."""


@dataclass(frozen=True)
class Resource:
    """One resource type as discovery names it."""

    group_version: str  # "v1" or "apps/v1"
    plural: str
    singular: str
    kind: str
    short_names: tuple[str, ...]
    namespaced: bool

    @property
    def group(self) -> str:
        return self.group_version.rpartition("/")[0]

    def answers_to(self, name: str, group: str) -> bool:
        """kubectl's resource-name matching: plural, singular, short name or kind, any case,
        with a group suffix (`widgets.example.com`) narrowing it."""
        if group and group != self.group:
            return False
        return name in (self.plural, self.singular, self.kind.lower(), *self.short_names)

    def path(self, namespace: str | None, name: str | None = None) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        scope = f"/namespaces/{quote(namespace)}" if self.namespaced and namespace else ""
        return f"{root}{scope}/{self.plural}" + (f"/{quote(name)}" if name else "")


@dataclass(frozen=True)
class Get:
    """A `kubectl get -o json` command line, parsed: the subset the tests use."""

    resource: str
    name: str | None
    namespace: str | None
    all_namespaces: bool
    query: dict[str, str]
    managed_fields: bool

    @classmethod
    def parse(cls, args: tuple[str, ...], namespace: str | None) -> Get:
        positional: list[str] = []
        query: dict[str, str] = {}
        all_namespaces = managed_fields = False
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg in ("-n", "--namespace", "-l", "--selector") and rest:
                value = rest.pop(0)
                if arg in ("-n", "--namespace"):
                    namespace = value
                else:
                    query["labelSelector"] = value
            elif arg.startswith("--namespace="):
                namespace = arg.partition("=")[2]
            elif arg.startswith(("--selector=", "-l=")):
                query["labelSelector"] = arg.partition("=")[2]
            elif arg.startswith("--field-selector="):
                query["fieldSelector"] = arg.partition("=")[2]
            elif arg in ("-A", "--all-namespaces"):
                all_namespaces = True
            elif arg == "--show-managed-fields":
                managed_fields = True
            elif arg.startswith("-"):
                raise Unsupported(arg)
            else:
                positional.append(arg)
        if len(positional) == 1 and "/" in positional[0]:
            positional = positional[0].split("/", 1)
        if not 1 <= len(positional) <= 2 or (all_namespaces and len(positional) == 2):
            raise Unsupported(" ".join(args))
        return cls(
            resource=positional[0].lower(),
            name=positional[1] if len(positional) == 2 else None,
            namespace=namespace,
            all_namespaces=all_namespaces,
            query=query,
            managed_fields=managed_fields,
        )


class Rest:
    """One kubeconfig's API server, on a pool of kept connections (thread-safe: a test's
    helper threads read beside it)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = Configuration()
        load_kube_config(config_file=str(kubeconfig), client_configuration=config)
        self._host = config.host
        self._pool: urllib3.PoolManager = RESTClientObject(config).pool_manager
        token = config.api_key.get("BearerToken")  # "Bearer …"; certificates are the pool's
        self._auth = {"Authorization": token} if token else {}
        self._resources: list[Resource] = []
        self._lock = threading.Lock()

    def get(self, args: tuple[str, ...], namespace: str | None) -> Any:
        """What `kubectl get -o json ARGS` prints: the object, or a `List` of them (each with
        its apiVersion and kind), managedFields left out unless asked for."""
        get = Get.parse(args, namespace)
        resource = self.resource(get.resource)
        scope = None if get.all_namespaces else (get.namespace or "default")
        answer = self.request("GET", resource.path(scope, get.name), query=get.query)
        if get.name:
            return _shown(answer, get.managed_fields)
        typed = {"apiVersion": resource.group_version, "kind": resource.kind}
        items = [_shown({**typed, **item}, get.managed_fields) for item in answer["items"] or []]
        return {
            "apiVersion": "v1",
            "kind": "List",
            "items": items,
            "metadata": {"resourceVersion": ""},
        }

    def create_namespace(self, name: str) -> None:
        self.request(
            "POST",
            "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def delete(self, resource: str, name: str, namespace: str | None = None) -> bool:
        """Delete without waiting; False if there was nothing to delete."""
        try:
            self.request("DELETE", self.resource(resource).path(namespace, name))
        except NotFound:
            return False
        return True

    def resource(self, name: str) -> Resource:
        plural, _, group = name.lower().partition(".")
        for refreshed in (False, True):
            with self._lock:
                if refreshed or not self._resources:
                    self._resources = self._discover()
                found = [r for r in self._resources if r.answers_to(plural, group)]
            if found:
                return found[0]
        raise NotFound(f'the server doesn\'t have a resource type "{name}"')

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        accept: str = "application/json",
    ) -> Any:
        url = f"{self._host}{path}" + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": accept, **self._auth}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        try:
            response = self._pool.request(method, url, body=data, headers=headers, timeout=30.0)
        except urllib3.exceptions.HTTPError as error:  # as kubectl's failure, to callers
            raise AssertionError(f"{method} {path}: {error}") from error
        answer = _decoded(response.data)
        if response.status == 404:
            raise NotFound(answer.get("message", path))
        if response.status >= 400:
            raise AssertionError(
                f"{method} {path} answered {response.status}: {answer.get('message', answer)}"
            )
        return answer

    def _discover(self) -> list[Resource]:
        # Core first, then the groups in the server's order: kubectl's order of preference when
        # two groups' resources share a name (`events`: v1 before events.k8s.io).
        found: list[Resource] = []
        for root in ("/api", "/apis"):
            for group in self.request("GET", root, accept=_DISCOVERY)["items"]:
                version = group["versions"][0]  # the preferred one
                prefix = group.get("metadata", {}).get("name", "")
                group_version = f"{prefix}/{version['version']}" if prefix else version["version"]
                for r in version.get("resources") or []:
                    found.append(
                        Resource(
                            group_version=group_version,
                            plural=r["resource"],
                            singular=r.get("singularResource", ""),
                            kind=r["responseKind"]["kind"],
                            short_names=tuple(r.get("shortNames") or ()),
                            namespaced=r["scope"] == "Namespaced",
                        )
                    )
        return found


def _decoded(data: bytes) -> Any:
    """The answer's JSON; an error's plain text (a proxy's, a server starting) as its message."""
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {"message": data.decode(errors="replace")}


def _shown(obj: dict[str, Any], managed_fields: bool) -> dict[str, Any]:
    if managed_fields or "managedFields" not in obj.get("metadata", {}):
        return obj
    metadata = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    return {**obj, "metadata": metadata}


_clients: dict[tuple[Path, float], Rest] = {}
_clients_lock = threading.Lock()


def client(kubeconfig: Path) -> Rest:
    """This process's client for the kubeconfig as it is now (a cluster brought up again
    writes a new one)."""
    key = (kubeconfig, kubeconfig.stat().st_mtime)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Rest(kubeconfig)
        return _clients[key]
