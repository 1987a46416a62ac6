"""The names everything shares: the API's group, version and kind, and the names the operator
writes on workloads (its field managers, annotations and the opt-out key)."""

from __future__ import annotations

GROUP = "sidecars.dev"
VERSION = "v1alpha1"
KIND = "SidecarPolicy"
PLURAL = "sidecarpolicies"
SINGULAR = "sidecarpolicy"
SHORT_NAMES = ("scp",)

FIELD_MANAGER_PREFIX = f"{GROUP}/"
REVISION_ANNOTATION_PREFIX = f"policy.{GROUP}/"
INJECT_KEY = f"{GROUP}/inject"  # opt-out, as an annotation or a label

# A policy's revision history: ControllerRevisions in the operator's namespace, labelled so.
HISTORY_POLICY_LABEL = f"{GROUP}/policy"
HISTORY_REVISION_LABEL = f"{GROUP}/revision"
HISTORY_STABLE_LABEL = f"{GROUP}/stable"  # "true" on the stable revision's
