"""The benchmark's output: Markdown tables, the JSON they came from, and a plot of the sizes."""

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
    sections = [
        [
            f"At commit `{results['commit']}`, {results['date']}, {results['machine']}, "
            f"{results['rounds']} rounds, {results['seconds']} s in all."
        ]
    ]
    if results["sizes"]:
        sections.append(_sizes(results["sizes"]))
    if results.get("many"):
        sections.append(_many(results["many"]))
    if results.get("admission"):
        sections.append(_admission(results["admission"]))
    if results.get("peers"):
        sections.append(_peers(results["peers"]))
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


def _sizes(sizes: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | phase | limit s | operator s | ratio | Deployment writes (limit / operator) "
        "| status writes | Deployment PUTs (limit / operator) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
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
    for size in sizes:
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
    return lines


def _admission(result: dict[str, Any]) -> list[str]:
    """Admission's figures against its targets (see bench/admission.py)."""
    without, admitted = result["create_ms"]["without"], result["create_ms"]["with"]
    webhook, sets = result["webhook_ms"], result["replica_sets"]
    calls = ", ".join(f"{count:.0f} {bound}" for bound, count in result["webhook_calls"].items())
    return [
        f"| admission: {result['creates']} creates, {result['at_once']} at once "
        "| without webhook | with webhook | target | met |",
        "|---|---:|---:|---|---|",
        f"| webhook call p50 / p99, ms (API server) | - | {webhook['p50']:g} / {webhook['p99']:g} "
        f"| p99 < {result['target_p99_ms']:g} | {_met(result['latency_met'])} |",
        f"| create p50 / p99, ms (client) | {without['p50']:g} / {without['p99']:g} "
        f"| {admitted['p50']:g} / {admitted['p99']:g} | - | - |",
        f"| ReplicaSets of {result['n']} new Deployments | {sets['without']} | {sets['with']} "
        f"| {result['n']} with | {_met(result['replica_sets_met'])} |",
        "",
        f"The API server's histogram of the webhook calls (cumulative): {calls}.",
    ]


def _peers(peers: list[dict[str, Any]]) -> list[str]:
    """Each peer's phases (see bench/peers/scenario.py); the operator's are in the sizes table."""
    lines = [
        "| peer | N | inject s | update s | Deployment writes (inject / update) "
        "| other writes (inject / update) | CPU s (inject / update) "
        "| still carrying after removal | writes in 60 s at rest | CPU s per round | peak RSS MB |",
        "|---|---:|---:|---:|---|---|---|---|---|---|---:|",
    ]
    for peer in peers:
        phases = peer["phases"]

        def writes(phase: str, key: str, phases: dict[str, Any] = phases) -> str:
            return "/".join(str(v) for v in sorted({run[key] for run in phases[phase]["runs"]}))

        def cpu(phase: str, phases: dict[str, Any] = phases) -> str:
            return "/".join(f"{run['cpu_seconds']:.1f}" for run in phases[phase]["runs"])

        rest = "/".join(str(int(sum(counts.values()))) for counts in peer["rest_writes"])
        lines.append(
            f"| {peer['peer']} | {peer['n']} | {_seconds(phases['inject']['seconds'])} "
            f"| {_seconds(phases['update']['seconds'])} "
            f"| {writes('inject', 'deployment_writes')} / {writes('update', 'deployment_writes')} "
            f"| {writes('inject', 'other_writes')} / {writes('update', 'other_writes')} "
            f"| {cpu('inject')} / {cpu('update')} "
            f"| {'/'.join(map(str, peer['removal_left']))} of {peer['n']} "
            f"| {rest} | {', '.join(f'{c:.0f}' for c in peer['cpu_seconds_per_round'])} "
            f"| {peer['peak_rss_mb']:.0f} |"
        )
    return lines


def _met(met: bool) -> str:
    return "yes" if met else "NO"


def _many(many: dict[str, Any]) -> list[str]:
    """Each measurement against its target, and whether it was met (see bench/many.py)."""
    phases = many["phases"]

    def phase(name: str, label: str) -> str:
        p = phases[name]
        target = f"<= {p['target_ratio']}x limit" if "target_ratio" in p else "-"
        met = ("yes" if p["met"] else "NO") if "met" in p else "-"
        return (
            f"| {label} | {_seconds(p['limit'])} | {_seconds(p['operator'])} | {p['ratio']:.2f} "
            f"| {target} | {met} | {_max(p['limit_runs'], 'deployment_writes')} / "
            f"{_max(p['operator_runs'], 'deployment_writes')} |"
        )

    def alone(label: str, value: str, target: str, met: bool) -> str:
        return f"| {label} | - | {value} | - | {target} | {'yes' if met else 'NO'} | - |"

    restart, writes = many["restart_seconds"], many["restart_writes"]
    rss, cpu = many["peak_rss_mb"], many["rest_cpu_seconds"]
    rest = many["rest_writes"]
    return [
        f"| {many['policies']} policies over {many['n']} Deployments: {many['pairs']} "
        f"(policy, Deployment) pairs injected, {many['skipped_pairs']} lost to a higher priority "
        "| limit s | operator s | ratio | target | met | Deployment writes (limit / operator) |",
        "|---|---:|---:|---:|---|---|---:|",
        phase("inject", "inject: every policy applied"),
        phase(
            "image",
            f"image change of {many['changed_policy']} ({many['changed_deployments']} Deployments)",
        ),
        phase("remove", "remove: every policy deleted"),
        alone(
            "restart: Deployment writes",
            "/".join(str(r["deployment_writes"]) for r in writes["runs"]),
            f"{writes['target']:.0f}",
            writes["met"],
        ),
        alone(
            "restart: every policy's first pass, s",
            _seconds(restart),
            f"<= {restart['target']:.0f}",
            restart["met"],
        ),
        alone("peak RSS, MB", f"{rss['max']:.0f}", f"<= {rss['target']:.0f}", rss["met"]),
        alone(
            f"CPU s in {cpu['window_seconds']:.0f} s at rest",
            _seconds(cpu),
            f"< {cpu['target']}",
            cpu["met"],
        ),
        alone(
            f"Deployment writes in {cpu['window_seconds']:.0f} s at rest",
            "/".join(str(r["deployment_writes"]) for r in rest["runs"]),
            f"{rest['target']:.0f}",
            rest["met"],
        ),
    ]


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


def files(results: dict[str, Any]) -> list[str]:
    """What `write` writes: the plot is of the sizes, and a run of many policies alone has none."""
    return ["results.json", "results.md"] + (["rollout.png"] if results["sizes"] else [])


def write(results: dict[str, Any], directory: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "results.md").write_text(table)
    if results["sizes"]:
        plot(results, directory / "rollout.png")
    return table
