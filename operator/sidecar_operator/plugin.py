"""`kubectl sidecars rollout status|history|promote|undo|abort POLICY`: a policy's rollout, as
`kubectl rollout` shows and steers a Deployment's. Installed as the console script
`kubectl-sidecars` (a kubectl plugin, krew's naming), and as `sidecar-operator rollout`.

`promote` and `abort` are annotations on the policy that name its update revision (and step),
so a GitOps tool that owns the spec neither undoes nor fights them, and a later edit is never
promoted or aborted by an old one; `undo` writes an older revision's content back into the spec,
as `kubectl rollout undo` does (with GitOps, revert in Git instead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import typer
import yaml

from sidecar_operator.api import names
from sidecar_operator.api.models import ABORT_ANNOTATION, PROMOTE_ANNOTATION
from sidecar_operator.core import history
from sidecar_operator.core.stepping import ALL_STEPS

if TYPE_CHECKING:
    from sidecar_operator.kube.client import KubeApi

MANAGER = "kubectl-sidecars"

rollout = typer.Typer(help="A policy's rollout, as `kubectl rollout` does a Deployment's.")
PolicyName = typer.Argument(..., help="The SidecarPolicy.")


class Failed(Exception):
    """What the command could not do, said to the user; exit 1."""


def _run(work: Callable[[KubeApi], Awaitable[int]]) -> None:
    # Here, not at the top: `sidecar-operator dev ...` imports this module too, and needs no
    # API client (aiohttp: a third of a second of CPU to import).
    from sidecar_operator.kube.client import ApiError, KubeApi
    from sidecar_operator.kube.connection import NotConfigured

    async def main() -> int:
        api = await KubeApi.connect()
        try:
            return await work(api)
        finally:
            await api.close()

    try:
        code = asyncio.run(main())
    except Failed as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except ApiError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    except (ConnectionError, NotConfigured) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


async def _policy(api: KubeApi, name: str) -> dict[str, Any]:
    policy = await api.get_policy(name)
    if policy is None:
        raise Failed(f'sidecarpolicies.sidecars.dev "{name}" not found')
    return policy


async def _revisions(api: KubeApi, name: str) -> list[history.Revision]:
    found = [
        history.Revision.from_object(item)
        for item in await api.list_revisions(f"{names.HISTORY_POLICY_LABEL}={name}")
    ]
    return sorted((r for r in found if r is not None), key=lambda r: r.number)


def _annotate(key: str, value: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {key: value}}}


async def _patch(api: KubeApi, name: str, patch: dict[str, Any]) -> None:
    await api.patch_policy(name, patch, manager=MANAGER)


def describe(policy: Mapping[str, Any]) -> tuple[str, bool | None]:
    """One line on where the rollout stands, and whether it is over: True complete, False
    halted or aborted, None still under way (or not yet seen by the operator)."""
    name = policy["metadata"]["name"]
    status = policy.get("status") or {}
    if status.get("observedGeneration") != policy["metadata"].get("generation"):
        return f'Waiting for the operator to see sidecarpolicy "{name}"\'s change...', None
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready, progressing = conditions.get("Ready", {}), conditions.get("Progressing", {})
    revision = status.get("updateRevision") or status.get("revision")
    if ready.get("status") == "True":
        matched = status.get("matchedWorkloads", 0) - status.get("conflicts", 0)
        line = f'sidecarpolicy "{name}" successfully rolled out revision {revision}'
        return f"{line} to {matched} workloads", True
    reason = progressing.get("reason", "")
    message = progressing.get("message", "")
    if reason in ("RolloutHalted", "Aborted"):
        return f'sidecarpolicy "{name}": {message}', False
    return f'Waiting for sidecarpolicy "{name}" rollout to finish: {message}', None


@rollout.command("status")
def status(
    name: str = PolicyName,
    watch: bool = typer.Option(True, "--watch/--no-watch", "-w", help="Follow it until done."),
    timeout: float = typer.Option(0, help="Give up after this many seconds (0: never)."),
) -> None:
    """Follow the rollout: exit 0 once complete, 1 if halted or aborted (or timed out)."""

    async def work(api: KubeApi) -> int:
        deadline = time.monotonic() + timeout if timeout else None
        last = ""
        while True:
            line, done = describe(await _policy(api, name))
            if line != last:
                typer.echo(line)
                last = line
            if done is not None:
                return 0 if done else 1
            if not watch:
                return 0
            if deadline is not None and time.monotonic() > deadline:
                raise Failed("timed out waiting for the rollout to finish")
            await asyncio.sleep(1.0)

    _run(work)


@rollout.command("history")
def show_history(
    name: str = PolicyName,
    revision: int | None = typer.Option(None, help="Show this revision's content."),
) -> None:
    """The policy's revisions, as its ControllerRevisions keep them."""

    async def work(api: KubeApi) -> int:
        policy = await _policy(api, name)
        status = policy.get("status") or {}
        revisions = await _revisions(api, name)
        if revision is not None:
            chosen = next((r for r in revisions if r.number == revision), None)
            if chosen is None:
                raise Failed(f"no revision {revision} of sidecarpolicy {name}")
            typer.echo(yaml.safe_dump(chosen.content.to_api(), sort_keys=False), nl=False)
            return 0
        typer.echo(f"sidecarpolicy.sidecars.dev/{name}")
        typer.echo(f"{'REVISION':<10}{'HASH':<13}{'STATE':<10}CHANGE-CAUSE")
        for entry in revisions:
            state = (
                "stable"
                if entry.revision == status.get("currentRevision")
                else "rolling"
                if entry.revision == status.get("updateRevision")
                else ""
            )
            typer.echo(
                f"{entry.number:<10}{entry.revision:<13}{state:<10}{entry.cause or '<none>'}"
            )
        return 0

    _run(work)


@rollout.command("promote")
def promote(
    name: str = PolicyName,
    full: bool = typer.Option(False, "--full", help="Skip every remaining step."),
) -> None:
    """Lift the current step's pause (or, with --full, go straight to every workload)."""

    async def work(api: KubeApi) -> int:
        policy = await _policy(api, name)
        status = policy.get("status") or {}
        revision = status.get("updateRevision")
        if not revision or status.get("currentRevision") == revision:
            raise Failed(f"sidecarpolicy {name} has no rollout under way to promote")
        step = ALL_STEPS if full else str(status.get("currentStep") or 0)
        await _patch(api, name, _annotate(PROMOTE_ANNOTATION, f"{revision}/{step}"))
        typer.echo(f"sidecarpolicy.sidecars.dev/{name} promoted")
        return 0

    _run(work)


@rollout.command("abort")
def abort(name: str = PolicyName) -> None:
    """Send every workload back to the stable revision, and hold this one until the spec
    changes."""

    async def work(api: KubeApi) -> int:
        status = (await _policy(api, name)).get("status") or {}
        revision = status.get("updateRevision")
        if not revision:
            raise Failed(f"sidecarpolicy {name} has no rollout to abort")
        await _patch(api, name, _annotate(ABORT_ANNOTATION, revision))
        typer.echo(f"sidecarpolicy.sidecars.dev/{name} aborted")
        return 0

    _run(work)


@rollout.command("undo")
def undo(
    name: str = PolicyName,
    to_revision: int | None = typer.Option(
        None, "--to-revision", help="The revision to go back to (default: the one before)."
    ),
) -> None:
    """Write an older revision's content back into the policy's spec."""

    async def work(api: KubeApi) -> int:
        status = (await _policy(api, name)).get("status") or {}
        current = status.get("updateRevision") or status.get("revision") or ""
        target = history.undo_target(
            await _revisions(api, name), current=current, to_number=to_revision
        )
        if target is None:
            wanted = f"revision {to_revision}" if to_revision else "a previous revision"
            raise Failed(f"sidecarpolicy {name} has no {wanted}")
        await _patch(api, name, {"spec": target.content.to_api()})
        typer.echo(f"sidecarpolicy.sidecars.dev/{name} rolled back to revision {target.number}")
        return 0

    _run(work)


plugin = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SidecarPolicy rollouts.",
    pretty_exceptions_show_locals=False,  # as the operator's: no credentials in tracebacks
)
plugin.add_typer(rollout, name="rollout")
