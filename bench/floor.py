"""The floor under the churn scenario: the least a controller does for each new workload, in a
process of its own whose CPU the bench reads. One watch of the new Deployments, and for each one
without the sidecar one server-side apply of a body the planner made once (only its name and
namespace change). Whatever the operator spends per create above this is its own work.

`python -m bench.floor CLUSTER SELECTOR TAG`; says "watching" once listed, runs until killed."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bench.kube import Api
from bench.workload import POLICY, as_policy_object, deployment, policy
from sidecar_operator import devcluster
from sidecar_operator.api.models import Policy
from sidecar_operator.core import planner
from sidecar_operator.core.ownership import revision_annotation

# Not a policy's field manager: the operator, started after the floor, must not take the floor's
# Deployments for a deleted policy's and remove what it added.
MANAGER = "bench-floor"


def planned_body(tag: str) -> dict[str, Any]:
    """The policy's body for a Deployment of the benchmark's, planned once."""
    spec = Policy.from_object(as_policy_object(policy(tag), 1))
    template = deployment("any", "any", replicas=0, set_name="any")
    template["metadata"].update(resourceVersion="1", generation=1, uid="any")
    (action,) = planner.plan(template, {}, [spec])
    assert action.body is not None
    return action.body


async def serve(cluster: str, selector: str, tag: str) -> None:
    body = planned_body(tag)
    annotation = revision_annotation(POLICY)
    manager = MANAGER
    held: set[asyncio.Task[Any]] = set()
    async with Api(devcluster.Cluster.named(cluster)) as api:

        async def write(namespace: str, name: str) -> None:
            named = {**body, "metadata": {**body["metadata"], "name": name, "namespace": namespace}}
            path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
            await api.apply(path, named, manager=manager)

        listing = await api.request(
            "GET", "/apis/apps/v1/deployments", params={"labelSelector": selector}
        )
        version = listing["metadata"]["resourceVersion"]
        print("watching", flush=True)  # the bench starts creating now
        while True:
            params = {"watch": "true", "labelSelector": selector, "resourceVersion": version}
            async with api.session.get(
                api.base + "/apis/apps/v1/deployments", params=params
            ) as response:
                async for line in response.content:
                    event = json.loads(line)
                    metadata = event["object"]["metadata"]
                    version = metadata["resourceVersion"]
                    if event["type"] == "ADDED" and annotation not in (
                        metadata.get("annotations") or {}
                    ):
                        task = asyncio.create_task(write(metadata["namespace"], metadata["name"]))
                        held.add(task)
                        task.add_done_callback(held.discard)


if __name__ == "__main__":
    asyncio.run(serve(*sys.argv[1:4]))
