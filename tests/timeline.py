"""Every event of one kind of workload in one namespace, in the order the API server sent them:
what the cluster really saw, to count a rollout's concurrency from."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.core.workloads import rolled_out


class Timeline:
    """Every event of one kind in one namespace, in the order the API server sent them."""

    def __init__(
        self, kubeconfig: str, namespace: str, kind: WorkloadKind = WorkloadKind.DEPLOYMENT
    ) -> None:
        self.api_client = config.new_client_from_config(config_file=kubeconfig)
        apps, batch = client.AppsV1Api(self.api_client), client.BatchV1Api(self.api_client)
        lists: dict[WorkloadKind, Callable[..., Any]] = {
            WorkloadKind.DEPLOYMENT: apps.list_namespaced_deployment,
            WorkloadKind.STATEFUL_SET: apps.list_namespaced_stateful_set,
            WorkloadKind.DAEMON_SET: apps.list_namespaced_daemon_set,
            WorkloadKind.CRON_JOB: batch.list_namespaced_cron_job,
        }
        self.list = lists[kind]
        self.kind = kind
        self.namespace = namespace
        self.events: list[dict[str, Any]] = []
        self.times: list[float] = []  # time.monotonic() when each event arrived
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        """Lists, then watches; rides out an API server outage (resuming where it left off, or
        listing again when that is too old: the listing records the state after the gap)."""
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    listed = self.list(self.namespace)
                    for item in listed.items:
                        self._record(self._plain(item))
                    version = listed.metadata.resource_version
                stream = watch.Watch().stream(
                    self.list,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=2,
                )
                for event in stream:
                    obj = self._plain(event["object"])
                    version = obj["metadata"]["resourceVersion"]
                    self._record(obj)
            except ApiException as error:
                if error.status == 410:
                    version = None
                else:
                    self._stop.wait(0.5)
            except Exception:  # the API server is away
                self._stop.wait(0.5)

    def _record(self, obj: dict[str, Any]) -> None:
        self.times.append(time.monotonic())
        self.events.append(obj)

    def _plain(self, obj: Any) -> dict[str, Any]:
        """As JSON, naming its kind (a list's items name none)."""
        return {**self.api_client.sanitize_for_serialization(obj), "kind": self.kind.value}

    def __enter__(self) -> Timeline:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def carrying(self, policy: str, revision: str) -> set[str]:
        key = f"policy.sidecars.dev/{policy}"
        return {
            e["metadata"]["name"]
            for e in self.events
            if (e["metadata"].get("annotations") or {}).get(key) == revision
        }

    def max_in_flight(self, policy: str, revision: str) -> int:
        key = f"policy.sidecars.dev/{policy}"
        in_flight: set[str] = set()
        done: set[str] = set()
        highest = 0
        for event in self.events:
            name = event["metadata"]["name"]
            carries = (event["metadata"].get("annotations") or {}).get(key) == revision
            if carries and name not in done:
                if rolled_out(event):
                    in_flight.discard(name)
                    done.add(name)
                else:
                    in_flight.add(name)
            highest = max(highest, len(in_flight))
        return highest

    def max_in_flight_any_revision(self, policy: str) -> int:
        """In flight from the event where the policy's annotation changed (its write) until an
        event shows the workload rolled out, whatever revision it carries."""
        key = f"policy.sidecars.dev/{policy}"
        last: dict[str, str | None] = {}
        in_flight: set[str] = set()
        highest = 0
        for event in self.events:
            name = event["metadata"]["name"]
            value = (event["metadata"].get("annotations") or {}).get(key)
            if name in last and value and value != last[name]:
                in_flight.add(name)
            last[name] = value
            if name in in_flight and rolled_out(event):
                in_flight.discard(name)
            highest = max(highest, len(in_flight))
        return highest
