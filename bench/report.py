"""The benchmark's output: a Markdown table, the JSON it came from, and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PHASES = ("inject", "update", "remove")


def _seconds(spread: dict[str, float]) -> str:
    return f"{spread['median']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def _max(runs: list[dict[str, Any]], key: str) -> str:
    values = sorted({run[key] for run in runs})
    return "/".join(str(v) for v in values)


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| N | phase | limit s | operator s | ratio | Deployment writes (limit / operator) "
        "| status writes | Deployment PUTs (limit / operator) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        for name in PHASES:
            phase = size["phases"][name]
            lines.append(
                f"| {size['n']} | {name} | {_seconds(phase['limit'])} "
                f"| {_seconds(phase['operator'])} | {phase['ratio']:.2f} "
                f"| {_max(phase['limit_runs'], 'deployment_writes')} / "
                f"{_max(phase['operator_runs'], 'deployment_writes')} "
                f"| {_max(phase['operator_runs'], 'status_writes')} "
                f"| {_max(phase['limit_runs'], 'deployment_puts')} / "
                f"{_max(phase['operator_runs'], 'deployment_puts')} |"
            )
    lines += [
        "",
        "| N | replicas | limit in flight | writes in 60 s at rest | writes after restart "
        "| peak RSS MB | CPU s per round | reaction p50 / p95 s | phase until settled s "
        "(limit / operator) |",
        "|---:|---:|---:|---|---|---:|---|---|---|",
    ]
    for size in results["sizes"]:
        reaction = size["reaction_seconds"]
        reacted = f"{reaction['p50']:.2f} / {reaction['p95']:.2f}" if reaction else "-"
        lines.append(
            f"| {size['n']} | {size['replicas']} | {size['limit_concurrency']} "
            f"| {_writes(size['idle_60s_writes'])} | {_writes(size['restart_writes'])} "
            f"| {size['peak_rss_mb']:.0f} "
            f"| {', '.join(f'{c:.0f}' for c in size['cpu_seconds_per_round'])} "
            f"| {reacted} "
            f"| {size['mean_settled_seconds']['limit']:.0f} / "
            f"{size['mean_settled_seconds']['operator']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _writes(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "-"
    return (
        f"{counts['deployment_writes']} Deployment, {counts['status_writes']} status, "
        f"{counts['policy_writes']} policy"
    )


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    sizes = results["sizes"]
    ns = [size["n"] for size in sizes]
    figure, axes = pyplot.subplots(1, len(PHASES), figsize=(12, 4), sharey=True)
    for axis, name in zip(axes, PHASES, strict=True):
        for who, style in (("limit", "o--"), ("operator", "s-")):
            medians = [size["phases"][name][who]["median"] for size in sizes]
            low = [
                m - size["phases"][name][who]["min"] for m, size in zip(medians, sizes, strict=True)
            ]
            high = [
                size["phases"][name][who]["max"] - m for m, size in zip(medians, sizes, strict=True)
            ]
            axis.errorbar(ns, medians, yerr=[low, high], fmt=style, capsize=3, label=who)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_title(name)
        axis.set_xlabel("Deployments")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds until the last Deployment carries it")
    axes[0].legend()
    figure.suptitle(
        f"Rollout time, median and range of {results['rounds']} runs ({results['machine']})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write(results: dict[str, Any], directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "results.md").write_text(table)
    plot(results, directory / "rollout.png")
    return table
