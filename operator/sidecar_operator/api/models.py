"""The SidecarPolicy API (sidecars.dev/v1alpha1): the single source of truth for spec and status.

The CRD in `crds/` is generated from these models (`make crds`). Containers, volumes and mounts
are carried as the core/v1 objects they are: the models name only the fields the operator reads,
keep every other field as given, and the CRD embeds the real core/v1 schemas for them.
Cross-field rules are CEL expressions the API server enforces at `kubectl apply`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from sidecar_operator.api import names, placeholders, podsecurity, rules
from sidecar_operator.api.kinds import WorkloadKind

CORE_SCHEMA_KEY = "x-sidecars-core-v1"  # marks a model whose CRD schema comes from core/v1


def _keyed_by(*keys: str) -> dict[str, Any]:
    """A list the API server (and server-side apply) treats as a map keyed by these fields."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )


class _CoreObject(BaseModel):
    """A core/v1 object passed through untouched; the API server validates it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def to_api(self) -> dict[str, Any]:
        """The object as the API server takes it. Rendered once and shared by every body built
        from it (thousands in a rollout), so callers never modify it."""
        return self._rendered

    @cached_property
    def _rendered(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> Any:
        """The object for `item`, an object's `to_api()` with some strings replaced: `item` is
        what it renders (its unchanged parts stay shared with the original's)."""
        made = cls.model_validate(item)
        made.__dict__["_rendered"] = item  # where `cached_property` keeps it
        return made


class Container(_CoreObject):
    model_config = ConfigDict(json_schema_extra={CORE_SCHEMA_KEY: "Container"})

    name: str
    image: str


class Volume(_CoreObject):
    model_config = ConfigDict(json_schema_extra={CORE_SCHEMA_KEY: "Volume"})

    name: str


class VolumeMount(_CoreObject):
    model_config = ConfigDict(json_schema_extra={CORE_SCHEMA_KEY: "VolumeMount"})

    name: str
    mount_path: str = Field(alias="mountPath")


# What Kubernetes allows in a label's key and value. A selector with anything else can match no
# object, so the CRD refuses it at apply rather than leave a policy that silently selects nothing.
# Only the CRD checks them (OpenAPI patterns, free of CEL's cost budget): a policy stored before
# they existed must still load.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_VALUE_SCHEMA: JsonDict = {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE}


class LabelSelectorRequirement(_Model):
    key: str = Field(
        description="The label key the requirement applies to.",
        json_schema_extra={"maxLength": 317, "pattern": LABEL_KEY},
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list,
        max_length=256,
        description="Values for In and NotIn (non-empty there); empty for Exists and DoesNotExist.",
        json_schema_extra={"items": _LABEL_VALUE_SCHEMA},
    )


class LabelSelector(_Model):
    """A metav1.LabelSelector: all of matchLabels and matchExpressions must hold."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.matchExpressions) || self.matchExpressions.all(e, "
                    "e.operator in ['In', 'NotIn'] ? size(e.values) > 0 : size(e.values) == 0)",
                    "message": "matchExpressions: operators In and NotIn need values; "
                    "Exists and DoesNotExist take none",
                },
                {
                    "rule": f"!has(self.matchLabels) || self.matchLabels.all(k, "
                    f"size(k) <= 317 && k.matches(r'{LABEL_KEY}'))",
                    "message": "matchLabels: every key must be a label key (an optional DNS "
                    "prefix and '/', then at most 63 letters, digits, '-', '_' or '.')",
                },
            ]
        }
    )

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels that must all be present with these values.",
        json_schema_extra={"maxProperties": 64, "additionalProperties": _LABEL_VALUE_SCHEMA},
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Requirements that must all hold."
    )


# A Go duration of hours, minutes and seconds (`30s`, `10m`, `1h30m`), as `kubectl` takes them.
DURATION = r"^([0-9]+h([0-9]+m)?([0-9]+s)?|[0-9]+m([0-9]+s)?|[0-9]+s)$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Pause(_Model):
    """Where a rollout waits once a step's workloads are all updated and ready."""

    duration: str | None = Field(
        default=None,
        description="How long to wait (`30s`, `10m`, `1h30m`), counted from the moment the "
        "step's workloads were all ready (kept in status, so a restart keeps the clock). "
        "Without it the rollout waits until promoted (`kubectl sidecars rollout promote`).",
        json_schema_extra={"pattern": DURATION, "maxLength": 32},
    )

    @property
    def seconds(self) -> int | None:
        """The duration in seconds, or None: wait until promoted."""
        if self.duration is None:
            return None
        total, number = 0, ""
        for char in self.duration:
            if char.isdigit():
                number += char
            else:
                total += int(number) * {"h": 3600, "m": 60, "s": 1}[char]
                number = ""
        return total


class Step(_Model):
    """One wave: the workloads it adds to the rollout (to those of the steps before it), then
    an optional pause."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.selector) || has(self.namespaceSelector) || "
                    "has(self.percent)",
                    "message": "a step covers more workloads: give it a selector, a "
                    "namespaceSelector or a percent",
                }
            ]
        }
    )

    name: str | None = Field(
        default=None,
        description="Shown in status and Events; `promote` may name the step by it.",
        json_schema_extra={"maxLength": 63, "pattern": DNS_LABEL},
    )
    selector: LabelSelector | None = Field(
        default=None, description="Adds the matched workloads whose labels it selects."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Adds the matched workloads in the namespaces it selects."
    )
    percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Raises the rollout to this share of the matched workloads, picked in an "
        "order that is stable (seeded by the policy's uid: adding a workload reshuffles no "
        "other) and spread across namespaces.",
    )
    pause: Pause | None = Field(
        default=None,
        description="Wait once the step's workloads are all updated and ready: for a "
        "duration, or ({}) until promoted. Without it the next step follows at once.",
    )


class UpdateStrategy(_Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.steps.all(s, !has(s.name) || "
                    "self.steps.exists_one(t, has(t.name) && t.name == s.name))",
                    "message": "step names must be unique",
                }
            ]
        }
    )

    max_concurrent: int | str = Field(
        default="25%",
        description="How many matched workloads may be rolling out this policy's change at "
        "once: a positive integer, or a percentage of matched workloads from 1% to 100% "
        "(rounded up, at least 1). Default 25%.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "type(self) == int ? self >= 1 : self.matches('^([1-9][0-9]?|100)%$')",
                    "message": "maxConcurrent must be a positive integer or a percentage "
                    "from 1% to 100%",
                }
            ]
        },
    )
    paused: bool = Field(
        default=False,
        description="true stops the policy from touching further workloads; workloads "
        "already rolling out finish. Removal is never paused.",
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=1,
        description="A StatefulSet or DaemonSet still rolling out the policy's change this long "
        "after the policy wrote it halts the rollout, as a Deployment's own "
        "progressDeadlineSeconds does.",
    )
    steps: list[Step] = Field(
        default_factory=list,
        max_length=16,
        description="Waves: each step widens the set of workloads that get a new revision "
        "(cumulatively), then may pause; the workloads not yet covered keep the stable "
        "revision. The last step covers every workload, whatever it says. Without steps a "
        "change goes everywhere under maxConcurrent alone.",
    )

    @functools.cached_property
    def steps_hash(self) -> str:
        """Changing the steps starts a rollout over; so does a new revision. Kept: every pass
        asks for it."""
        canonical = json.dumps(
            [step.model_dump(mode="json", by_alias=True, exclude_none=True) for step in self.steps],
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]


# Keys a policy may not put on a pod template: the operator's own, and the labels the workload
# controllers set on every pod they make to select it (a template carrying one would break the
# controller's count of its pods). A workload's own selector labels are refused per workload
# (`core/planner`): the API knows no workload's selector at apply.
RESERVED_KEY = (
    rf"^([-a-z0-9.]*\.)?{re.escape(names.GROUP)}/|^(pod-template-hash|controller-revision-hash"
    r"|pod-template-generation)$"
)
# A templated label value: a label value, or label-value characters and placeholders (checked
# again once rendered for each workload, `core/values`).
_LABEL_CHARS = r"[-A-Za-z0-9_.]"
LABEL_TEMPLATE = (
    r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
    rf"|^{_LABEL_CHARS}*{placeholders.PLACEHOLDER_PATTERN}(?:{_LABEL_CHARS}|"
    rf"{placeholders.PLACEHOLDER_PATTERN})*$"
)


def _keys_rule(what: str) -> JsonDict:
    return {
        "rule": f"self.all(k, size(k) <= 317 && k.matches(r'{LABEL_KEY}') && "
        f"!k.matches(r'{RESERVED_KEY}'))",
        "message": f"podMetadata.{what}: every key must be a label key (an optional DNS prefix "
        "and '/', then at most 63 letters, digits, '-', '_' or '.'), and none may be "
        f"under {names.GROUP}/ or one the workload controllers set on their pods "
        "(pod-template-hash, controller-revision-hash, pod-template-generation)",
    }


class PodMetadata(_Model):
    """Labels and annotations a policy puts on the pod template (so on every pod), owned by
    its field manager like its sidecars."""

    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Pod labels. Values may name per-workload values (placeholders); a key "
        "the workload already sets to another value, or one of its selector's, is a conflict "
        "for that workload.",
        json_schema_extra={
            "maxProperties": 64,
            "additionalProperties": {"type": "string", "pattern": LABEL_TEMPLATE},
            "x-kubernetes-validations": [_keys_rule("labels")],
        },
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Pod annotations. Values may name per-workload values (placeholders); a "
        "key the workload already sets to another value is a conflict for that workload.",
        json_schema_extra={
            "maxProperties": 64,
            "additionalProperties": {"type": "string", "pattern": placeholders.VALUE},
            "x-kubernetes-validations": [_keys_rule("annotations")],
        },
    )


class Content(_Model):
    """What a policy puts into a pod template: its sidecars, init containers, volumes and
    mounts. A policy's spec holds one; its revision history keeps each past one (waves roll a
    new one out while the workloads not yet covered keep the stable one)."""

    containers: list[Container] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra=_keyed_by("name"),
        description="core/v1 Containers appended after the app's containers.",
    )
    init_containers: list[Container] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra=_keyed_by("name"),
        description="core/v1 Containers placed before the app's init containers; "
        "restartPolicy: Always makes one a native sidecar.",
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra=_keyed_by("name"),
        description="core/v1 Volumes added to the pod template.",
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list,
        max_length=32,
        json_schema_extra=_keyed_by("mountPath"),
        description="core/v1 VolumeMounts added to every container the app defines (not to "
        "sidecars added by policies). Each must name a volume from this policy's volumes.",
    )
    pod_metadata: PodMetadata | None = Field(
        default=None,
        description="Labels and annotations added to the pod template.",
    )

    @cached_property
    def baseline_violations(self) -> tuple[str, ...]:
        """What the baseline Pod Security level refuses among the sidecars and volumes: the
        API server rejects most of it at apply (unless allowPrivileged), the rest is found
        here."""
        return tuple(
            podsecurity.violations(
                podsecurity.Level.BASELINE,
                containers=[c.to_api() for c in (*self.containers, *self.init_containers)],
                volumes=[v.to_api() for v in self.volumes],
            )
        )

    # Set on a content rendered for one workload (`with_values`): the revision it renders, and
    # the values it was rendered with.
    _pinned: str = PrivateAttr(default="")
    _values: tuple[str, ...] = PrivateAttr(default=())

    @cached_property
    def revision(self) -> str:
        """A short stable hash of what the policy puts into a pod template (not of its selector,
        priority or update strategy, so changing those rolls nothing out). Computed once per
        content: every workload's plan compares against it. Of the placeholders, not of the
        values a workload gives them."""
        if self._pinned:
            return self._pinned
        canonical = json.dumps(self.to_api(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:10]

    @property
    def values(self) -> tuple[str, ...]:
        """The per-workload values it was rendered with (empty: the policy's own content)."""
        return self._values

    @cached_property
    def templates(self) -> tuple[tuple[tuple[str | int, ...], tuple[placeholders.Part, ...]], ...]:
        """Where the content names per-workload values: each templated string's place in
        `to_api()` and its parts. Only the fields the contract lists are read."""
        api = self.to_api()
        found = []
        templatable = placeholders.templatable(api)
        read = {place for place, _ in templatable}
        for place, text in placeholders.strings(api):
            if place not in read and (position := placeholders.first_placeholder(text)) is not None:
                raise placeholders.PlaceholderError(
                    text,
                    position,
                    "placeholders are read only in env values, args, command, the names "
                    "volumes refer to and podMetadata's values",
                    place,
                )
        for place, text in templatable:
            try:
                parts = placeholders.parse(text)
            except placeholders.PlaceholderError as error:
                raise placeholders.PlaceholderError(
                    text, error.position, error.reason, place
                ) from None
            if any(isinstance(part, placeholders.Placeholder) for part in parts):
                found.append((place, parts))
        return tuple(found)

    @property
    def pod_labels(self) -> Mapping[str, str]:
        return self.pod_metadata.labels if self.pod_metadata else {}

    @property
    def pod_annotations(self) -> Mapping[str, str]:
        return self.pod_metadata.annotations if self.pod_metadata else {}

    @cached_property
    def annotation_keys(self) -> frozenset[str]:
        """The annotations a workload's snapshot keeps for this content: those its placeholders
        name (on the workload) and those it sets (on the pod template)."""
        try:
            templates = self.templates
        except placeholders.PlaceholderError:
            templates = ()
        named = frozenset(
            part.key
            for _, parts in templates
            for part in parts
            if isinstance(part, placeholders.Placeholder)
            and part.source is placeholders.Source.ANNOTATIONS
        )
        return named | frozenset(self.pod_annotations)

    def with_values(self, rendered: dict[str, Any], values: tuple[str, ...]) -> Content:
        """`rendered` (this content's `to_api()`, values in, the items without any the very
        objects `to_api()` gave) as a content of this revision. Its items without values are
        this content's own, so a thousand workloads' contents share them; what the Pod Security
        Standards judge takes no values, so the violations are this content's too."""
        original = self.to_api()

        def items(key: str, models: list[Any], kind: type[_CoreObject]) -> list[Any]:
            return [
                model if item is before else kind.from_api(item)
                for model, item, before in zip(models, rendered[key], original[key], strict=True)
            ]

        metadata = rendered.get("podMetadata")
        content = Content.model_construct(
            containers=items("containers", self.containers, Container),
            init_containers=items("initContainers", self.init_containers, Container),
            volumes=items("volumes", self.volumes, Volume),
            volume_mounts=self.volume_mounts,
            pod_metadata=None if metadata is None else PodMetadata.model_validate(metadata),
        )
        content.__dict__["baseline_violations"] = self.baseline_violations
        content._pinned = self.revision
        content._values = values
        return content

    def to_api(self) -> dict[str, Any]:
        """The content as a policy's spec writes it (what a ControllerRevision keeps). Without
        podMetadata it is what it was before podMetadata existed: a revision stays the same."""
        api: dict[str, Any] = {
            "containers": [c.to_api() for c in self.containers],
            "initContainers": [c.to_api() for c in self.init_containers],
            "volumes": [v.to_api() for v in self.volumes],
            "volumeMounts": [m.to_api() for m in self.volume_mounts],
        }
        metadata = {"labels": dict(self.pod_labels), "annotations": dict(self.pod_annotations)}
        if any(metadata.values()):
            api["podMetadata"] = {key: value for key, value in metadata.items() if value}
        return api


class SidecarPolicySpec(Content):
    """What to add to every workload the policy selects."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "size(self.containers) + size(self.initContainers) + "
                    "size(self.volumes) + size(self.volumeMounts) > 0 || "
                    "(has(self.podMetadata) && (has(self.podMetadata.labels) && "
                    "size(self.podMetadata.labels) > 0 || has(self.podMetadata.annotations) && "
                    "size(self.podMetadata.annotations) > 0))",
                    "message": "a policy must add something: set at least one of containers, "
                    "initContainers, volumes, volumeMounts or podMetadata",
                },
                {
                    "rule": "self.containers.all(c, self.initContainers.all(i, i.name != c.name))",
                    "message": "a name is used in both containers and initContainers; "
                    "container names must be unique within a pod",
                },
                {
                    "rule": "self.volumeMounts.all(m, self.volumes.exists(v, v.name == m.name))",
                    "message": "every volumeMounts entry must name a volume defined in this "
                    "policy's volumes",
                },
                *rules.BASELINE_RULES,
            ]
        }
    )

    kinds: list[WorkloadKind] = Field(
        default_factory=lambda: [WorkloadKind.DEPLOYMENT],
        min_length=1,
        max_length=len(WorkloadKind),
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="The kinds of workload the policy targets. A CronJob's pod template is "
        "its jobTemplate's; regular containers are a conflict there (a Job would never "
        "finish): add native sidecars, init containers with restartPolicy: Always.",
    )
    selector: LabelSelector = Field(
        description="Selects workloads by their metadata.labels. Required; {} selects every "
        "workload of the targeted kinds in the matched namespaces (the policy then gets a "
        "Warning Event)."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Selects namespaces by their labels. Without it every namespace matches "
        "except kube-system, kube-public, kube-node-lease and the operator's own namespace.",
    )
    priority: int = Field(
        default=0,
        description="When two policies add a container, init container or volume of the same "
        "name to one workload, the higher priority wins; on a tie the older policy wins. "
        "The loser skips that workload.",
    )
    allow_privileged: bool = Field(
        default=False,
        description="Must be true for a policy to add anything the Pod Security Standards' "
        "baseline level refuses (privileged: true, capabilities beyond baseline's set, "
        "hostPath volumes, hostPort, procMount other than Default, Unconfined seccomp or "
        "AppArmor, custom SELinux options, hostProcess, probes or lifecycle handlers aimed at "
        "another host), or a sidecar with allowPrivilegeEscalation: true. A namespace "
        "enforcing a stricter Pod Security level still refuses such sidecars: its workloads "
        "are reported as conflicts.",
    )
    update_strategy: UpdateStrategy = Field(
        default_factory=UpdateStrategy,
        description="How fast a change rolls out across matched workloads.",
    )
    revision_history_limit: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="How many old revisions to keep as ControllerRevisions (for `kubectl "
        "sidecars rollout history` and `undo`), besides the stable and the current one.",
    )

    @cached_property
    def content(self) -> Content:
        """The content alone: what a ControllerRevision keeps of the spec."""
        return Content.model_validate(self.to_api())

    @property
    def privilege_violations(self) -> tuple[str, ...]:
        return () if self.allow_privileged else self.baseline_violations


class Condition(_Model):
    """A metav1.Condition."""

    type: str = Field(description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason for the last transition.")
    message: str = Field(default="", description="What a person should know, in words.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )


class StepStatus(_Model):
    """A step's workloads: those it covers (with the steps before it), updated and ready."""

    name: str | None = Field(default=None, description="The step's name, if it has one.")
    covered: int = Field(default=0, description="Matched workloads the step covers.")
    updated: int = Field(default=0, description="Covered workloads carrying the revision.")
    ready: int = Field(default=0, description="Updated workloads whose rollout finished.")


class SidecarPolicyStatus(_Model):
    """Where the policy's rollout stands."""

    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation this status describes."
    )
    revision: str | None = Field(
        default=None,
        description="Short hash of the current spec's rendered sidecar content; matched "
        "workloads carry it in annotation policy.sidecars.dev/<policy name>.",
    )
    matched_workloads: int = Field(
        default=0, description="Workloads of the targeted kinds the policy selects."
    )
    updated_workloads: int = Field(
        default=0, description="Matched workloads carrying the current revision."
    )
    ready_workloads: int = Field(
        default=0, description="Updated workloads whose rollout has finished."
    )
    conflicts: int = Field(
        default=0, description="Matched workloads skipped because of a conflict."
    )
    current_revision: str | None = Field(
        default=None,
        description="The stable revision: the last one every matched workload reached. "
        "Workloads a rollout's steps do not cover yet keep it.",
    )
    update_revision: str | None = Field(
        default=None, description="The revision rolling out (equal to revision)."
    )
    current_step: int | None = Field(
        default=None, description="Index into updateStrategy.steps of the step rolling out."
    )
    step_done_time: str | None = Field(
        default=None,
        description="When the current step's workloads were all updated and ready: a pause's "
        "duration runs from here (RFC 3339).",
    )
    steps_hash: str | None = Field(
        default=None,
        description="The steps the rollout was started with: changing them starts it over.",
    )
    steps: list[StepStatus] = Field(
        default_factory=list, description="Per step, the workloads it covers, updated and ready."
    )
    workload_kinds: list[WorkloadKind] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="The kinds of the workloads the policy selects or still has fields on. "
        "These kinds stay watched while listed here, so the sidecars on a kind dropped from "
        "spec.kinds are removed, across restarts too.",
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing and Degraded."
    )


PROMOTE_ANNOTATION = f"{names.GROUP}/promote"
ABORT_ANNOTATION = f"{names.GROUP}/abort"
CHANGE_CAUSE = "kubernetes.io/change-cause"


class Policy(BaseModel):
    """What the operator needs of one SidecarPolicy object: identity, age, spec, and what its
    annotations ask of its rollout."""

    model_config = ConfigDict(frozen=True)

    name: str
    uid: str = ""
    created: str = ""  # RFC 3339 creationTimestamp; sorts chronologically as text
    generation: int = 0
    deleting: bool = False
    spec: SidecarPolicySpec
    promote: str = ""  # `<updateRevision>/<step name or index>` or `<updateRevision>/all`
    abort: str = ""  # `<updateRevision>`
    change_cause: str = ""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Policy:
        metadata = obj.get("metadata", {})
        annotations = metadata.get("annotations") or {}
        return cls(
            name=metadata["name"],
            uid=metadata.get("uid") or "",
            created=metadata.get("creationTimestamp") or "",
            generation=metadata.get("generation") or 0,
            deleting=bool(metadata.get("deletionTimestamp")),
            spec=SidecarPolicySpec.model_validate(obj.get("spec") or {}),
            promote=annotations.get(PROMOTE_ANNOTATION, ""),
            abort=annotations.get(ABORT_ANNOTATION, ""),
            change_cause=annotations.get(CHANGE_CAUSE, ""),
        )

    @property
    def asked(self) -> tuple[int, str, str]:
        """What a user changes and then waits on: the spec (its generation), a promotion, an
        abort."""
        return (self.generation, self.promote, self.abort)

    @property
    def rank(self) -> tuple[int, str, str]:
        """Sorts the winner of a name clash first: higher priority, then older, then name."""
        return (-self.spec.priority, self.created, self.name)
