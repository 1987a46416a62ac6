"""The corpus of bad and hostile input (`tests/chaos/corpus/*.yaml`, one case per file), and the
trial that runs it against the operator.

Each case sets up apps (Deployments) in a namespace of its own, applies a policy, and expects one
of two outcomes, both where a user would look: the API server refuses the policy at
`kubectl apply` with a message saying why, or the operator takes it and reports, on the policy's
status and as Events, what it could not do. Either way the audit afterwards is the same: an app
the policy was not to change equals its snapshot from before the policy; an app it was to
inject carries exactly what the policy adds and nothing of its own changed; and once the policy
is deleted every app equals its snapshot again.

In a case, `$NAMESPACE` stands for the case's namespace, `$CASE` for a name unique to the run,
`$OPERATOR_NAMESPACE` for the operator's own namespace, and `$REVISION` for the revision the
policy will have (as if copied from a workload that carried it).
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sidecar_operator.api.models import Policy
from sidecar_operator.core.workloads import rolled_out
from tests.chaos import audit
from tests.kube import Kubectl

CORPUS = Path(__file__).parent / "corpus"
LABEL = "corpus"
CASE_TIMEOUT = 120.0
UNSERVED_SECONDS = 10.0
REMOVAL_TIMEOUT = "120s"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class App(_Strict):
    """A Deployment made before the policy, labelled `corpus: "yes"` unless it says otherwise."""

    name: str
    namespace: str = "$NAMESPACE"
    labels: dict[str, str] = Field(default_factory=lambda: {LABEL: "yes"})
    annotations: dict[str, str] = Field(default_factory=dict)
    pod: dict[str, Any] = Field(
        default_factory=lambda: {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    )
    paused: bool = Field(default=False, description="Paused by its owner (`rollout pause`).")
    pod_labels: dict[str, str] = Field(
        default_factory=dict, alias="podLabels", description="Besides `app: <name>`."
    )
    pod_annotations: dict[str, str] = Field(default_factory=dict, alias="podAnnotations")


class Action(_Strict):
    """Done right after the policy is applied, while the operator is writing."""

    delete_apps: list[str] = Field(default_factory=list, alias="deleteApps")
    delete_namespace: bool = Field(default=False, alias="deleteNamespace")


class Expect(_Strict):
    rejected: str | None = Field(
        default=None, description="The policy is refused at apply; a substring of the message."
    )
    injected: list[str] = Field(default_factory=list, description="Apps that get the sidecars.")
    conflicts: dict[str, str] = Field(
        default_factory=dict,
        description="Apps skipped, each with a substring of its SidecarConflict Warning Event.",
    )
    policy_events: list[str] = Field(
        default_factory=list, alias="policyEvents", description="Reasons of Events on the policy."
    )
    owner_paused: list[str] = Field(
        default_factory=list,
        alias="ownerPaused",
        description="Apps their owners paused: written, not rolled out, named in Progressing.",
    )
    warnings: dict[str, str] = Field(
        default_factory=dict, description="Apps each with the reason of a Warning Event on it."
    )
    matched: int | None = Field(
        default=None,
        description="status.matchedWorkloads, when not injected + conflicts + ownerPaused.",
    )
    unserved: bool = Field(
        default=False,
        description="No operator serves the policy (another shard's): no finalizer, no status, "
        "nothing written.",
    )


class Case(_Strict):
    what: str
    namespace_labels: dict[str, str] = Field(default_factory=dict, alias="namespaceLabels")
    apps: list[App] = Field(default_factory=lambda: [App(name="web")])
    objects: list[dict[str, Any]] = Field(
        default_factory=list, description="Cluster objects made before the policy, then deleted."
    )
    refuses: str | None = Field(
        default=None,
        description="An app an admission policy among `objects` refuses to change: the run "
        "waits until a dry-run write to it is refused before it applies the policy.",
    )
    policy_name: str = Field(default="$CASE", alias="policyName")
    policy_labels: dict[str, str] = Field(default_factory=dict, alias="policyLabels")
    policy: dict[str, Any] | None = Field(
        default=None,
        description="The spec; selector and namespaceSelector default to the case's apps.",
    )
    raw: str | None = Field(default=None, description="A manifest applied exactly as written.")
    inflate_kib: int = Field(
        default=0, alias="inflateKiB", description="Env added to the first sidecar, in KiB."
    )
    during: Action = Field(default_factory=Action)
    expect: Expect


def load(directory: Path = CORPUS) -> dict[str, Case]:
    return {
        path.stem: Case.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        for path in sorted(directory.glob("*.yaml"))
    }


def _substitute(value: Any, names: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, name in names.items():
            value = value.replace(placeholder, name)
        return value
    if isinstance(value, list):
        return [_substitute(item, names) for item in value]
    if isinstance(value, dict):
        return {_substitute(k, names): _substitute(v, names) for k, v in value.items()}
    return value


def _deployment(app: App, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": app.name,
            "namespace": namespace,
            "labels": app.labels,
            "annotations": app.annotations,
        },
        "spec": {
            "replicas": 1,
            "paused": app.paused,
            "selector": {"matchLabels": {"app": app.name}},
            "template": {
                "metadata": {
                    "labels": {"app": app.name, **app.pod_labels},
                    **({"annotations": app.pod_annotations} if app.pod_annotations else {}),
                },
                "spec": app.pod,
            },
        },
    }


class Run:
    """One case, run once: set up, apply, wait for the outcome, audit, delete, audit again."""

    def __init__(self, name: str, case: Case, admin: Kubectl, operator_namespace: str) -> None:
        suffix = uuid.uuid4().hex[:5]
        self.name = name
        self.namespace = f"corpus-{suffix}"
        self.names = {
            "$NAMESPACE": self.namespace,
            "$CASE": f"corpus-{name[:40]}-{suffix}".lower(),
            "$OPERATOR_NAMESPACE": operator_namespace,
        }
        self.case: Case = Case.model_validate(
            _substitute(case.model_dump(by_alias=True), self.names)
        )
        self.admin = admin
        self.policy = self.case.policy_name
        self.snapshot: dict[tuple[str, str], audit.Template] = {}
        self.pod_metadata: dict[tuple[str, str], audit.PodMetadata] = {}
        self.annotations: dict[tuple[str, str], str | None] = {}  # the policy's, copied in
        self.gone: set[str] = set()

    def __call__(self) -> list[str]:
        labels = {**self.case.namespace_labels, LABEL: "yes"}
        self.admin.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": self.namespace, "labels": labels},
                }
            )
        )
        for obj in self.case.objects:
            self.admin.apply(yaml.safe_dump(obj))
        try:
            return self._run()
        finally:
            for obj in self.case.objects:
                kind, name = obj["kind"], obj["metadata"]["name"]
                self.admin("delete", kind, name, "--ignore-not-found", "--wait=false")
            self.admin("delete", "sidecarpolicy", self.policy, "--ignore-not-found", "--wait=false")
            for app in self.case.apps:
                if app.namespace != self.namespace:
                    self.admin.in_namespace(app.namespace)(
                        "delete", "deployment", app.name, "--ignore-not-found"
                    )
            self.admin("delete", "namespace", self.namespace, "--wait=false", check=False)

    def _run(self) -> list[str]:
        if "$REVISION" in json.dumps(self.case.model_dump(by_alias=True)):
            revision = self._revision()
            self.case = Case.model_validate(
                _substitute(self.case.model_dump(by_alias=True), {"$REVISION": revision})
            )
        for app in self.case.apps:
            self.admin.apply(yaml.safe_dump(_deployment(app, app.namespace)))
        for app in self.case.apps:
            deployment = self._get(app)
            assert deployment is not None, f"{app.name} was not created"
            self.snapshot[(app.namespace, app.name)] = audit.template(deployment)
            self.pod_metadata[(app.namespace, app.name)] = audit.pod_metadata(deployment)
            self.annotations[(app.namespace, app.name)] = audit.carrying(deployment, self.policy)
        if self.case.refuses:
            self._wait_refusing(self.case.refuses)
        applied = self._apply_policy()
        self._act()
        expect = self.case.expect
        if expect.rejected is not None:
            return self._rejected(applied, expect.rejected)
        if applied.returncode != 0:
            return [f"refused at apply: {applied.stderr.strip()}"]
        found = self._unserved() if expect.unserved else self._accepted(expect)
        deleted = self.admin(
            "delete", "sidecarpolicy", self.policy, f"--timeout={REMOVAL_TIMEOUT}", check=False
        )
        if deleted.returncode != 0:
            found.append(f"policy deletion: {deleted.stderr.strip()}")
        return found + self._unchanged(self._apps(), "after the policy was deleted")

    def _get(self, app: App) -> dict[str, Any] | None:
        return self.admin.in_namespace(app.namespace).find("deployment", app.name)

    def _apps(self, names: Collection[str] | None = None) -> list[App]:
        return [
            app
            for app in self.case.apps
            if app.name not in self.gone and (names is None or app.name in names)
        ]

    def _revision(self) -> str:
        """The revision the policy will have: the CRD's defaults shape what it is hashed from."""
        stored = self._apply_policy("--dry-run=server", "-o", "json")
        return Policy.from_object(json.loads(stored.stdout)).spec.revision

    def _apply_policy(self, *options: str) -> subprocess.CompletedProcess[str]:
        if self.case.raw is not None:
            manifest = self.case.raw
        else:
            spec = dict(self.case.policy or {})
            spec.setdefault("selector", {"matchLabels": {LABEL: "yes"}})
            if "namespaceSelector" not in spec:
                spec["namespaceSelector"] = {
                    "matchLabels": {"kubernetes.io/metadata.name": self.namespace}
                }
            elif spec["namespaceSelector"] is None:  # the case is about having none
                del spec["namespaceSelector"]
            if self.case.inflate_kib:
                first = dict(spec["containers"][0])
                first["env"] = [
                    {"name": f"FILLER_{index}", "value": "x" * 1000}
                    for index in range(self.case.inflate_kib)
                ]
                spec["containers"] = [first, *spec["containers"][1:]]
            manifest = yaml.safe_dump(
                {
                    "apiVersion": "sidecars.dev/v1alpha1",
                    "kind": "SidecarPolicy",
                    "metadata": {"name": self.policy, "labels": self.case.policy_labels},
                    "spec": spec,
                },
                allow_unicode=True,
            )
        return self.admin(
            "apply", "--server-side", *options, "-f", "-", input=manifest, check=False
        )

    def _act(self) -> None:
        for name in self.case.during.delete_apps:
            self.admin.in_namespace(self.namespace)("delete", "deployment", name, "--wait=false")
            self.gone.add(name)
        if self.case.during.delete_namespace:
            self.admin("delete", "namespace", self.namespace, "--wait=false")
            self.gone.update(a.name for a in self.case.apps if a.namespace == self.namespace)

    def _wait_refusing(self, app_name: str) -> None:
        """An admission policy takes a moment to be in force: wait until it refuses a dry run
        of the policy's first container being added."""
        container = (self.case.policy or {})["containers"][0]
        patch = json.dumps({"spec": {"template": {"spec": {"containers": [container]}}}})
        kubectl = self.admin.in_namespace(self.namespace)
        _until(
            lambda: (
                kubectl(
                    "patch", "deployment", app_name, "--dry-run=server", "-p", patch, check=False
                ).returncode
                != 0
            ),
            what="the admission policy in force",
        )

    def _rejected(self, applied: subprocess.CompletedProcess[str], message: str) -> list[str]:
        found = []
        if applied.returncode == 0:
            found.append("the policy was accepted")
        elif message not in applied.stderr:
            found.append(f"refused, but the message lacks {message!r}: {applied.stderr.strip()}")
        time.sleep(2.0)  # the operator would have acted on a stored policy by now
        if self.admin.find("sidecarpolicy", self.policy) is not None:
            found.append("the refused policy exists")
        return found + self._unchanged(self._apps(), "after the refused policy")

    def _unserved(self) -> list[str]:
        time.sleep(UNSERVED_SECONDS)  # what an operator serving it would have done by now
        policy = self.admin.find("sidecarpolicy", self.policy) or {}
        found = (
            [f"an unserved policy has a status: {policy['status']}"] if "status" in policy else []
        )
        if finalizers := policy.get("metadata", {}).get("finalizers"):
            found.append(f"an unserved policy has finalizers: {finalizers}")
        return found + self._unchanged(self._apps(), "while no operator serves the policy")

    def _status(self) -> dict[str, Any]:
        policy = self.admin.find("sidecarpolicy", self.policy)
        if policy is None:
            return {}
        status = dict(policy.get("status") or {})
        status["_generation"] = policy["metadata"]["generation"]
        status["_spec"] = policy["spec"]
        return status

    def _settled(self, expect: Expect) -> dict[str, Any] | None:
        status = self._status()
        matched = len(expect.injected) + len(expect.conflicts) + len(expect.owner_paused)
        if expect.matched is not None:
            matched = expect.matched
        done = (
            status.get("observedGeneration") == status.get("_generation")
            and status.get("matchedWorkloads") == matched
            and status.get("conflicts") == len(expect.conflicts)
            and status.get("readyWorkloads") == len(expect.injected)
            and status.get("updatedWorkloads") == len(expect.injected) + len(expect.owner_paused)
        )
        return status if done else None

    def _accepted(self, expect: Expect) -> list[str]:
        status = _until(lambda: self._settled(expect), what="the expected outcome", fail=False)
        if not status:
            counts = {k: v for k, v in self._status().items() if not k.startswith("_")}
            return [f"never settled as expected: {counts}"]
        found = []
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        degraded = conditions.get("Degraded", {}).get("status")
        if degraded != ("True" if expect.conflicts else "False"):
            found.append(f"Degraded is {degraded!r}")
        if conditions.get("Ready", {}).get("status") != (
            "False" if expect.owner_paused else "True"
        ):
            found.append(f"Ready is {conditions.get('Ready')}")
        progressing = conditions.get("Progressing", {}).get("message", "")
        for app_name in expect.owner_paused:
            if f"/{app_name}" not in progressing or "paused by their owners" not in progressing:
                found.append(f"Progressing does not name {app_name} as paused: {progressing!r}")
        for app_name, message in expect.conflicts.items():
            found += self._event(app_name, "SidecarConflict", message)
        for app_name, reason in expect.warnings.items():
            found += self._event(app_name, reason, "")
        for reason in expect.policy_events:
            if not _until(functools.partial(self._policy_event, reason), fail=False):
                found.append(f"no {reason} Event on the policy")
        written = [*expect.injected, *expect.owner_paused]
        for app in self._apps(written):
            deployment = self._get(app)
            if deployment is None:
                found.append(f"{app.name} is gone")
                continue
            snapshot = self.snapshot[(app.namespace, app.name)]
            found += audit.injected(
                deployment, snapshot, self.policy, status["_spec"], status.get("revision", "")
            )
            found += audit.metadata_injected(
                deployment, self.pod_metadata[(app.namespace, app.name)], status["_spec"]
            )
            if rolled_out(deployment) == (app.name in expect.owner_paused):
                found.append(f"{app.name} is {'' if rolled_out(deployment) else 'not '}rolled out")
        left = [a for a in self._apps() if a.name not in written]
        return found + self._unchanged(left, "while the policy exists")

    def _event(self, app_name: str, reason: str, message: str) -> list[str]:
        """An Event of this reason on the app, saying `message` (a substring)."""
        selector = f"involvedObject.kind=Deployment,involvedObject.name={app_name}"

        def seen() -> list[dict[str, Any]]:
            events = self.admin.in_namespace(self.namespace).json(
                "events", f"--field-selector={selector}"
            )["items"]
            return [e for e in events if e["reason"] == reason]

        events = _until(seen, what=f"a {reason} Event on {app_name}", fail=False)
        if not events:
            return [f"no {reason} Event on {app_name}"]
        if not any(message in e["message"] for e in events):
            return [f"{app_name}'s Event lacks {message!r}: {events[0]['message']}"]
        return []

    def _policy_event(self, reason: str) -> bool:
        selector = f"involvedObject.kind=SidecarPolicy,involvedObject.name={self.policy}"
        events = self.admin.json("events", "-A", f"--field-selector={selector}")["items"]
        return any(e["reason"] == reason for e in events)

    def _unchanged(self, apps: list[App], when: str) -> list[str]:
        found = []
        for app in apps:
            deployment = self._get(app)
            if deployment is None:
                continue  # deleted by the case, or with its namespace
            key = (app.namespace, app.name)
            removed = audit.removed(
                deployment, self.snapshot[key], self.policy, self.annotations[key]
            ) + audit.metadata_removed(deployment, self.pod_metadata[key])
            found += [f"{when}: {d}" for d in removed]
        return found


def _until(
    check: Callable[[], Any], *, what: str = "", timeout: float = CASE_TIMEOUT, fail: bool = True
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    if fail:
        raise AssertionError(f"timed out waiting for {what}")
    return None


Outcome = Literal["rejected", "reported", "injected", "unserved"]


def outcome(case: Case) -> Outcome:
    if case.expect.rejected is not None:
        return "rejected"
    if case.expect.unserved:
        return "unserved"
    expect = case.expect
    reported = expect.conflicts or expect.policy_events or expect.warnings or expect.owner_paused
    return "reported" if reported else "injected"


Result = tuple[str, Case, list[str], float]


def run(
    admin: Kubectl, operator_namespace: str, *, workers: int = 4, only: tuple[str, ...] = ()
) -> list[Result]:
    """Every case (or those whose file names start or are one of `only`), a few at a time:
    each has its own namespace, policy and apps. A result is the case's name, the case, its
    defects and its seconds."""
    cases = {
        name: case for name, case in load().items() if not only or any(o in name for o in only)
    }

    def one(item: tuple[str, Case]) -> Result:
        name, case = item
        started = time.monotonic()
        try:
            defects = Run(name, case, admin, operator_namespace)()
        except Exception as error:  # a case that cannot run is a finding, not a crash
            defects = [f"the case failed to run: {error}"]
        return name, case, defects, round(time.monotonic() - started, 1)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, cases.items()))
