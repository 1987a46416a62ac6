"""The one command-line entry point, `sidecar-operator`."""

from __future__ import annotations

import logging
from typing import Any

import typer

from sidecar_operator import devcluster

app = typer.Typer(no_args_is_help=True, add_completion=False)
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
    cluster = devcluster.Cluster.named(name)
    if not devcluster.is_up(cluster):
        typer.echo(
            f"cluster {name!r} is not running; start it with `sidecar-operator dev up`", err=True
        )
        raise typer.Exit(1)
    typer.echo(cluster.export_line())


@dev.command("down")
def dev_down(name: str = ClusterName) -> None:
    """Stop every process `up` started and delete the cluster's data."""
    devcluster.down(devcluster.Cluster.named(name))


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
        60.0, min=1, help="How often every Deployment is checked for drift."
    ),
    peering: str | None = typer.Option(
        None,
        help="A ClusterKopfPeering name: replicas sharing it keep exactly one active. "
        "Without it the operator runs standalone.",
    ),
    liveness_port: int | None = typer.Option(
        None, help="Serve Kopf's health check on this port at /healthz."
    ),
    metrics_port: int | None = typer.Option(
        None, help="Serve Prometheus metrics on this port at /metrics."
    ),
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster config), cluster-wide."""
    import kopf

    from sidecar_operator import handlers, logs, metrics

    if log_format not in ("console", "json"):
        raise typer.BadParameter("use console or json", param_hint="--log-format")
    logs.configure(
        "json" if log_format == "json" else "console", logging.DEBUG if verbose else logging.INFO
    )
    handlers.Options.operator_namespace = operator_namespace
    handlers.Options.resync_seconds = resync_seconds
    handlers.Options.peering = peering
    if metrics_port:
        metrics.serve(metrics_port)
    # Naming a peering makes it mandatory in Kopf; without one, run standalone.
    peering_options: dict[str, Any] = {"peering_name": peering} if peering else {"standalone": True}
    kopf.run(
        clusterwide=True,
        liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None,
        **peering_options,
    )


@app.callback()
def main() -> None:
    """Adds, updates and removes sidecar containers on live Deployments."""
