"""The CRD's rules for what a policy may add without `spec.allowPrivileged`: CEL expressions the
API server enforces at `kubectl apply`, built from the Pod Security Standards' own sets."""

from __future__ import annotations

from typing import Any

from sidecar_operator.api import podsecurity


def _cel_list(values: frozenset[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in sorted(values)) + "]"


def _every_sidecar(condition: str) -> str:
    """A rule: allowPrivileged is set, or `condition` on `c` holds for every (init) container."""
    return (
        f"self.allowPrivileged || (self.containers.all(c, {condition}) && "
        f"self.initContainers.all(c, {condition}))"
    )


def _indices(count: int) -> str:
    return "[" + ", ".join(str(i) for i in range(count)) + "]"


_ALLOW_IT = "; set spec.allowPrivileged: true to allow it"
_SECURITY = "c.?securityContext"
_ADDED = f"{_SECURITY}.?capabilities.?add.orValue([])"  # CRD rules have no cel.bind
_PORTS = "c.?ports.orValue([])"
_PORTS_CHECKED = 32
_HANDLERS = [f"c.?{probe}" for probe in ("livenessProbe", "readinessProbe", "startupProbe")] + [
    f"c.?lifecycle.?{handler}" for handler in ("postStart", "preStop")
]
# Without allowPrivileged a policy may add only what the Pod Security Standards' baseline level
# admits (`podsecurity` has the rules), and no allowPrivilegeEscalation: true either, which baseline
# leaves alone. One rule per check, each saying what to change.
# containers[].ports and securityContext.capabilities.add have no maxItems in the embedded core/v1
# schemas, and the API server prices a rule that iterates such a list at the longest list a request
# could hold: `.all()` over either was refused at install ("estimated rule cost exceeds budget by
# factor of more than 100x"). Indexing is constant-cost, so these rules walk a fixed range of
# indices instead. Capabilities: all of them, as a list longer than baseline's 13 names must repeat
# or exceed them. Ports: the first 32; a hostPort further down a sidecar's ports is runtime-only
# (the operator finds it with `podsecurity.violations` and reports the policy's conflict).
BASELINE_RULES: list[dict[str, Any]] = [
    {
        "rule": _every_sidecar(f"!{_SECURITY}.?privileged.orValue(false)"),
        "message": "a sidecar sets securityContext.privileged: true" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(f"!{_SECURITY}.?allowPrivilegeEscalation.orValue(false)"),
        "message": "a sidecar sets securityContext.allowPrivilegeEscalation: true (set it to "
        "false or leave it out)" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(f"{_SECURITY}.?procMount.orValue('Default') == 'Default'"),
        "message": "a sidecar sets securityContext.procMount other than Default" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(
            f"{_SECURITY}.?seccompProfile.?type.orValue('RuntimeDefault') in "
            f"{_cel_list(podsecurity.CONFINED_PROFILE_TYPES)}"
        ),
        "message": "a sidecar sets securityContext.seccompProfile.type to Unconfined (use "
        "RuntimeDefault or Localhost, or leave it out)" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(
            f"{_SECURITY}.?appArmorProfile.?type.orValue('RuntimeDefault') in "
            f"{_cel_list(podsecurity.CONFINED_PROFILE_TYPES)}"
        ),
        "message": "a sidecar sets securityContext.appArmorProfile.type to Unconfined (use "
        "RuntimeDefault or Localhost, or leave it out)" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(
            f"{_SECURITY}.?seLinuxOptions.?type.orValue('') in "
            f"{_cel_list(podsecurity.SELINUX_TYPES)} && "
            f"{_SECURITY}.?seLinuxOptions.?user.orValue('') == '' && "
            f"{_SECURITY}.?seLinuxOptions.?role.orValue('') == ''"
        ),
        "message": "a sidecar sets securityContext.seLinuxOptions user, role, or a type other "
        "than container_t, container_init_t, container_kvm_t or container_engine_t" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(f"!{_SECURITY}.?windowsOptions.?hostProcess.orValue(false)"),
        "message": "a sidecar sets securityContext.windowsOptions.hostProcess: true" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(
            " && ".join(
                f"{handler}.?{action}.?host.orValue('') == ''"
                for handler in _HANDLERS
                for action in ("httpGet", "tcpSocket")
            )
        ),
        "message": "a sidecar's probe or lifecycle handler sets httpGet.host or tcpSocket.host "
        "(leave it out to reach the Pod's own address)" + _ALLOW_IT,
    },
    {
        "rule": "self.allowPrivileged || self.volumes.all(v, !has(v.hostPath))",
        "message": "a volume is a hostPath volume" + _ALLOW_IT,
    },
    {
        # At most as many entries as baseline has names: a longer list repeats or exceeds them.
        "rule": _every_sidecar(
            f"size({_ADDED}) <= {len(podsecurity.BASELINE_CAPABILITIES)} && "
            f"{_indices(len(podsecurity.BASELINE_CAPABILITIES))}.all(i, i >= size({_ADDED}) || "
            f"{_ADDED}[i] in {_cel_list(podsecurity.BASELINE_CAPABILITIES)})"
        ),
        "message": "a sidecar's securityContext.capabilities.add goes beyond the Pod Security "
        "baseline set (" + ", ".join(sorted(podsecurity.BASELINE_CAPABILITIES)) + ")" + _ALLOW_IT,
    },
    {
        "rule": _every_sidecar(
            f"{_indices(_PORTS_CHECKED)}.all(i, i >= size({_PORTS}) || "
            f"{_PORTS}[i].?hostPort.orValue(0) == 0)"
        ),
        "message": "a sidecar sets hostPort in ports" + _ALLOW_IT,
    },
]
