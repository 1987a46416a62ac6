"""The Pod Security Standards as `podsecurity` applies them to what a policy adds: each rule of
baseline and restricted, inheritance from the pod level, and the namespace label."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar_operator.api.podsecurity import Level, enforced_level, violations

# A sidecar that passes restricted: what every restricted test starts from.
HARDENED: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
    "capabilities": {"drop": ["ALL"]},
}


def sidecar(name: str = "shipper", /, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "fluent/fluent-bit:3.1", **fields}


def secured(name: str = "shipper", /, **context: Any) -> dict[str, Any]:
    return sidecar(name, securityContext=context)


def hardened(name: str = "shipper", /, **overrides: Any) -> dict[str, Any]:
    context = {**HARDENED, **overrides}
    return sidecar(name, securityContext={k: v for k, v in context.items() if v is not None})


def baseline(*containers: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> list[str]:
    return violations(Level.BASELINE, containers=containers, volumes=volumes or [])


def restricted(
    *containers: dict[str, Any],
    volumes: list[dict[str, Any]] | None = None,
    pod: dict[str, Any] | None = None,
    **pod_spec: Any,
) -> list[str]:
    return violations(
        Level.RESTRICTED,
        containers=containers,
        volumes=volumes or [],
        pod_security_context=pod,
        **pod_spec,
    )


# The namespace label.


@pytest.mark.parametrize(
    "labels, level",
    [
        ({}, Level.PRIVILEGED),
        ({"team": "a"}, Level.PRIVILEGED),
        ({"pod-security.kubernetes.io/enforce": "privileged"}, Level.PRIVILEGED),
        ({"pod-security.kubernetes.io/enforce": "baseline"}, Level.BASELINE),
        ({"pod-security.kubernetes.io/enforce": "restricted"}, Level.RESTRICTED),
        ({"pod-security.kubernetes.io/warn": "restricted"}, Level.PRIVILEGED),
        ({"pod-security.kubernetes.io/audit": "baseline"}, Level.PRIVILEGED),
    ],
)
def test_enforced_level_reads_the_enforce_label(labels: dict[str, str], level: Level) -> None:
    assert enforced_level(labels) is level


@pytest.mark.parametrize("value", ["Restricted", "strict", ""])
def test_an_unknown_enforce_level_fails_closed_to_restricted(value: str) -> None:
    assert enforced_level({"pod-security.kubernetes.io/enforce": value}) is Level.RESTRICTED


def test_level_values_are_the_label_values() -> None:
    assert [str(level) for level in Level] == ["privileged", "baseline", "restricted"]


# Privileged admits anything.


def test_privileged_level_admits_anything() -> None:
    wild = secured(privileged=True, capabilities={"add": ["SYS_ADMIN"]}, procMount="Unmasked")
    assert (
        violations(Level.PRIVILEGED, containers=[wild], volumes=[{"name": "r", "hostPath": {}}])
        == []
    )


# Baseline, rule by rule.


def test_baseline_admits_a_plain_sidecar_and_ordinary_volumes() -> None:
    volumes = [{"name": "logs", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "c"}}]
    assert baseline(sidecar(), volumes=volumes) == []


def test_baseline_refuses_a_privileged_container() -> None:
    assert baseline(secured(privileged=True)) == [
        "container shipper: securityContext.privileged is true"
    ]


def test_baseline_admits_privileged_false() -> None:
    assert baseline(secured(privileged=False)) == []


def test_baseline_admits_capabilities_from_its_default_set() -> None:
    added = ["NET_BIND_SERVICE", "CHOWN", "SETUID", "SYS_CHROOT", "AUDIT_WRITE", "KILL"]
    assert baseline(secured(capabilities={"add": added, "drop": ["NET_RAW"]})) == []


def test_baseline_refuses_capabilities_beyond_its_default_set() -> None:
    context = {"capabilities": {"add": ["CHOWN", "NET_ADMIN", "SYS_ADMIN"]}}
    assert baseline(secured(**context)) == [
        "container shipper: securityContext.capabilities.add includes NET_ADMIN, SYS_ADMIN, "
        "beyond the baseline set"
    ]


@pytest.mark.parametrize("capability", ["NET_RAW", "ALL", "SYS_PTRACE", "chown"])
def test_baseline_refuses_net_raw_all_and_anything_not_spelled_as_listed(capability: str) -> None:
    assert len(baseline(secured(capabilities={"add": [capability]}))) == 1


def test_baseline_refuses_a_host_path_volume() -> None:
    assert baseline(volumes=[{"name": "root", "hostPath": {"path": "/"}}]) == [
        "volume root: hostPath volumes are not allowed"
    ]


def test_baseline_admits_network_volumes_that_restricted_refuses() -> None:
    nfs = {"name": "share", "nfs": {"server": "nfs", "path": "/export"}}
    assert baseline(volumes=[nfs]) == []
    assert restricted(volumes=[nfs]) == ["volume share: nfs volumes are not allowed"]


def test_baseline_refuses_a_host_port() -> None:
    ports = [{"containerPort": 80}, {"containerPort": 9000, "hostPort": 9000}]
    assert baseline(sidecar(ports=ports)) == ["container shipper: ports[1].hostPort is 9000"]


def test_baseline_admits_a_host_port_of_zero() -> None:
    assert baseline(sidecar(ports=[{"containerPort": 80, "hostPort": 0}])) == []


@pytest.mark.parametrize(
    "fields, path",
    [
        ({"livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}, "livenessProbe.httpGet"),
        (
            {"readinessProbe": {"tcpSocket": {"host": "db", "port": 5432}}},
            "readinessProbe.tcpSocket",
        ),
        ({"startupProbe": {"httpGet": {"host": "x", "port": 1}}}, "startupProbe.httpGet"),
        (
            {"lifecycle": {"preStop": {"httpGet": {"host": "x", "port": 1}}}},
            "lifecycle.preStop.httpGet",
        ),
        (
            {"lifecycle": {"postStart": {"tcpSocket": {"host": "x", "port": 1}}}},
            "lifecycle.postStart.tcpSocket",
        ),
    ],
)
def test_baseline_refuses_a_probe_or_lifecycle_handler_aimed_at_another_host(
    fields: dict[str, Any], path: str
) -> None:
    (problem,) = baseline(sidecar(**fields))
    assert problem.startswith(f"container shipper: {path}.host is ")


def test_baseline_admits_probes_on_the_pods_own_address() -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 8080, "host": ""}}
    assert (
        baseline(sidecar(livenessProbe=probe, readinessProbe={"tcpSocket": {"port": 8080}})) == []
    )


def test_baseline_refuses_an_unmasked_proc_mount() -> None:
    assert baseline(secured(procMount="Unmasked")) == [
        "container shipper: securityContext.procMount is Unmasked; only Default is allowed"
    ]
    assert baseline(secured(procMount="Default")) == []


def test_baseline_admits_an_unmasked_proc_mount_in_a_user_namespace_but_restricted_does_not() -> (
    None
):
    unmasked = secured(procMount="Unmasked")
    assert violations(Level.BASELINE, containers=[unmasked], volumes=[], host_users=False) == []
    assert violations(Level.BASELINE, containers=[unmasked], volumes=[], host_users=True) != []
    problems = restricted(hardened(procMount="Unmasked"), host_users=False)
    assert problems == [
        "container shipper: securityContext.procMount is Unmasked; only Default is allowed"
    ]


@pytest.mark.parametrize("field", ["seccompProfile", "appArmorProfile"])
def test_baseline_refuses_an_unconfined_profile(field: str) -> None:
    assert baseline(secured(**{field: {"type": "Unconfined"}})) == [
        f"container shipper: securityContext.{field}.type is Unconfined"
    ]


@pytest.mark.parametrize("field", ["seccompProfile", "appArmorProfile"])
@pytest.mark.parametrize("kind", ["RuntimeDefault", "Localhost"])
def test_baseline_admits_confined_profiles(field: str, kind: str) -> None:
    assert baseline(secured(**{field: {"type": kind, "localhostProfile": "p"}})) == []


@pytest.mark.parametrize(
    "kind", ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"]
)
def test_baseline_admits_the_container_selinux_types(kind: str) -> None:
    assert baseline(secured(seLinuxOptions={"type": kind, "level": "s0:c123,c456"})) == []


def test_baseline_refuses_a_custom_selinux_type() -> None:
    assert baseline(secured(seLinuxOptions={"type": "spc_t"})) == [
        "container shipper: securityContext.seLinuxOptions.type is spc_t"
    ]


def test_baseline_refuses_a_selinux_user_or_role() -> None:
    options = {"user": "system_u", "role": "system_r"}
    assert baseline(secured(seLinuxOptions=options)) == [
        "container shipper: securityContext.seLinuxOptions.user is set",
        "container shipper: securityContext.seLinuxOptions.role is set",
    ]


def test_baseline_refuses_a_windows_host_process() -> None:
    assert baseline(secured(windowsOptions={"hostProcess": True})) == [
        "container shipper: securityContext.windowsOptions.hostProcess is true"
    ]
    assert baseline(secured(windowsOptions={"hostProcess": False})) == []


def test_baseline_does_not_require_what_restricted_requires() -> None:
    assert baseline(secured(allowPrivilegeEscalation=True, runAsUser=0, runAsNonRoot=False)) == []


def test_baseline_ignores_the_apps_pod_level_settings() -> None:
    """A pod-level Unconfined or spc_t is the app's own: its Pods fail on it with or without the
    sidecar, which the policy neither causes nor can cure."""
    pod = {
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
        "seLinuxOptions": {"type": "spc_t"},
        "windowsOptions": {"hostProcess": True},
    }
    problems = violations(
        Level.BASELINE, containers=[sidecar()], volumes=[], pod_security_context=pod
    )
    assert problems == []


def test_null_fields_count_as_unset() -> None:
    nulls = secured(
        privileged=None,
        capabilities=None,
        seccompProfile=None,
        appArmorProfile=None,
        procMount=None,
    )
    assert baseline(nulls, volumes=[{"name": "logs", "emptyDir": {}, "hostPath": None}]) == []


# Restricted, rule by rule.


def test_restricted_admits_a_hardened_sidecar_and_its_volume_types() -> None:
    volumes: list[dict[str, Any]] = [
        {"name": source, source: {}}
        for source in (
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "image",
            "persistentVolumeClaim",
            "projected",
            "secret",
        )
    ]
    assert restricted(hardened(), volumes=volumes) == []


def test_restricted_takes_a_volume_without_a_source_as_the_empty_dir_it_defaults_to() -> None:
    assert restricted(volumes=[{"name": "scratch"}]) == []


@pytest.mark.parametrize("source", ["hostPath", "nfs", "gitRepo", "iscsi", "someFutureSource"])
def test_restricted_refuses_other_volume_types(source: str) -> None:
    assert restricted(volumes=[{"name": "v", source: {}}]) == [
        f"volume v: {source} volumes are not allowed"
    ]


def test_restricted_lists_every_problem_of_a_plain_sidecar() -> None:
    assert restricted(sidecar()) == [
        "container shipper: securityContext.capabilities.drop must include ALL",
        "container shipper: securityContext.seccompProfile.type must be RuntimeDefault or "
        "Localhost (on the container or the pod)",
        "container shipper: securityContext.allowPrivilegeEscalation must be false",
        "container shipper: securityContext.runAsNonRoot must be true "
        "(on the container or the pod)",
    ]


@pytest.mark.parametrize("value", [None, True])
def test_restricted_requires_allow_privilege_escalation_false(value: bool | None) -> None:
    assert restricted(hardened(allowPrivilegeEscalation=value)) == [
        "container shipper: securityContext.allowPrivilegeEscalation must be false"
    ]


def test_restricted_requires_dropping_all_capabilities() -> None:
    problem = "container shipper: securityContext.capabilities.drop must include ALL"
    assert restricted(hardened(capabilities=None)) == [problem]
    assert restricted(hardened(capabilities={"drop": ["NET_RAW"]})) == [problem]


def test_restricted_allows_adding_back_only_net_bind_service() -> None:
    assert restricted(hardened(capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})) == []
    assert restricted(hardened(capabilities={"drop": ["ALL"], "add": ["CHOWN"]})) == [
        "container shipper: securityContext.capabilities.add includes CHOWN; "
        "only NET_BIND_SERVICE is allowed"
    ]


def test_restricted_refuses_a_container_run_as_root() -> None:
    assert restricted(hardened(runAsNonRoot=False)) == [
        "container shipper: securityContext.runAsNonRoot is false"
    ]
    assert restricted(hardened(runAsUser=0)) == [
        "container shipper: securityContext.runAsUser is 0"
    ]
    assert restricted(hardened(runAsUser=1000)) == []


@pytest.mark.parametrize("kind", ["Unconfined", "Bogus"])
def test_restricted_refuses_other_seccomp_profiles(kind: str) -> None:
    assert restricted(hardened(seccompProfile={"type": kind})) == [
        f"container shipper: securityContext.seccompProfile.type is {kind}"
    ]


def test_restricted_includes_the_baseline_rules() -> None:
    problems = restricted(hardened(privileged=True, seLinuxOptions={"role": "r"}))
    assert problems == [
        "container shipper: securityContext.privileged is true",
        "container shipper: securityContext.seLinuxOptions.role is set",
    ]


# Restricted: what a container inherits from the pod.

POD_HARDENED = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "Localhost", "localhostProfile": "p"},
}


def test_restricted_accepts_run_as_non_root_and_seccomp_inherited_from_the_pod() -> None:
    container = hardened(runAsNonRoot=None, seccompProfile=None)
    assert restricted(container, pod=POD_HARDENED) == []


def test_restricted_refuses_root_and_unconfined_inherited_from_the_pod() -> None:
    container = hardened(runAsNonRoot=None, seccompProfile=None)
    pod = {"runAsNonRoot": False, "runAsUser": 0, "seccompProfile": {"type": "Unconfined"}}
    assert restricted(container, pod=pod) == [
        "container shipper: securityContext.seccompProfile.type is Unconfined "
        "(inherited from the pod)",
        "container shipper: securityContext.runAsNonRoot is false (inherited from the pod)",
        "container shipper: securityContext.runAsUser is 0 (inherited from the pod)",
    ]


def test_a_containers_own_setting_overrides_the_pods() -> None:
    pod = {"runAsNonRoot": False, "runAsUser": 0, "seccompProfile": {"type": "Unconfined"}}
    assert restricted(hardened(runAsUser=1000), pod=pod) == []
    good_pod = {**POD_HARDENED, "runAsUser": 1000}
    own = hardened(runAsNonRoot=False, runAsUser=0, seccompProfile={"type": "Unconfined"})
    assert restricted(own, pod=good_pod) == [
        "container shipper: securityContext.seccompProfile.type is Unconfined",
        "container shipper: securityContext.runAsNonRoot is false",
        "container shipper: securityContext.runAsUser is 0",
    ]


def test_restricted_lets_a_user_namespaced_pod_run_as_root() -> None:
    root = hardened(runAsNonRoot=None, runAsUser=0)
    assert restricted(root, host_users=False) == []
    assert restricted(root, host_users=True) != []


def test_restricted_does_not_apply_linux_only_rules_to_a_windows_pod() -> None:
    plain = sidecar()
    assert restricted(plain, os_name="windows") == [
        "container shipper: securityContext.runAsNonRoot must be true (on the container or the pod)"
    ]


# Messages and their order.


def test_messages_name_each_container_and_volume_in_the_order_given() -> None:
    problems = baseline(
        secured("b", privileged=True, procMount="Unmasked"),
        sidecar("clean"),
        secured("a", privileged=True),
        volumes=[{"name": "z", "hostPath": {}}, {"name": "y", "hostPath": {}}],
    )
    assert problems == [
        "container b: securityContext.privileged is true",
        "container b: securityContext.procMount is Unmasked; only Default is allowed",
        "container a: securityContext.privileged is true",
        "volume z: hostPath volumes are not allowed",
        "volume y: hostPath volumes are not allowed",
    ]


# Properties over generated sidecars.

CONTEXT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "privileged": st.booleans(),
    "allowPrivilegeEscalation": st.booleans(),
    "runAsNonRoot": st.booleans(),
    "runAsUser": st.sampled_from([0, 1000]),
    "procMount": st.sampled_from(["Default", "Unmasked"]),
    "capabilities": st.fixed_dictionaries(
        {},
        optional={
            "add": st.lists(st.sampled_from(["NET_BIND_SERVICE", "CHOWN", "NET_ADMIN", "ALL"])),
            "drop": st.lists(st.sampled_from(["ALL", "NET_RAW"])),
        },
    ),
    "seccompProfile": st.fixed_dictionaries(
        {"type": st.sampled_from(["RuntimeDefault", "Localhost", "Unconfined"])}
    ),
    "appArmorProfile": st.fixed_dictionaries(
        {"type": st.sampled_from(["RuntimeDefault", "Localhost", "Unconfined"])}
    ),
    "seLinuxOptions": st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["container_t", "spc_t"]),
            "user": st.just("system_u"),
            "role": st.just("system_r"),
        },
    ),
    "windowsOptions": st.fixed_dictionaries({"hostProcess": st.booleans()}),
}
POD_FIELDS = {key: CONTEXT_FIELDS[key] for key in ("runAsNonRoot", "runAsUser", "seccompProfile")}

container_lists = st.lists(
    st.builds(
        lambda name, context, ports: sidecar(name, securityContext=context, ports=ports),
        st.sampled_from(["a", "b", "c"]),
        st.fixed_dictionaries({}, optional=CONTEXT_FIELDS),
        st.lists(
            st.fixed_dictionaries(
                {"containerPort": st.just(80)}, optional={"hostPort": st.sampled_from([0, 80])}
            ),
            max_size=2,
        ),
    ),
    max_size=3,
)
volume_lists = st.lists(
    st.builds(
        lambda name, source: {"name": name, source: {}},
        st.sampled_from(["x", "y"]),
        st.sampled_from(["emptyDir", "secret", "hostPath", "nfs"]),
    ),
    max_size=3,
)
pod_contexts = st.none() | st.fixed_dictionaries({}, optional=POD_FIELDS)


@given(container_lists, volume_lists, pod_contexts, st.sampled_from([None, True, False]))
def test_what_passes_restricted_passes_baseline(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pod: dict[str, Any] | None,
    host_users: bool | None,
) -> None:
    def judge(level: Level) -> list[str]:
        return violations(
            level,
            containers=containers,
            volumes=volumes,
            pod_security_context=pod,
            host_users=host_users,
        )

    if judge(Level.RESTRICTED) == []:
        assert judge(Level.BASELINE) == []
    assert judge(Level.PRIVILEGED) == []


@given(container_lists, volume_lists, pod_contexts, st.sampled_from(list(Level)))
def test_each_container_and_volume_is_judged_on_its_own(
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    pod: dict[str, Any] | None,
    level: Level,
) -> None:
    """Judging them together says exactly what judging them one by one says, in order: so a
    policy's violations are the sum of its sidecars' and volumes'."""

    def judge(cs: list[dict[str, Any]], vs: list[dict[str, Any]]) -> list[str]:
        return violations(level, containers=cs, volumes=vs, pod_security_context=pod)

    one_by_one = [p for c in containers for p in judge([c], [])]
    one_by_one += [p for v in volumes for p in judge([], [v])]
    assert judge(containers, volumes) == one_by_one
    for problem in one_by_one:
        assert problem.startswith(("container ", "volume "))
