"""The names everything shares: the API's group, version and kind, and the names the operator
writes on workloads (its field managers, annotations and the opt-out key)."""

from __future__ import annotations

import re

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

# Which operator serves a policy: one run with `--shard` of this label's value; without the
# label, those run without `--shard`. Each shard holds policies by a finalizer of its own.
SHARD_LABEL = f"{GROUP}/shard"
FINALIZER = f"{GROUP}/cleanup"
# A shard's name ends its finalizer, whose part after the slash is at most 63 characters (the
# chart's values.schema.json holds the same pattern).
SHARD_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,53}[a-z0-9])?")


def finalizer(shard: str | None) -> str:
    """Kopf removes a finalizer of its name from an object it does not serve: one name for
    every shard would be added by one operator and removed by the others, write after write."""
    return FINALIZER if shard is None else f"{FINALIZER}-{shard}"
