"""Which workloads a policy selects. Pure: labels and kinds in, a decision out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar_operator.api.kinds import WorkloadKind
from sidecar_operator.api.models import LabelSelector, SidecarPolicySpec
from sidecar_operator.api.names import INJECT_KEY, SHARD_LABEL

# Matched only when a namespaceSelector names them explicitly.
PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
NAME_LABEL = "kubernetes.io/metadata.name"  # every Namespace carries its name as this label


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        value = labels.get(requirement.key)
        match requirement.operator:
            case "In":
                holds = value is not None and value in requirement.values
            case "NotIn":
                holds = value is None or value not in requirement.values
            case "Exists":
                holds = value is not None
            case "DoesNotExist":
                holds = value is None
        if not holds:
            return False
    return True


def serves(shard: str | None, policy_labels: Mapping[str, str] | None) -> bool:
    """Whether an operator run with this `--shard` (None: without) serves a policy."""
    return ((policy_labels or {}).get(SHARD_LABEL) or None) == shard


def names_namespace(selector: LabelSelector, namespace: str) -> bool:
    """Whether the selector picks this namespace by name (`kubernetes.io/metadata.name`, in
    matchLabels or an `In` expression), not merely by labels it happens to share with others."""
    if selector.match_labels.get(NAME_LABEL) == namespace:
        return True
    return any(
        requirement.key == NAME_LABEL
        and requirement.operator == "In"
        and namespace in requirement.values
        for requirement in selector.match_expressions
    )


def namespace_matches(
    spec: SidecarPolicySpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
    *,
    operator_namespace: str | None,
) -> bool:
    """The system namespaces and the operator's own match only a namespaceSelector that names
    them: `{}` or a broad label must not put sidecars into kube-system or into the operator."""
    selector = spec.namespace_selector
    protected = namespace in PROTECTED_NAMESPACES or namespace == operator_namespace
    if protected and (selector is None or not names_namespace(selector, namespace)):
        return False
    return selector is None or selector_matches(selector, namespace_labels)


def _opt_out_values(workload: Mapping[str, Any]) -> list[str]:
    metadata = workload.get("metadata", {})
    found = (
        (metadata.get("annotations") or {}).get(INJECT_KEY),
        (metadata.get("labels") or {}).get(INJECT_KEY),
    )
    return [value for value in found if value is not None]


def opted_out(workload: Mapping[str, Any]) -> bool:
    """`sidecars.dev/inject: "false"` (in any case) as an annotation or a label: other
    injectors' users reach for a label, and a label can be set from a kustomization's
    commonLabels."""
    return any(value.strip().lower() == "false" for value in _opt_out_values(workload))


def unclear_opt_out(workload: Mapping[str, Any]) -> str | None:
    """A `sidecars.dev/inject` value that is neither true nor false (`no`, `disabled`): not
    an opt-out, which its owner should be told; None when there is none."""
    return next(
        (v for v in _opt_out_values(workload) if v.strip().lower() not in ("true", "false")),
        None,
    )


def workload_matches(
    spec: SidecarPolicySpec,
    workload: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    *,
    operator_namespace: str | None,
) -> bool:
    """The contract's definition of a matched workload: of a kind the policy targets."""
    metadata = workload.get("metadata", {})
    return (
        WorkloadKind.of(workload) in spec.kinds
        and not opted_out(workload)
        and namespace_matches(
            spec,
            metadata.get("namespace", ""),
            namespace_labels,
            operator_namespace=operator_namespace,
        )
        and selector_matches(spec.selector, metadata.get("labels") or {})
    )
