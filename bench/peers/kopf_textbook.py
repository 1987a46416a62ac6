"""A textbook Kopf operator for the operator's job, as a Python team would write it first from
Kopf's documentation, with Kopf's defaults: the SidecarPolicy is read through an index, a new
Deployment gets its sidecars from an `on.create` handler's patch, and a created or changed policy
patches every Deployment it selects through the `kubernetes` client. Nothing takes a sidecar back
out when the policy goes. The peers bench runs it with `kopf run --all-namespaces`.
"""

from typing import Any

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "sidecars.dev", "v1alpha1", "sidecarpolicies"


@kopf.on.startup()
def configure(**_: Any) -> None:
    kubernetes.config.load_kube_config()


def selector(policy: kopf.Spec) -> str:
    labels = policy.get("selector", {}).get("matchLabels", {})
    return ",".join(f"{key}={value}" for key, value in labels.items())


def template_patch(policy: kopf.Spec, template: dict[str, Any]) -> dict[str, Any]:
    """The pod template with the policy's sidecars and volumes, and its mounts in the app."""
    sidecars = {container["name"] for container in policy.get("containers", [])}
    app = [c for c in template["spec"]["containers"] if c["name"] not in sidecars]
    mounts = list(policy.get("volumeMounts", []))
    app = [{**c, "volumeMounts": [*c.get("volumeMounts", []), *mounts]} for c in app]
    own = {volume["name"] for volume in policy.get("volumes", [])}
    volumes = [v for v in template["spec"].get("volumes", []) if v["name"] not in own]
    volumes += list(policy.get("volumes", []))
    containers = app + list(policy.get("containers", []))
    return {"spec": {"template": {"spec": {"containers": containers, "volumes": volumes}}}}


@kopf.index(GROUP, VERSION, PLURAL)
def policies(name: str, spec: kopf.Spec, **_: Any) -> dict[str, kopf.Spec]:
    return {name: spec}


@kopf.on.create("apps", "v1", "deployments")
def deployment_created(
    labels: kopf.Labels,
    spec: kopf.Spec,
    patch: kopf.Patch,
    policies: kopf.Index[str, kopf.Spec],
    **_: Any,
) -> None:
    for (policy,) in policies.values():
        wanted = policy.get("selector", {}).get("matchLabels", {})
        if all(labels.get(key) == value for key, value in wanted.items()):
            patch.update(template_patch(policy, dict(spec["template"])))


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def policy_changed(spec: kopf.Spec, logger: kopf.Logger, **_: Any) -> None:
    apps = kubernetes.client.AppsV1Api()
    listing = apps.list_deployment_for_all_namespaces(label_selector=selector(spec))
    deployments = apps.api_client.sanitize_for_serialization(listing)["items"]
    for deployment in deployments:
        metadata = deployment["metadata"]
        patch = template_patch(spec, deployment["spec"]["template"])
        apps.patch_namespaced_deployment(metadata["name"], metadata["namespace"], patch)
    logger.info(f"Patched {len(deployments)} Deployments")
