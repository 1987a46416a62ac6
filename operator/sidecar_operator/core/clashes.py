"""What keeps a policy from a workload: a name, a mount path, a host port or a pod label or
annotation the app or a winning policy already holds, a sidecar a CronJob's Jobs would never
finish with, what the namespace's Pod Security level would refuse. Pure."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar_operator.api import podsecurity
from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import Content, Policy
from sidecar_operator.core.ownership import POD_LISTS, POD_MAPS, Foreign, Ownership
from sidecar_operator.core.template import Pod, mount_keys, pod_keys


@dataclass
class Claims:
    """Names, mount paths and host ports already taken on this workload, and by whom."""

    names: dict[str, str] = field(default_factory=dict)  # container or init container name
    volumes: dict[str, str] = field(default_factory=dict)
    mounts: dict[tuple[str, str, str], str] = field(default_factory=dict)
    host_ports: dict[str, str] = field(default_factory=dict)  # protocol/hostIP/port -> holder
    # (labels or annotations, key) of the pod template -> (holder, the value it sets)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def take(self, policy: str, content: Content, pod: Pod) -> None:
        owner = f"policy {policy}"
        for container in (*content.containers, *content.init_containers):
            self.names[container.name] = owner
        for volume in content.volumes:
            self.volumes[volume.name] = owner
        for key in mount_keys(content, pod):
            self.mounts[key] = owner
        for container in content.containers:
            for port in host_ports(container.to_api(), pod):
                self.host_ports[port] = f"container {container.name} of policy {policy}"
        for pod_key, value in pod_keys(content):
            self.keys[pod_key] = (owner, value)


def host_ports(container: Mapping[str, Any], pod: Pod) -> Iterator[str]:
    """The host ports a regular container takes, as the API server checks them for a Pod: in
    a pod on the host's network every container port is a host port too (the Pod's defaults
    set it; a pod template keeps it unset, so the workload itself takes a clash)."""
    for port in container.get("ports") or []:
        number = port.get("hostPort") or (port.get("containerPort") if pod.host_network else 0)
        if number:
            yield f"{port.get('protocol') or 'TCP'}/{port.get('hostIP') or ''}/{number}"


def app_claims(pod: Pod, owners: Mapping[str, Ownership], others: Foreign) -> Claims:
    claims = Claims()
    for pod_map in POD_MAPS:
        by_policies = frozenset().union(*(o.keys(pod_map) for o in owners.values()))
        for name, value in pod.metadata.get(pod_map, {}).items():
            # The app's when no policy set it, or when it holds the key too (then the key
            # stays with the app's value once the policy lets go).
            if name not in by_policies or (pod_map, name) in others.keys:
                holder = others.holders((pod_map, name)) if (pod_map, name) in others.keys else ""
                claims.keys[(pod_map, name)] = (
                    f"the {pod.kind}" + (f" ({holder})" if holder else ""),
                    value,
                )
    policy_mounts = {key for owned in owners.values() for key in owned.mounts}
    policy_volumes = {name for owned in owners.values() for name in owned.volumes}
    for pod_list in POD_LISTS:
        for container in pod.app_containers(pod_list):
            claims.names[container["name"]] = f"the {pod.kind}"
            for mount in container.get("volumeMounts") or []:
                key = (pod_list, container["name"], mount["mountPath"])
                if key not in policy_mounts:
                    claims.mounts[key] = f"the {pod.kind}"
    for container in pod.app_containers("containers"):
        for port in host_ports(container, pod):
            claims.host_ports[port] = f"the {pod.kind}'s container {container['name']}"
    for volume in pod.items("volumes"):
        if volume["name"] not in policy_volumes:
            claims.volumes[volume["name"]] = f"the {pod.kind}"
    return claims


def conflicts(spec: Content, pod: Pod, claims: Claims) -> list[str]:
    found = []
    for container in (*spec.containers, *spec.init_containers):
        if container.name in claims.names:
            found.append(
                f"container {container.name} is already defined by {claims.names[container.name]}"
            )
    for volume in spec.volumes:
        if volume.name in claims.volumes:
            found.append(
                f"volume {volume.name} is already defined by {claims.volumes[volume.name]}"
            )
    for pod_list, target, path in sorted(mount_keys(spec, pod)):
        holder = claims.mounts.get((pod_list, target, path))
        if holder:
            found.append(f"container {target} already has a mount at {path} (from {holder})")
    for container in spec.containers:
        for port in host_ports(container.to_api(), pod):
            holder = claims.host_ports.get(port)
            if holder:
                found.append(
                    f"container {container.name} would take host port {port} (protocol/IP/"
                    f"port), which {holder} has"
                    + (
                        " (on the host's network, every container port is a host port)"
                        if pod.host_network
                        else ""
                    )
                    + ": the API server would refuse every new Pod"
                )
    known_volumes = {v.name for v in spec.volumes} | {v["name"] for v in pod.items("volumes")}
    for container in (*spec.containers, *spec.init_containers):
        for mount in container.model_extra.get("volumeMounts", []) if container.model_extra else []:
            if mount.get("name") not in known_volumes:
                found.append(
                    f"sidecar {container.name} mounts volume {mount.get('name')}, "
                    f"which neither the policy nor the {pod.kind} defines"
                )
    for (pod_map, key), value in pod_keys(spec):
        word = pod_map[:-1]
        if pod_map == "labels" and key in pod.selector_keys:
            found.append(
                f"pod label {key} is in the {pod.kind}'s selector: a policy never sets one "
                "(the workload would lose or take others' pods)"
            )
        elif (held := claims.keys.get((pod_map, key))) is not None and held[1] != value:
            found.append(
                f"pod {word} {key} is already set to {shown(held[1])} by {held[0]} (the "
                f"policy sets {shown(value)})"
            )
    if pod.kind is WorkloadKind.CRON_JOB and spec.containers:
        names = ", ".join(container.name for container in spec.containers)
        found.append(
            f"a Job never finishes while regular containers ({names}) run beside its own: "
            "add them as initContainers with restartPolicy: Always (native sidecars), which "
            "Kubernetes stops when the Job's containers exit"
        )
    return found


def pod_security(
    policy: Policy,
    spec: Content,
    pod: Pod,
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> list[str]:
    """The sidecars must pass baseline (unless allowPrivileged) and whatever level the namespace
    enforces: Pod Security admission judges Pods, not Deployments, so a refused sidecar would
    otherwise leave a rollout whose new Pods are never created."""
    found = []
    if spec.baseline_violations and not policy.spec.allow_privileged:
        found.append(
            "the sidecars break the baseline Pod Security Standard ("
            + "; ".join(spec.baseline_violations)
            + "); set spec.allowPrivileged: true to allow it"
        )
    level = podsecurity.enforced_level(namespace_labels)
    refused = podsecurity.violations(
        level,
        containers=[c.to_api() for c in (*spec.containers, *spec.init_containers)],
        volumes=[v.to_api() for v in spec.volumes],
        pod_security_context=pod.spec.get("securityContext"),
        host_users=pod.spec.get("hostUsers"),
        os_name=(pod.spec.get("os") or {}).get("name"),
    )
    if refused:
        found.append(
            f"namespace {namespace} enforces the {level} Pod Security level, which would refuse "
            f"the Pods: {'; '.join(refused)}"
        )
    return found


def shown(value: str) -> str:
    """A label's or annotation's value in a message (an annotation may be 256 KB)."""
    return repr(value if len(value) <= 64 else value[:61] + "...")
