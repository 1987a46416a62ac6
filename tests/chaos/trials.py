"""The chaos trials: each drives the operator through a rollout while something goes wrong,
then audits the cluster. A trial returns rows for the report; a defect is a sentence in a row.
"""

from __future__ import annotations

import functools
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sidecar_operator.core.workloads import pod_spec, rolled_out
from tests.chaos import audit, workloads
from tests.conftest import OperatorProcess
from tests.kube import SIDECAR_OPERATOR, Kubectl, eventually
from tests.timeline import Timeline

T = TypeVar("T")

IMAGES = ("fluent/fluent-bit:3.1.9", "fluent/fluent-bit:3.2.0", "fluent/fluent-bit:3.2.1")
SETTLE_TIMEOUT = 300.0


@dataclass
class Row:
    trial: str
    phase: str
    faults: str = ""
    seconds: float = 0.0
    defects: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scale:
    """How much each trial does: `make chaos`'s full run, or the smoke that `make test` runs (each
    trial once, small, so that a broken harness fails CI)."""

    size: int = 30  # Deployments per trial
    cases: tuple[str, ...] = ()  # corpus cases whose file names start so; () for all
    race_seconds: float = 40.0
    outages: tuple[str, ...] = ("kube-apiserver", "etcd")
    down_for: float = 20.0
    kills: int = 5  # of the active replica
    # SIGKILLs per phase of the lone replica; None: until the phase settles. The smoke runs
    # under `make test`'s load, where a restarted operator can take longer to get work done
    # than the next kill leaves it: one phase of the smoke took 319 s and 63 SIGKILLs.
    kills_per_phase: int | None = None
    kill_every: tuple[float, float] = (1.0, 5.0)  # seconds between SIGKILLs of the lone replica


# kube-apiserver is left out: after it returns, the controllers take a minute to move again.
SMOKE = Scale(
    size=6,
    cases=("28-", "50-", "59-", "60-", "61-", "62-", "63-"),
    race_seconds=10.0,
    outages=("etcd",),
    down_for=5.0,
    kills=1,
    kills_per_phase=2,
    kill_every=(4.0, 8.0),
)


@dataclass
class Setting:
    """One trial's namespace, apps, snapshot of their templates, policy and timeline."""

    admin: Kubectl
    cluster: str
    workdir: Path
    scale: Scale
    rng: random.Random
    namespace: str = ""
    policy: str = ""
    snapshot: dict[str, audit.Template] = field(default_factory=dict)
    pod_snapshot: dict[str, audit.PodMetadata] = field(default_factory=dict)
    pod_metadata: dict[str, Any] | None = None  # the policy's `podMetadata`, if any

    def start(self, trial: str, pod_metadata: dict[str, Any] | None = None) -> Kubectl:
        self.namespace = f"chaos-{trial}-{uuid.uuid4().hex[:5]}"
        self.policy = f"chaos-{trial}-{uuid.uuid4().hex[:5]}"
        self.pod_metadata = pod_metadata
        self.admin("create", "namespace", self.namespace)
        kubectl = self.admin.in_namespace(self.namespace)
        size = self.scale.size
        kubectl.apply(yaml.safe_dump_all([workloads.deployment(i) for i in range(size)]))
        for index in range(size):
            kubectl("rollout", "status", f"deployment/app-{index:02d}", "--timeout=180s")
        deployments = self.workloads()
        self.snapshot = {d["metadata"]["name"]: audit.template(d) for d in deployments}
        self.pod_snapshot = {d["metadata"]["name"]: audit.pod_metadata(d) for d in deployments}
        return kubectl

    def workloads(self) -> list[dict[str, Any]]:
        items = self.admin.in_namespace(self.namespace).json("deployments")["items"]
        return list(items)

    def apply_policy(self, image: str, steps: list[dict[str, Any]] | None = None) -> None:
        spec = workloads.policy_spec(self.namespace, image)
        if steps:
            spec["updateStrategy"]["steps"] = steps
        if self.pod_metadata:
            spec["podMetadata"] = self.pod_metadata
        body = {
            "apiVersion": "sidecars.dev/v1alpha1",
            "kind": "SidecarPolicy",
            "metadata": {"name": self.policy},
            "spec": spec,
        }
        self.admin.apply(yaml.safe_dump(body))

    def policy_object(self) -> dict[str, Any] | None:
        return self.admin.find("sidecarpolicy", self.policy)

    def matched(self) -> set[str]:
        return _matched(self.workloads())

    def settled(self, image: str) -> bool:
        """Every matched Deployment carries the policy's revision with this image, rolled out,
        the status says so, and the cluster read after it agrees. The status alone can be a
        moment old (counts are written at most every STATUS_INTERVAL): read just after a racer's
        last write, it still said "all ready" of a Deployment rolling out again, and the audit
        that followed caught it between two writes."""
        policy = self.policy_object()
        status = (policy or {}).get("status") or {}
        if not policy or status.get("observedGeneration") != policy["metadata"]["generation"]:
            return False
        deployments = self.workloads()
        matched = _matched(deployments)
        ready = {c["type"]: c["status"] for c in status.get("conditions") or []}.get("Ready")
        return (
            ready == "True"
            and status.get("readyWorkloads") == len(matched)
            and policy["spec"]["containers"][0]["image"] == image
            and not audit.status(policy, deployments, matched)
        )

    def audit_status(self) -> list[str]:
        policy = self.policy_object()
        if policy is None:
            return ["the policy is gone"]
        return audit.status(policy, self.workloads(), self.matched())

    def audit_injected(self) -> list[str]:
        policy = self.policy_object()
        if policy is None:
            return ["the policy is gone"]
        revision = (policy.get("status") or {}).get("revision", "")
        matched = self.matched()
        found = audit.status(policy, self.workloads(), matched)
        for deployment in self.workloads():
            name = deployment["metadata"]["name"]
            if name in matched:
                found += audit.injected(
                    deployment, self.snapshot[name], self.policy, policy["spec"], revision
                )
                found += audit.metadata_injected(
                    deployment, self.pod_snapshot[name], policy["spec"]
                )
            else:
                found += audit.removed(deployment, self.snapshot[name], self.policy)
                found += audit.metadata_removed(deployment, self.pod_snapshot[name])
        return found

    def audit_removed(self) -> list[str]:
        found = []
        for deployment in self.workloads():
            name = deployment["metadata"]["name"]
            found += audit.removed(deployment, self.snapshot[name], self.policy)
            found += audit.metadata_removed(deployment, self.pod_snapshot[name])
        return found


class Killer:
    """SIGKILLs the operator at random moments while a phase runs and starts it again at once;
    now and then kills it again a moment after it started, during its first listing."""

    def __init__(
        self,
        operator: OperatorProcess,
        rng: random.Random,
        *,
        between: tuple[float, float],
        first: tuple[float, float] | None = None,
        while_listing: float = 0.3,
        most: int | None = None,
    ) -> None:
        self.operator = operator
        self.rng = rng
        self.between = between
        self.first = first or between  # removal is fast: its first kill must come early
        self.while_listing = while_listing
        self.most = most  # SIGKILLs in all; None: no end
        self.kills = 0
        self.listing_kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _kill_and_start(self) -> None:
        self.operator.stop(signal.SIGKILL)
        self.kills += 1
        self.operator.start()

    def _more(self) -> bool:
        return self.most is None or self.kills < self.most

    def _run(self) -> None:
        delay = self.rng.uniform(*self.first)
        while self._more() and not self._stop.wait(delay):
            delay = self.rng.uniform(*self.between)
            self._kill_and_start()
            if (
                self._more()
                and self.rng.random() < self.while_listing
                and not self._stop.wait(self.rng.uniform(0.2, 0.8))
            ):
                self._kill_and_start()
                self.listing_kills += 1

    def __enter__(self) -> Killer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.operator.pid is None:
            self.operator.start()


def _phase(
    rows: list[Row],
    setting: Setting,
    name: str,
    act: Callable[[], object],
    done: Callable[[], bool],
    check: Callable[[], list[str]],
    operator: OperatorProcess,
    *,
    between: tuple[float, float] | None = None,
    first: tuple[float, float] | None = None,
) -> None:
    started = time.monotonic()
    every = between or setting.scale.kill_every
    most = setting.scale.kills_per_phase
    with Killer(operator, setting.rng, between=every, first=first, most=most) as killer:
        act()
        settled = wait(done)
    # Once more with the operator left alone, so the audit sees the end state.
    settled = settled or wait(done)
    defects = [] if settled else [f"{name} did not settle within {SETTLE_TIMEOUT:.0f}s"]
    rows.append(
        Row(
            "sigkill",
            name,
            f"{killer.kills} SIGKILLs ({killer.listing_kills} during the first listing)",
            round(time.monotonic() - started, 1),
            defects + check(),
            {"kills": killer.kills, "listing_kills": killer.listing_kills},
        )
    )


def _matched(deployments: Iterable[Mapping[str, Any]]) -> set[str]:
    return {
        d["metadata"]["name"]
        for d in deployments
        if d["metadata"]["labels"].get("group") in workloads.GROUPS
    }


def wait(done: Callable[[], bool], timeout: float = SETTLE_TIMEOUT, every: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(every)
    return False


# The SIGKILL trial's policy also sets pod labels and annotations: owned key by key, each
# must survive a kill between the template's write and the status's.
POD_METADATA = {
    "labels": {"chaos.example/shipped": "yes"},
    "annotations": {"chaos.example/shipper-tag": "{{ workload.name }}"},
}


def sigkills(setting: Setting, operator: OperatorProcess) -> list[Row]:
    """Inject, update, an edit mid-rollout, removal and deletion, SIGKILLed throughout."""
    rows: list[Row] = []
    kubectl = setting.start("sigkill", pod_metadata=POD_METADATA)
    with Timeline(str(setting.admin.kubeconfig), setting.namespace) as timeline:
        first, second, third = IMAGES
        _phase(
            rows,
            setting,
            "inject",
            lambda: setting.apply_policy(first),
            lambda: setting.settled(first),
            setting.audit_injected,
            operator,
        )
        _phase(
            rows,
            setting,
            "update",
            lambda: setting.apply_policy(second),
            lambda: setting.settled(second),
            setting.audit_injected,
            operator,
        )

        def edit_mid_rollout() -> None:
            setting.apply_policy(first)
            time.sleep(setting.rng.uniform(4.0, 8.0))
            setting.apply_policy(third)

        _phase(
            rows,
            setting,
            "edit during a rollout",
            edit_mid_rollout,
            lambda: setting.settled(third),
            setting.audit_injected,
            operator,
        )

        def unmatch_group_b() -> None:
            kubectl(
                "label",
                "deployment",
                "-l",
                "group=b",
                f"group={workloads.UNMATCHED}",
                "--overwrite",
            )

        _phase(
            rows,
            setting,
            "removal (unmatched)",
            unmatch_group_b,
            lambda: (
                setting.settled(third)
                and not any(
                    audit.carrying(d, setting.policy)
                    for d in setting.workloads()
                    if d["metadata"]["labels"]["group"] == workloads.UNMATCHED
                )
            ),
            setting.audit_injected,
            operator,
            between=(2.0, 6.0),
            first=(0.05, 0.5),
        )
        _phase(
            rows,
            setting,
            "policy deletion",
            lambda: setting.admin("delete", "sidecarpolicy", setting.policy, "--wait=false"),
            lambda: setting.policy_object() is None,
            setting.audit_removed,
            operator,
            between=(2.0, 6.0),
            first=(0.05, 0.5),
        )
        time.sleep(1)
        highest = timeline.max_in_flight_any_revision(setting.policy)
    budget = workloads.policy_spec(setting.namespace, first)["updateStrategy"]["maxConcurrent"]
    rows.append(
        Row(
            "sigkill",
            "budget",
            "all of the above",
            0.0,
            [] if highest <= budget else [f"{highest} in flight under maxConcurrent {budget}"],
            {"max_in_flight": highest, "budget": budget},
        )
    )
    setting.admin("delete", "namespace", setting.namespace, "--wait=false")
    return rows


@contextmanager
def _sampling(sample: Callable[[], T], every: float) -> Iterator[list[tuple[float, T]]]:
    """`sample()` every `every` seconds in a thread of its own while the block runs, as
    (time, value) pairs."""
    samples: list[tuple[float, T]] = []
    stop = threading.Event()

    def run() -> None:
        while True:
            samples.append((time.monotonic(), sample()))
            if stop.wait(every):
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def _health(operator: OperatorProcess) -> tuple[int, str]:
    """/healthz: its status, and what it says of the Deployment watch (0 and the error when it
    does not answer)."""
    try:
        code, report = operator.health()
    except OSError as error:
        return 0, repr(error)
    return code, str(report.get("workloads", ""))


def control_plane(setting: Setting, operator: OperatorProcess) -> list[Row]:
    """kube-apiserver, then etcd, stopped for 20 s in the middle of a rollout."""
    rows: list[Row] = []
    setting.start("control-plane")
    setting.apply_policy(IMAGES[0])
    if not wait(lambda: setting.settled(IMAGES[0])):
        return [Row("control plane", "inject", "", 0.0, ["the first rollout did not settle"])]
    with Timeline(str(setting.admin.kubeconfig), setting.namespace) as timeline:
        outages = zip(setting.scale.outages, IMAGES[1:], strict=False)
        for component, image in outages:
            started = time.monotonic()
            setting.apply_policy(image)
            time.sleep(setting.rng.uniform(2.0, 5.0))
            with _sampling(lambda: _health(operator), 0.5) as health:
                subprocess.run(
                    [
                        SIDECAR_OPERATOR,
                        "dev",
                        "restart",
                        component,
                        "--name",
                        setting.cluster,
                        "--down-for",
                        str(setting.scale.down_for),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                back = time.monotonic()
                seen = len(timeline.events)
                with _sampling(lambda: _progress(setting), 1.0) as progress:
                    settled = wait(functools.partial(setting.settled, image))
            stall = _first_write_after(timeline, setting.policy, seen, back)
            moved = next((t - back for t, count in progress if count > progress[0][1]), None)
            unhealthy = [s for s in health if s[1][0] != 200]
            truthful = component != "kube-apiserver" or any(
                "reconnecting" in s[1][1] for s in health if s[0] < back
            )
            defects = [] if settled else [f"the rollout did not settle after {component} came back"]
            if unhealthy:
                defects.append(f"/healthz failed {len(unhealthy)} times: {unhealthy[:3]}")
            if not truthful:
                defects.append("/healthz never said the Deployment watch was reconnecting")
            rows.append(
                Row(
                    "control plane",
                    f"{component} down {setting.scale.down_for:.0f} s mid-rollout",
                    f"{component} stopped {setting.scale.down_for:.0f} s",
                    round(time.monotonic() - started, 1),
                    defects + setting.audit_injected(),
                    {
                        "first_write_after_back_s": stall,
                        "first_rollout_done_after_back_s": None
                        if moved is None
                        else round(moved, 1),
                        "healthz_samples": len(health),
                    },
                )
            )
    setting.admin("delete", "sidecarpolicy", setting.policy, "--wait=true", "--timeout=120s")
    setting.admin("delete", "namespace", setting.namespace, "--wait=false")
    return rows


def _progress(setting: Setting) -> int:
    """Read straight from the API server: how many Deployments carry the policy's current
    revision and are rolled out. After an outage this shows when the controllers moved again,
    against which the operator's own stall is measured."""
    policy = setting.policy_object() or {}
    revision = (policy.get("status") or {}).get("revision")
    return sum(
        1
        for d in setting.workloads()
        if audit.carrying(d, setting.policy) == revision and rolled_out(d)
    )


def _first_write_after(timeline: Timeline, policy: str, seen: int, back: float) -> float | None:
    """Seconds from the server's return until the timeline next saw the policy's annotation
    change (its next write): how long the operator stalled after the outage."""
    key = f"policy.sidecars.dev/{policy}"
    last = {
        e["metadata"]["name"]: (e["metadata"].get("annotations") or {}).get(key)
        for e in timeline.events[:seen]
    }
    for index, event in enumerate(timeline.events[seen:], start=seen):
        name = event["metadata"]["name"]
        value = (event["metadata"].get("annotations") or {}).get(key)
        if value and value != last.get(name):
            return round(timeline.times[index] - back, 1)
        last[name] = value
    return None


def replicas(setting: Setting, make: Callable[[str], OperatorProcess]) -> list[Row]:
    """Two replicas; the active one SIGKILLed at random moments, started again (it then stands
    by). Takeover time each time, and what the standby wrote while standing by."""
    kills = setting.scale.kills
    setting.start("replicas")
    pair = [make("chaos-replica-a"), make("chaos-replica-b")]
    pair[0].start()
    eventually(lambda: _active(pair[0]), timeout=60, what="the first replica active")
    pair[1].start()
    eventually(lambda: _standing_by(pair[1]), timeout=60, what="the second standing by")
    rows: list[Row] = []
    images = iter(IMAGES * kills)
    setting.apply_policy(next(images))
    try:
        for attempt in range(kills):
            active, standby = (pair[0], pair[1]) if _active(pair[0]) else (pair[1], pair[0])
            setting.apply_policy(next(images))
            time.sleep(setting.rng.uniform(1.0, 6.0))
            standby_writes = _writes(standby)
            killed = time.monotonic()
            active.stop(signal.SIGKILL)
            took_over = wait(functools.partial(_active, standby), 60, every=0.2)
            takeover = round(time.monotonic() - killed, 1) if took_over else None
            active.start()
            defects = []
            if standby_writes:
                defects.append(f"the standby wrote {standby_writes} times before taking over")
            if takeover is None:
                defects.append("no takeover within 60 s")
            elif takeover > 20:
                defects.append(f"takeover took {takeover} s, more than 20")
            wait(functools.partial(_standing_by, active), 60, every=0.2)
            rows.append(
                Row(
                    "replicas",
                    f"kill {attempt + 1}",
                    "SIGKILL of the active replica",
                    takeover or 0.0,
                    defects,
                    {"takeover_s": takeover, "standby_writes": standby_writes},
                )
            )
        image = setting.policy_object()["spec"]["containers"][0]["image"]  # type: ignore[index]
        settled = wait(lambda: setting.settled(image))
        rows.append(
            Row(
                "replicas",
                "end state",
                "",
                0.0,
                ([] if settled else ["did not settle"]) + setting.audit_injected(),
            )
        )
    finally:
        for replica in pair:
            replica.stop()
    return rows


def _samples(replica: OperatorProcess, name: str) -> list[tuple[str, float]]:
    try:
        text = replica.metrics()
    except OSError:
        return []
    return [
        (line.split("{", 1)[-1].split("}", 1)[0], float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    ]


def _active(replica: OperatorProcess) -> bool:
    return any(value == 1 for _, value in _samples(replica, "sidecar_operator_active"))


def _standing_by(replica: OperatorProcess) -> bool:
    found = _samples(replica, "sidecar_operator_active")
    return bool(found) and found[0][1] == 0 and '"Standby"' in replica.log()


def _writes(replica: OperatorProcess) -> float:
    """Requests that change something, but for its peering record (a standby reads and watches
    as the active replica does)."""
    return sum(
        value
        for labels, value in _samples(replica, "sidecar_operator_api_requests_total")
        if 'method="GET"' not in labels
        and 'method="WATCH"' not in labels
        and "clusterkopfpeerings" not in labels
    )


def orphans(setting: Setting, operator: OperatorProcess) -> list[Row]:
    """A policy deleted while the operator was down, its finalizer then removed by hand (as
    people do when a deletion hangs): what it added stays on a CronJob and a StatefulSet, kinds
    no other policy targets, so no watch of the operator's sees them. It must remove them when
    it starts, and touch nothing else."""
    namespace = f"chaos-orphans-{uuid.uuid4().hex[:5]}"
    policy = f"chaos-orphans-{uuid.uuid4().hex[:5]}"
    setting.admin("create", "namespace", namespace)
    kubectl = setting.admin.in_namespace(namespace)
    kubectl.apply(yaml.safe_dump_all(workloads.other_kinds()))
    started = time.monotonic()
    before = {key: pod_spec(obj) for key, obj in _kinds(kubectl).items()}
    sidecar = {"name": "config-sync", "image": IMAGES[0], "restartPolicy": "Always"}
    body = {
        "apiVersion": "sidecars.dev/v1alpha1",
        "kind": "SidecarPolicy",
        "metadata": {"name": policy},
        "spec": {
            "kinds": ["CronJob", "StatefulSet"],
            "selector": {"matchLabels": {workloads.LABEL: "yes"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "initContainers": [sidecar],
        },
    }
    setting.admin.apply(yaml.safe_dump(body))
    defects = []
    injected = wait(lambda: all(_carries(obj, policy) for obj in _kinds(kubectl).values()), 120)
    if not injected:
        defects.append("the policy never injected the CronJob and the StatefulSet")
    operator.stop()
    try:
        setting.admin("delete", "sidecarpolicy", policy, "--wait=false")
        unfinalized = '{"metadata": {"finalizers": null}}'
        setting.admin("patch", "sidecarpolicy", policy, "--type=merge", "-p", unfinalized)
    finally:
        operator.start()
    restarted = time.monotonic()
    cleaned = wait(lambda: not any(_carries(o, policy) for o in _kinds(kubectl).values()), 60)
    took = round(time.monotonic() - restarted, 1)
    if not cleaned:
        defects.append("60 s after the operator started, the orphans are still there")
    for key, obj in _kinds(kubectl).items():
        if pod_spec(obj) != before[key]:
            defects.append(f"{key}: the template differs from before the policy")
    setting.admin("delete", "namespace", namespace, "--wait=false")
    return [
        Row(
            "orphans",
            "finalizer removed by hand while the operator was down",
            "a restart",
            round(time.monotonic() - started, 1),
            defects,
            {"removed_after_start_s": took if cleaned else None},
        )
    ]


def _kinds(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    found = {}
    for plural in ("cronjobs", "statefulsets"):
        for obj in kubectl.json(plural)["items"]:
            obj["kind"] = "CronJob" if plural == "cronjobs" else "StatefulSet"
            found[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return found


def _carries(obj: dict[str, Any], policy: str) -> bool:
    return (
        any(
            entry.get("manager") == f"sidecars.dev/{policy}"
            for entry in obj["metadata"].get("managedFields") or []
        )
        or audit.carrying(obj, policy) is not None
    )


WAVES: list[dict[str, Any]] = [
    {"name": "canary", "percent": 10, "pause": {}},
    {"percent": 40, "pause": {"duration": "15s"}},
    {"percent": 100},
]


def waves(setting: Setting, make: Callable[[str], OperatorProcess]) -> list[Row]:
    """A rollout in steps (a canary until promoted, 40% then a 15 s pause, the rest), the active
    replica of two SIGKILLed in each step and during the timed pause, so that the standby
    takes over mid-step each time: the same end state as without, the pause's clock kept in
    status, and the budget kept across replicas."""
    setting.start("waves")
    pair = [make("chaos-waves-a"), make("chaos-waves-b")]
    pair[0].start()
    eventually(lambda: _active(pair[0]), timeout=60, what="the first replica active")
    pair[1].start()
    eventually(lambda: _standing_by(pair[1]), timeout=60, what="the second standing by")
    rows: list[Row] = []
    try:
        setting.apply_policy(IMAGES[0])
        if not wait(lambda: setting.settled(IMAGES[0])):
            return [Row("waves", "first rollout", "", 0.0, ["the first rollout did not settle"])]
        with Timeline(str(setting.admin.kubeconfig), setting.namespace) as timeline:
            started = time.monotonic()
            setting.apply_policy(IMAGES[1], WAVES)
            defects: list[str] = []
            takeovers: list[float] = []

            def kill_active() -> None:
                active = next((r for r in pair if _active(r)), None)
                if active is None:
                    defects.append("no replica was active")
                    return
                standby = pair[1] if active is pair[0] else pair[0]
                killed = time.monotonic()
                active.stop(signal.SIGKILL)
                if wait(functools.partial(_active, standby), 60, every=0.2):
                    takeovers.append(round(time.monotonic() - killed, 1))
                else:
                    defects.append("no takeover within 60 s")
                active.start()

            time.sleep(setting.rng.uniform(0.5, 2.0))
            kill_active()  # in the canary step
            if not wait(lambda: _progressing(setting) == ("WaitingForPromotion", 0)):
                defects.append("the canary step never waited for promotion")
            revision = (setting.policy_object() or {}).get("status", {}).get("updateRevision")
            promote = f"sidecars.dev/promote={revision}/canary"
            setting.admin("annotate", "sidecarpolicy", setting.policy, promote, "--overwrite")
            time.sleep(setting.rng.uniform(0.5, 2.0))
            kill_active()  # in the second step
            if not wait(lambda: _progressing(setting) == ("StepPaused", 1)):
                defects.append("the second step never paused")
            done_at = (setting.policy_object() or {}).get("status", {}).get("stepDoneTime")
            kill_active()  # during the timed pause
            after = (setting.policy_object() or {}).get("status", {}).get("stepDoneTime")
            if after not in (None, done_at):
                defects.append(f"the pause's clock moved: {done_at} -> {after}")
            if not wait(lambda: _progressing(setting)[1] == 2):
                defects.append("the last step never started")
            time.sleep(setting.rng.uniform(0.5, 2.0))
            kill_active()  # in the last step
            if not wait(lambda: setting.settled(IMAGES[1])):
                defects.append("the rollout in steps did not settle")
            status = (setting.policy_object() or {}).get("status", {})
            if status.get("currentRevision") != status.get("updateRevision"):
                defects.append(f"the stable revision is {status.get('currentRevision')}")
            time.sleep(1)
            highest = timeline.max_in_flight_any_revision(setting.policy)
        budget = workloads.policy_spec(setting.namespace, IMAGES[0])["updateStrategy"]
        if highest > budget["maxConcurrent"]:
            defects.append(f"{highest} in flight under maxConcurrent {budget['maxConcurrent']}")
        rows.append(
            Row(
                "waves",
                "3 steps, 4 takeovers",
                "SIGKILL of the active replica in each step and during the pause",
                round(time.monotonic() - started, 1),
                defects + setting.audit_injected(),
                {"takeovers_s": takeovers, "max_in_flight": highest},
            )
        )
    finally:
        for replica in pair:
            replica.stop()
    setting.admin("delete", "namespace", setting.namespace, "--wait=false")
    return rows


def _progressing(setting: Setting) -> tuple[str, int]:
    """The reason `Progressing` gives, and the step."""
    status = (setting.policy_object() or {}).get("status") or {}
    reason = next(
        (c["reason"] for c in status.get("conditions") or [] if c["type"] == "Progressing"), ""
    )
    return reason, int(status.get("currentStep") or 0)
