"""The one command-line entry point, `sidecar-operator`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from sidecar_operator.devcluster import Cluster

from sidecar_operator.plugin import rollout

# No locals in tracebacks: a request's headers (its bearer token) would be printed to the log.
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.add_typer(rollout, name="rollout")  # also `kubectl sidecars rollout`
dev = typer.Typer(
    help="A local Kubernetes control plane for development and tests.", no_args_is_help=True
)
app.add_typer(dev, name="dev")

ClusterName = typer.Option("dev", "--name", help="Which local cluster (each has its own ports).")


@dev.command("up")
def dev_up(
    name: str = ClusterName,
    nodes: int = typer.Option(3, min=1, help="How many kwok Nodes to create."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for each component."),
) -> None:
    """Start the cluster, or reuse it if it runs; prints `export KUBECONFIG=...` last."""
    from sidecar_operator import devcluster  # here, not at the top: never on the run path

    cluster = devcluster.Cluster.named(name)
    try:
        devcluster.up(cluster, nodes=nodes, timeout=timeout)
    except (devcluster.ClusterError, devcluster.BinariesError) as error:
        typer.echo(f"dev up failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(cluster.export_line())


@dev.command("env")
def dev_env(name: str = ClusterName) -> None:
    """Print the `export KUBECONFIG=...` line of a running cluster."""
    typer.echo(_running_cluster(name).export_line())


def _running_cluster(name: str) -> Cluster:
    """The named local cluster, which must be up."""
    from sidecar_operator import devcluster

    cluster = devcluster.Cluster.named(name)
    if not devcluster.is_up(cluster):
        typer.echo(
            f"cluster {name!r} is not running; start it with `sidecar-operator dev up`", err=True
        )
        raise typer.Exit(1)
    return cluster


@dev.command("down")
def dev_down(name: str = ClusterName) -> None:
    """Stop every process `up` started and delete the cluster's data."""
    from sidecar_operator import devcluster

    devcluster.down(devcluster.Cluster.named(name))


@dev.command("webhook")
def dev_webhook(
    manifest: Path = typer.Option(
        Path("manifests/webhook.yaml"), exists=True, help="The webhook configuration to point."
    ),
    port: int = typer.Option(9443, help="Where `run --webhook-port` serves on this host."),
    name: str = ClusterName,
) -> None:
    """Print the webhook configuration for an operator on this host (pipe it to `kubectl apply
    -f -`), and lay out its certificate for `run --webhook-certs`."""
    import yaml

    from sidecar_operator.devcluster import admission

    cluster = _running_cluster(name)
    certs = admission.certs(cluster)
    typer.echo(f"dev: serve it with --webhook-port {port} --webhook-certs {certs}", err=True)
    typer.echo(yaml.safe_dump(admission.configuration(cluster, manifest, port=port)))


@dev.command("restart")
def dev_restart(
    component: str = typer.Argument(..., help="etcd, kube-apiserver, kube-controller-manager..."),
    name: str = ClusterName,
    down_for: float = typer.Option(10.0, min=0, help="Seconds the component stays stopped."),
) -> None:
    """Stop one component of a running cluster and start it again: an outage to ride out."""
    from sidecar_operator import devcluster

    try:
        devcluster.restart(devcluster.Cluster.named(name), component, down_for=down_for)
    except devcluster.ClusterError as error:
        typer.echo(f"dev restart failed: {error}", err=True)
        raise typer.Exit(1) from None


@app.command("run")
def run(
    log_format: str = typer.Option(
        "console", envvar="SIDECAR_OPERATOR_LOG_FORMAT", help="console (key=value) or json."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logs."),
    operator_namespace: str | None = typer.Option(
        None,
        envvar="OPERATOR_NAMESPACE",
        help="The operator's own namespace, never matched without a namespaceSelector.",
    ),
    resync_seconds: float = typer.Option(
        60.0, min=1, help="How often every workload is checked for drift."
    ),
    peering: str | None = typer.Option(
        None,
        help="A ClusterKopfPeering name: of the replicas sharing it, the oldest alive is active "
        "and the others stand by. Without it the operator runs standalone.",
    ),
    liveness_port: int | None = typer.Option(
        None, help="Serve Kopf's health check on this port at /healthz."
    ),
    metrics_port: int | None = typer.Option(
        None, help="Serve Prometheus metrics on this port at /metrics."
    ),
    webhook_port: int | None = typer.Option(
        None,
        help="Serve the mutating admission webhook on this port (HTTPS, path "
        "/inject.sidecars.dev), so new workloads are stored with their sidecars.",
    ),
    webhook_certs: Path | None = typer.Option(
        None,
        file_okay=False,
        help="With --webhook-port: a directory with tls.crt, tls.key and ca.crt (a TLS Secret).",
    ),
    webhook_secret: str | None = typer.Option(
        None,
        help="With --webhook-port, instead of --webhook-certs: a Secret in the operator's "
        "namespace holding the certificate every replica serves; the first replica creates it.",
    ),
    webhook_service: str = typer.Option(
        "sidecar-operator-webhook", help="The Service the generated certificate is for."
    ),
    webhook_configuration: str | None = typer.Option(
        None,
        help="The MutatingWebhookConfiguration whose caBundle gets the Secret's CA.",
    ),
    shard: str | None = typer.Option(
        None,
        help="Serve only the SidecarPolicies labelled sidecars.dev/shard=SHARD (without it: "
        "only those without the label); what other policies added is never touched. Shards "
        "must not select the same workloads, and each needs a --peering of its own.",
    ),
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster config), cluster-wide."""
    import kopf

    from sidecar_operator import handlers, logs, metrics
    from sidecar_operator.api import names
    from sidecar_operator.engine.leadership import Identity

    if log_format not in ("console", "json"):
        raise typer.BadParameter("use console or json", param_hint="--log-format")
    logs.configure(
        "json" if log_format == "json" else "console", logging.DEBUG if verbose else logging.INFO
    )
    identity = Identity.of_this_process()
    webhook = None
    if webhook_port is not None:
        if (webhook_certs is None) == (webhook_secret is None):
            raise typer.BadParameter(
                "needs one of --webhook-certs and --webhook-secret", param_hint="--webhook-port"
            )
        webhook = handlers.Webhook(
            webhook_port, webhook_certs, webhook_secret, webhook_service, webhook_configuration
        )
    if shard is not None and not names.SHARD_NAME.fullmatch(shard):
        raise typer.BadParameter(
            "a DNS label of at most 55 characters: lowercase letters, digits and '-'",
            param_hint="--shard",
        )
    options = handlers.Options(
        identity, operator_namespace, resync_seconds, peering, webhook, shard=shard
    )
    if metrics_port:
        metrics.serve(metrics_port)
    # Naming a peering makes it mandatory in Kopf (it starts paused until it has seen its peers);
    # without one, run standalone.
    peering_options: dict[str, Any] = (
        {"peering_name": peering, "identity": identity.name, "priority": identity.priority}
        if peering
        else {"standalone": True}
    )
    kopf.run(
        clusterwide=True,
        memo=kopf.Memo(options=options),
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
        **peering_options,
    )


@app.command("preview")
def preview_command(
    file: Path = typer.Option(
        ...,
        "-f",
        "--filename",
        exists=True,
        dir_okay=False,
        help="The SidecarPolicy manifest to preview.",
    ),
    workloads: Path | None = typer.Option(
        None,
        "--workloads",
        "--deployments",
        exists=True,
        help="Read workloads of every kind (and Namespaces) from these manifest files "
        "instead of the current cluster: works offline.",
    ),
    operator_namespace: str | None = typer.Option(None, envvar="OPERATOR_NAMESPACE"),
) -> None:
    """Show, read-only, what a policy would change: the workloads it matches, a diff of each
    pod template, and the conflicts. Exit code 1 if there are conflicts, 2 if it could not
    preview (an invalid policy, no cluster to read)."""
    from sidecar_operator import preview
    from sidecar_operator.api.models import Policy
    from sidecar_operator.api.names import KIND

    try:
        policies = [d for d in preview.load_documents(file) if d.get("kind") == KIND]
    except preview.Unreadable as error:
        _cannot_preview(str(error))
    if len(policies) != 1:
        raise typer.BadParameter(
            f"expected one {KIND} in the file, found {len(policies)}", param_hint="-f"
        )
    try:
        policy = Policy.from_object(policies[0])
    except ValueError as error:
        _cannot_preview(f"invalid {KIND}: {error}")
    others: list[Policy] = []
    if workloads is not None:
        try:
            documents = preview.load_documents(workloads)
        except preview.Unreadable as error:
            _cannot_preview(str(error))
        objects = [d for d in documents if preview.is_workload(d)]
        namespaces = [d for d in documents if d.get("kind") == "Namespace"]
    else:
        from sidecar_operator.kube.client import ApiError, read_cluster
        from sidecar_operator.kube.connection import NotConfigured

        try:
            objects, namespaces, existing = asyncio.run(read_cluster())
        except ApiError as error:
            _cannot_preview(error.message)
        except (ConnectionError, NotConfigured) as error:
            _cannot_preview(str(error))
        others = [Policy.from_object(p) for p in existing]
    labels = {
        n["metadata"]["name"]: {
            "kubernetes.io/metadata.name": n["metadata"]["name"],
            **(n["metadata"].get("labels") or {}),
        }
        for n in namespaces
    }
    entries = preview.preview(
        policy, objects, labels, other_policies=others, operator_namespace=operator_namespace
    )
    typer.echo(preview.report(entries), nl=False)
    if any(entry.conflict for entry in entries):
        raise typer.Exit(1)


def _cannot_preview(message: str) -> NoReturn:
    """Exit 2: preview's 1 says there are conflicts."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.callback()
def main() -> None:
    """Adds, updates and removes sidecar containers on live workloads."""
