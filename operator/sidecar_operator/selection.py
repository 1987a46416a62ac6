"""Which Deployments a policy selects. Pure: labels in, a decision out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar_operator.api import INJECT_ANNOTATION, LabelSelector, SidecarPolicySpec

# Matched only when a namespaceSelector names them explicitly.
PROTECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression must hold."""
    if any(labels.get(key) != value for key, value in selector.match_labels.items()):
        return False
    for requirement in selector.match_expressions:
        present = requirement.key in labels
        value = labels.get(requirement.key)
        holds = {
            "In": present and value in requirement.values,
            "NotIn": not present or value not in requirement.values,
            "Exists": present,
            "DoesNotExist": not present,
        }[requirement.operator]
        if not holds:
            return False
    return True


def namespace_matches(
    spec: SidecarPolicySpec,
    namespace: str,
    namespace_labels: Mapping[str, str],
    *,
    operator_namespace: str | None,
) -> bool:
    if spec.namespace_selector is None:
        return namespace not in PROTECTED_NAMESPACES and namespace != operator_namespace
    return selector_matches(spec.namespace_selector, namespace_labels)


def opted_out(deployment: Mapping[str, Any]) -> bool:
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(INJECT_ANNOTATION) == "false")


def deployment_matches(
    spec: SidecarPolicySpec,
    deployment: Mapping[str, Any],
    namespace_labels: Mapping[str, str],
    *,
    operator_namespace: str | None,
) -> bool:
    """The contract's definition of a matched Deployment."""
    metadata = deployment.get("metadata", {})
    return (
        not opted_out(deployment)
        and namespace_matches(
            spec,
            metadata.get("namespace", ""),
            namespace_labels,
            operator_namespace=operator_namespace,
        )
        and selector_matches(spec.selector, metadata.get("labels") or {})
    )
