"""Racing writers: people and tools changing the same Deployments while a rollout runs.

Four groups of Deployments, each with one kind of writer a cluster really has:
- another field manager's `kubectl apply --server-side` loop, which also sets an env var on the
  app container (first to 1, later to 2);
- `kubectl set image` on the app container, twice;
- client-side `kubectl apply` of the original manifests in a loop, as a CI pipeline does, once
  with a new pod-template annotation (a deploy of its own);
- `kubectl rollout undo` on each Deployment as soon as it rolled the sidecars out.

The operator must never force an app field (its field manager owns nothing of the app but the
mounts it adds), and must end converged: every Deployment carries the policy's revision exactly,
with the app as its own writers last left it. The rollouts (ReplicaSets) are counted against the
fewest these writes need.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from typing import Any

import yaml

from sidecar_operator.core.workloads import rolled_out
from tests.chaos import audit, workloads
from tests.chaos.trials import IMAGES, Row, Setting, wait
from tests.kube import Kubectl

GROUPS = ("server-side apply loop", "set image", "client-side apply loop", "rollout undo")
RACER = "chaos-racer"
APP_IMAGES = ("nginx:1.27.1", "nginx:1.27.2")
# The fewest ReplicaSets each group's history needs: the first one, the sidecars', and one per
# change of the app's template (an undo goes back to the first ReplicaSet, and injecting again
# back to the sidecars').
FEWEST_REPLICASETS = {GROUPS[0]: 4, GROUPS[1]: 4, GROUPS[2]: 3, GROUPS[3]: 2}


def group(index: int) -> str:
    return GROUPS[index % len(GROUPS)]


def _app(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == "app")


def expected_app(
    snapshot: audit.Template, group_name: str, app_image: str | None
) -> audit.Template:
    """The app's own part once its writer is done (`app_image`: the last image `set image`
    set, if it got to any before the race ended)."""
    pod = copy.deepcopy(snapshot)
    if group_name == GROUPS[0]:
        env = _app(pod).setdefault("env", [])
        env.append({"name": "RACER", "value": "2"})
    elif group_name == GROUPS[1] and app_image is not None:
        _app(pod)["image"] = app_image
    return pod


class Racers:
    """The four writers, each in a thread, until `stop`."""

    def __init__(self, setting: Setting, kubectl: Kubectl) -> None:
        self.setting = setting
        self.kubectl = kubectl
        self.names = {
            g: [f"app-{i:02d}" for i in range(setting.scale.size) if group(i) == g] for g in GROUPS
        }
        self.writes = dict.fromkeys(GROUPS, 0)
        self.refused: list[str] = []
        self.app_image: str | None = None  # the last image `set image` set on its group
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._guard(run), daemon=True)
            for run in (self._server_side, self._set_image, self._client_side, self._undo)
        ]
        self.errors: list[str] = []

    def _guard(self, run: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                run()
            except Exception as error:  # reported as the trial's defect, not lost in a thread
                self.errors.append(f"{run.__name__}: {error}")

        return guarded

    def __enter__(self) -> Racers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, group_name: str, *args: str, input: str | None = None) -> None:
        done = self.kubectl(*args, input=input, check=False)
        self.writes[group_name] += 1
        if done.returncode != 0:
            self.refused.append(f"{group_name}: {done.stderr.strip()}")

    def _server_side(self) -> None:
        """A GitOps tool's loop: the whole manifest, under its own field manager, never forced.
        (Its first apply takes over what client-side apply owned, as `kubectl` does.)"""
        started = time.monotonic()
        tick = 0
        while not self._stop.wait(self.setting.rng.uniform(0.3, 1.0)):
            tick += 1
            value = "1" if time.monotonic() - started < self.setting.scale.race_seconds / 2 else "2"
            manifests = []
            for index in range(self.setting.scale.size):
                if group(index) != GROUPS[0]:
                    continue
                manifest = workloads.deployment(index)
                manifest["metadata"]["annotations"] = {"racer/tick": str(tick)}
                env = _app(manifest["spec"]["template"]["spec"]).setdefault("env", [])
                env.append({"name": "RACER", "value": value})
                manifests.append(manifest)
            self._run(
                GROUPS[0],
                "apply",
                "--server-side",
                f"--field-manager={RACER}",
                "-f",
                "-",
                input=yaml.safe_dump_all(manifests),
            )

    def _set_image(self) -> None:
        for image in APP_IMAGES:
            if self._stop.wait(self.setting.rng.uniform(3.0, self.setting.scale.race_seconds / 2)):
                return
            for name in self.names[GROUPS[1]]:
                self._run(GROUPS[1], "set", "image", f"deployment/{name}", f"app={image}")
            # Under load the race can end before the second round: expect what was set.
            self.app_image = image

    def _client_side(self) -> None:
        originals = {i: workloads.deployment(i) for i in range(self.setting.scale.size)}
        manifests = [originals[i] for i in originals if group(i) == GROUPS[2]]
        deploy_at = time.monotonic() + self.setting.rng.uniform(
            3.0, self.setting.scale.race_seconds / 2
        )
        while not self._stop.wait(self.setting.rng.uniform(0.5, 1.5)):
            if time.monotonic() > deploy_at:
                for manifest in manifests:
                    manifest["spec"]["template"]["metadata"]["annotations"] = {"deploy": "2"}
            self._run(GROUPS[2], "apply", "-f", "-", input=yaml.safe_dump_all(manifests))

    def _undo(self) -> None:
        """Undo each Deployment once, as soon as it rolled out with the sidecars."""
        waiting = set(self.names[GROUPS[3]])
        while waiting and not self._stop.wait(0.5):
            for deployment in self.setting.workloads():
                name = deployment["metadata"]["name"]
                if (
                    name in waiting
                    and audit.carrying(deployment, self.setting.policy)
                    and rolled_out(deployment)
                    and _has_sidecars(deployment)
                ):
                    self._run(GROUPS[3], "rollout", "undo", f"deployment/{name}")
                    waiting.discard(name)


def _has_sidecars(deployment: dict[str, Any]) -> bool:
    return any(c["name"] == "shipper" for c in deployment["spec"]["template"]["spec"]["containers"])


def racing(setting: Setting) -> list[Row]:
    """Inject while the four writers race the operator; then audit, ownership and rollouts."""
    kubectl = setting.start("racing")
    image = IMAGES[0]
    started = time.monotonic()
    with Racers(setting, kubectl) as racers:
        setting.apply_policy(image)
        time.sleep(setting.scale.race_seconds)
    settled = wait(lambda: setting.settled(image))
    seconds = round(time.monotonic() - started, 1)
    policy = setting.policy_object() or {}
    spec = policy.get("spec", {})
    revision = (policy.get("status") or {}).get("revision", "")
    manager = f"sidecars.dev/{setting.policy}"
    replicasets = _replicasets(setting)
    rows = []
    for group_name in GROUPS:
        defects = [] if settled else ["did not settle"]
        defects += [e for e in racers.errors if group_name in e]
        extra = total = 0
        for deployment in setting.workloads():
            name = deployment["metadata"]["name"]
            if group(int(name.split("-")[1])) != group_name:
                continue
            expected = expected_app(setting.snapshot[name], group_name, racers.app_image)
            defects += audit.injected(deployment, expected, setting.policy, spec, revision)
            defects += audit.app_fields_owned(deployment, manager, spec)
            total += replicasets.get(name, 0)
            extra += max(0, replicasets.get(name, 0) - FEWEST_REPLICASETS[group_name])
        refused = [r for r in racers.refused if r.startswith(group_name)]
        rows.append(
            Row(
                "racing",
                group_name,
                f"{racers.writes[group_name]} writes racing the rollout",
                seconds,
                defects,
                {
                    "racer_writes": racers.writes[group_name],
                    "racer_writes_refused": len(refused),
                    "replicasets": total,
                    "extra_replicasets": extra,
                },
            )
        )
        if refused:
            rows[-1].figures["first_refusal"] = refused[0][:200]
    rows.append(Row("racing", "status", "", 0.0, setting.audit_status(), {"settled": settled}))
    setting.admin("delete", "sidecarpolicy", setting.policy, "--wait=true", "--timeout=120s")
    setting.admin("delete", "namespace", setting.namespace, "--wait=false")
    return rows


def _replicasets(setting: Setting) -> dict[str, int]:
    counts: dict[str, int] = {}
    items = setting.admin.in_namespace(setting.namespace).json("replicasets")["items"]
    for replicaset in items:
        for owner in replicaset["metadata"].get("ownerReferences") or []:
            if owner["kind"] == "Deployment":
                counts[owner["name"]] = counts.get(owner["name"], 0) + 1
    return counts
