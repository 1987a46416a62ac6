"""The Kubernetes Pod Security Standards, applied to what a SidecarPolicy adds. Pure: dicts in,
messages out.

Two questions need it. Without `spec.allowPrivileged` a policy may only add what the baseline level
admits: one policy must not silently hand root on every node to a whole cluster's workloads. And
where a namespace enforces a level (`pod-security.kubernetes.io/enforce`), a sidecar the level
refuses would leave the Deployment with a rollout whose Pods the API server will never create:
the operator reports that Deployment as a conflict instead.

The rules are those of the current ("latest") policy version of k8s.io/pod-security-admission's
`policy` package as of Kubernetes v1.37, one function per check there. They judge only the
containers and volumes passed in: pod-level fields belong to the app, whose Pods pass or fail on
them with or without a sidecar. The pod level is read only where a container inherits from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"


class Level(StrEnum):
    """A Pod Security Standards level, from most to least permissive."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


# Capabilities a container may add at baseline: the container runtimes' default set, minus NET_RAW.
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Restricted: capabilities.drop must include ALL, and only this one may be added back.
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# SELinux types baseline admits (container_engine_t since policy version 1.31); "" is unset.
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
# Confined seccomp and AppArmor profile types. Baseline refuses any other value where one is set;
# restricted also requires a seccomp profile to be set (on the container or the pod).
CONFINED_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
# Volume sources restricted admits (image since policy version 1.33); baseline only bans hostPath.
RESTRICTED_VOLUME_SOURCES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_LIFECYCLE_HANDLERS = ("postStart", "preStop")

Context = Mapping[str, Any]


def enforced_level(namespace_labels: Mapping[str, str]) -> Level:
    """The level Pod Security admission enforces in a namespace with these labels.

    Without the label it is the API server's default, privileged (unless a cluster admin
    configured another default, which the operator cannot see).
    """
    value = namespace_labels.get(ENFORCE_LABEL)
    if value is None:
        return Level.PRIVILEGED
    try:
        return Level(value)
    except ValueError:
        # Pod Security admission fails closed on an unparseable enforce label (api.ParseLevel
        # returns restricted with its error): such a namespace admits only restricted Pods.
        return Level.RESTRICTED


def violations(
    level: Level,
    *,
    containers: Sequence[Mapping[str, Any]],
    volumes: Sequence[Mapping[str, Any]],
    pod_security_context: Mapping[str, Any] | None = None,
    host_users: bool | None = None,
    os_name: str | None = None,
) -> list[str]:
    """Why `level` would refuse a Pod because of these containers (core/v1 Containers, init
    containers included) and volumes (core/v1 Volumes), one short message each; [] if it admits
    them.

    `pod_security_context` is the Pod's own securityContext, `host_users` and `os_name` its
    spec.hostUsers and spec.os.name: they decide what a container inherits and when the
    policy relaxes a rule (a user-namespaced Pod may run as root and unmask /proc; a Windows Pod
    has no Linux capabilities, seccomp or privilege escalation). Left out, they are taken as
    unset, which is the strict reading. Violations of the pod level itself are not reported:
    they are the app's. Messages come in a fixed order: container by container as given, each
    container's rules in a fixed order, then the volumes as given.
    """
    if level == Level.PRIVILEGED:
        return []
    pod = _Pod(
        context=pod_security_context or {},
        user_namespaced=host_users is False,
        windows=os_name == "windows",
    )
    container_checks = _BASELINE_CONTAINER_CHECKS
    volume_check = _baseline_volume
    if level == Level.RESTRICTED:
        container_checks = _RESTRICTED_CONTAINER_CHECKS
        volume_check = _restricted_volume
    found: list[str] = []
    for container in containers:
        context = _mapping(container.get("securityContext"))
        for check in container_checks:
            found.extend(
                f"container {container.get('name', '')}: {problem}"
                for problem in check(container, context, pod)
            )
    for volume in volumes:
        found.extend(
            f"volume {volume.get('name', '')}: {problem}" for problem in volume_check(volume)
        )
    return found


class _Pod:
    """What the rules read of the Pod around the containers."""

    def __init__(self, context: Context, *, user_namespaced: bool, windows: bool) -> None:
        self.context = context
        self.user_namespaced = user_namespaced
        self.windows = windows


_Check = Callable[[Mapping[str, Any], Context, _Pod], Iterator[str]]


def _mapping(value: Any) -> Context:
    """A nested object, or {} where it is absent or null (the API server drops nulls)."""
    return value if isinstance(value, Mapping) else {}


def _inherited(context: Context, pod: _Pod, field: str) -> tuple[Any, str]:
    """The value a container runs with: its own, else the Pod's; and a note saying which."""
    if context.get(field) is not None:
        return context[field], ""
    return pod.context.get(field), " (inherited from the pod)"


# Baseline.


def _privileged(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    if context.get("privileged") is True:
        yield "securityContext.privileged is true"


def _capabilities_baseline(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    added = _mapping(context.get("capabilities")).get("add") or []
    beyond = [str(c) for c in added if c not in BASELINE_CAPABILITIES]
    if beyond:
        yield (
            f"securityContext.capabilities.add includes {', '.join(beyond)}, "
            "beyond the baseline set"
        )


def _host_ports(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    for index, port in enumerate(container.get("ports") or []):
        host_port = _mapping(port).get("hostPort")
        if host_port:
            yield f"ports[{index}].hostPort is {host_port}"


def _host_probes_and_lifecycle(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    """Since policy version 1.34: a probe or lifecycle handler must not reach another host."""
    handlers = [(name, _mapping(container.get(name))) for name in _PROBES]
    lifecycle = _mapping(container.get("lifecycle"))
    handlers += [
        (f"lifecycle.{name}", _mapping(lifecycle.get(name))) for name in _LIFECYCLE_HANDLERS
    ]
    for path, handler in handlers:
        for action in ("httpGet", "tcpSocket"):
            host = _mapping(handler.get(action)).get("host")
            if host:
                yield f"{path}.{action}.host is {host}; only the Pod's own address is allowed"


def _proc_mount_baseline(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    # Since policy version 1.35 a user-namespaced Pod may unmask /proc at baseline.
    if not pod.user_namespaced:
        yield from _proc_mount_restricted(container, context, pod)


def _proc_mount_restricted(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    proc_mount = context.get("procMount")
    if proc_mount is not None and proc_mount != "Default":
        yield f"securityContext.procMount is {proc_mount}; only Default is allowed"


def _seccomp_baseline(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    profile = context.get("seccompProfile")
    kind = _mapping(profile).get("type")
    if profile is not None and kind not in CONFINED_PROFILE_TYPES:
        yield f"securityContext.seccompProfile.type is {kind}"


def _app_armor(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    profile = context.get("appArmorProfile")
    kind = _mapping(profile).get("type")
    if profile is not None and kind not in CONFINED_PROFILE_TYPES:
        yield f"securityContext.appArmorProfile.type is {kind}"


def _selinux(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    options = _mapping(context.get("seLinuxOptions"))
    kind = options.get("type") or ""
    if kind not in SELINUX_TYPES:
        yield f"securityContext.seLinuxOptions.type is {kind}"
    for field in ("user", "role"):
        if options.get(field):
            yield f"securityContext.seLinuxOptions.{field} is set"


def _windows_host_process(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    if _mapping(context.get("windowsOptions")).get("hostProcess") is True:
        yield "securityContext.windowsOptions.hostProcess is true"


# Restricted, on top of (and where named, instead of) baseline.


def _allow_privilege_escalation(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    # Unset means true for a process that is not already privileged: it must be said.
    if not pod.windows and context.get("allowPrivilegeEscalation") is not False:
        yield "securityContext.allowPrivilegeEscalation must be false"


def _capabilities_restricted(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    if pod.windows:
        return
    capabilities = _mapping(context.get("capabilities"))
    if "ALL" not in (capabilities.get("drop") or []):
        yield "securityContext.capabilities.drop must include ALL"
    beyond = [str(c) for c in capabilities.get("add") or [] if c not in RESTRICTED_CAPABILITIES]
    if beyond:
        yield (
            f"securityContext.capabilities.add includes {', '.join(beyond)}; "
            "only NET_BIND_SERVICE is allowed"
        )


def _run_as_non_root(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    if pod.user_namespaced:
        return
    value, note = _inherited(context, pod, "runAsNonRoot")
    if value is None:
        yield "securityContext.runAsNonRoot must be true (on the container or the pod)"
    elif value is not True:
        yield f"securityContext.runAsNonRoot is false{note}"


def _run_as_user(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    if pod.user_namespaced:
        return
    value, note = _inherited(context, pod, "runAsUser")
    if value == 0 and not isinstance(value, bool):
        yield f"securityContext.runAsUser is 0{note}"


def _seccomp_restricted(container: Context, context: Context, pod: _Pod) -> Iterator[str]:
    if pod.windows:
        return
    profile, note = _inherited(context, pod, "seccompProfile")
    if profile is None:
        yield (
            "securityContext.seccompProfile.type must be RuntimeDefault or Localhost "
            "(on the container or the pod)"
        )
        return
    kind = _mapping(profile).get("type")
    if kind not in CONFINED_PROFILE_TYPES:
        yield f"securityContext.seccompProfile.type is {kind}{note}"


_BASELINE_CONTAINER_CHECKS: tuple[_Check, ...] = (
    _privileged,
    _capabilities_baseline,
    _host_ports,
    _host_probes_and_lifecycle,
    _proc_mount_baseline,
    _seccomp_baseline,
    _app_armor,
    _selinux,
    _windows_host_process,
)
_RESTRICTED_CONTAINER_CHECKS: tuple[_Check, ...] = (
    _privileged,
    _capabilities_restricted,  # instead of _capabilities_baseline
    _host_ports,
    _host_probes_and_lifecycle,
    _proc_mount_restricted,  # instead of _proc_mount_baseline: no user-namespace exception
    _seccomp_restricted,  # instead of _seccomp_baseline
    _app_armor,
    _selinux,
    _windows_host_process,
    _allow_privilege_escalation,
    _run_as_non_root,
    _run_as_user,
)


def _volume_sources(volume: Mapping[str, Any]) -> list[str]:
    """The volume's source fields; a Volume without one is defaulted to an emptyDir."""
    sources = [key for key, value in volume.items() if key != "name" and value is not None]
    return sources or ["emptyDir"]


def _baseline_volume(volume: Mapping[str, Any]) -> Iterator[str]:
    if volume.get("hostPath") is not None:
        yield "hostPath volumes are not allowed"


def _restricted_volume(volume: Mapping[str, Any]) -> Iterator[str]:
    for source in _volume_sources(volume):
        if source not in RESTRICTED_VOLUME_SOURCES:
            yield f"{source} volumes are not allowed"
