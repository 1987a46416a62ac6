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
    if results.get("defaults"):
        sections.append(_defaults(results["defaults"]))
    if results.get("waves"):
        sections.append(_waves(results["waves"]))
    if results.get("values"):
        sections.append(_values(results["values"]))
    if results.get("churn"):
        sections.append(_churn(results["churn"]))
    if results.get("admission_latency"):
        sections.append(_latency(results["admission_latency"]))
    compared = [size for size in results["sizes"] if size.get("peers")]
    if compared:
        sections += [_side_by_side(compared), _peers(compared), _peer_targets(compared)]
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


def _defaults(result: dict[str, Any]) -> list[str]:
    """At rest with every optional field at its empty or default value (bench/defaults.py)."""
    return [
        f"| every default: N={result['n']} | injected in | writes in {result['rest_seconds']} s "
        "at rest | target | met |",
        "|---|---:|---|---|---|",
        f"| one policy, every optional field empty or default | {result['inject_seconds']:g} s "
        f"| {_writes(result['rest_writes'])} | 0 Deployment, 0 status | {_met(result['met'])} |",
    ]


def _waves(result: dict[str, Any]) -> list[str]:
    """Each step of a rollout in steps against a one-step rollout of as many (bench/waves.py)."""
    lines = [
        f"| waves: N={result['n']}, step (median of {result.get('rounds', 1)}) | step s "
        "| one step of as many s | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for index, (step, peer, ratio) in enumerate(
        zip(result["step_seconds"], result["one_step_seconds"], result["ratios"], strict=True)
    ):
        met = _met(ratio <= result["target_ratio"])
        lines.append(
            f"| {index + 1} | {step:g} | {peer:g} | {ratio:.2f} "
            f"| <= {result['target_ratio']:g} | {met} |"
        )
    return lines


def _values(result: dict[str, Any]) -> list[str]:
    """A placeholder policy against the limit and a plain policy (bench/values.py)."""
    inject_met = _met(result["inject_ratio"] <= result["inject_target"])
    rss_met = _met(result["rss_ratio"] <= result["rss_target"])
    templated_rss = " / ".join(f"{r:g}" for r in result["templated_peak_rss_mb"])
    plain_rss = " / ".join(f"{r:g}" for r in result["plain_peak_rss_mb"])
    return [
        f"| per-workload values: N={result['n']} | placeholder policy | against | ratio "
        "| target | met |",
        "|---|---:|---:|---:|---|---|",
        f"| inject, s (the limit: the same bodies) | {result['templated_inject_seconds']:g} "
        f"| {result['limit_inject_seconds']:g} | {result['inject_ratio']:.2f} "
        f"| <= {result['inject_target']:g} | {inject_met} |",
        f"| peak RSS, MB (a plain policy's operator) | {templated_rss} | {plain_rss} "
        f"| {result['rss_ratio']:.2f} | <= {result['rss_target']:g} | {rss_met} |",
        f"| plain policy's inject, s (the limit) | {result['plain_inject_seconds']:g} "
        f"| {result['limit_inject_seconds']:g} | {result['plain_inject_ratio']:.2f} | - | - |",
    ]


CHURN_P95_AT_5000 = 0.3  # seconds
CHURN_FLAT = 1.5  # p95 at the largest N against N=1000's
CHURN_CPU_MS = 5.0  # operator CPU per create


def _churn(results: list[dict[str, Any]]) -> list[str]:
    """Reaction to new Deployments created 20 a second beside N at rest (bench/churn.py): the
    operator's and the floor's (one watch, one apply each), with the issue's targets."""
    lines = [
        "| churn N | who | creates | p50 s | p95 s | max s | CPU ms per create "
        "| passes per create | target | met |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    base = next((r["operator"]["p95"] for r in results if r["n"] == 1000), None)
    for result in results:
        for who in ("floor", "operator"):
            churned = result[who]
            target, met = "", ""
            if who == "operator":
                targets = [f"CPU <= {CHURN_CPU_MS:g} ms"]
                ok = churned["cpu_ms_per_create"] <= CHURN_CPU_MS
                if result["n"] == 5000:
                    targets.append(f"p95 <= {CHURN_P95_AT_5000:g} s")
                    ok = ok and churned["p95"] <= CHURN_P95_AT_5000
                elif result["n"] > 5000 and base is not None:
                    targets.append(f"p95 <= {CHURN_FLAT:g} x N=1000's")
                    ok = ok and churned["p95"] <= CHURN_FLAT * base
                target, met = ", ".join(targets), _met(ok)
            lines.append(
                f"| {result['n']} | {who} | {churned['creates']} | {churned['p50']:g} "
                f"| {churned['p95']:g} | {churned['max']:g} | {churned['cpu_ms_per_create']:g} "
                f"| {churned.get('passes_per_create') or '-'} | {target} | {met} |"
            )
    lines.append("")
    lines += ["| churn N | first injection s | operator RSS at rest MB |", "|---:|---:|---:|"]
    for result in results:
        lines.append(
            f"| {result['n']} | {result['inject_seconds']:g} | {result['operator_rss_mb']:g} |"
        )
    return lines


def _latency(results: list[dict[str, Any]]) -> list[str]:
    """The webhook's calls, as the API server times them, against a trivial webhook's in the
    same run (bench/admission.py `run_latency`)."""
    lines = [
        "| admission, N existing | trivial webhook p50 / p99 ms | operator p50 / p99 ms "
        "| ratios | create p50 / p99 ms (trivial / operator) | target | met |",
        "|---:|---:|---:|---:|---:|---|---|",
    ]
    for result in results:
        floor, operator = result["webhook_ms"]["floor"], result["webhook_ms"]["operator"]
        creates = result["create_ms"]
        ratios = " / ".join(f"{value:g}" for value in result["ratios"].values())
        lines.append(
            f"| {result['n']} | {floor['p50']:g} / {floor['p99']:g} "
            f"| {operator['p50']:g} / {operator['p99']:g} | {ratios} "
            f"| {creates['floor']['p50']:g} / {creates['floor']['p99']:g}, "
            f"{creates['operator']['p50']:g} / {creates['operator']['p99']:g} "
            f"| <= {result['target_ratio']:g}x | {_met(result['met'])} |"
        )
    return lines


def _side_by_side(sizes: list[dict[str, Any]]) -> list[str]:
    """Each phase's seconds for the limit, the operator and each peer, alternated in one session
    on one cluster; a peer's removal is what it left behind (see bench/peers/scenario.py)."""
    names = [peer["peer"] for peer in sizes[0]["peers"]]
    lines = [
        "| N | phase | limit s | operator s | " + " | ".join(f"{n} s" for n in names) + " |",
        "|---:|---|" + "---:|" * (2 + len(names)),
    ]
    for size in sizes:
        for name in PHASES:
            phase = size["phases"][name]
            cells = [_seconds(phase["limit"]), _seconds(phase["operator"])]
            for peer in size["peers"]:
                if name == "remove":
                    left = "/".join(map(str, peer["removal_left"]))
                    cells.append(
                        f"{left} of {size['n']} left {peer['removal_wait_seconds']:.0f} s on"
                    )
                else:
                    cells.append(_seconds(peer["phases"][name]["seconds"]))
            lines.append(f"| {size['n']} | {name} | " + " | ".join(cells) + " |")
    return lines


def _as_peer(size: dict[str, Any]) -> dict[str, Any]:
    """The operator's figures at one size in the shape of a peer's summary."""
    idle = size["idle_60s_writes"]
    return {
        "peer": "operator",
        "n": size["n"],
        "phases": {
            name: {"runs": size["phases"][name]["operator_runs"]} for name in ("inject", "update")
        },
        "removal_left": [0] * len(size["phases"]["remove"]["operator_runs"]),
        "rest_writes": [idle["deployment_writes"] + idle["other_writes"]] if idle else [],
        "cpu_seconds_per_round": size["cpu_seconds_per_round"],
        "peak_rss_mb": size["peak_rss_mb"],
    }


def _peers(sizes: list[dict[str, Any]]) -> list[str]:
    """The writes and the cost of each phase, the operator's beside the peers'."""
    lines = [
        "| who | N | Deployment writes (inject / update) | other writes (inject / update) "
        "| CPU s (inject / update) | still carrying after removal | writes in 60 s at rest "
        "| CPU s per round | peak RSS MB |",
        "|---|---:|---|---|---|---|---|---|---:|",
    ]
    for size in sizes:
        for peer in [_as_peer(size), *size["peers"]]:
            phases = peer["phases"]

            def runs(phase: str, key: str, phases: dict[str, Any] = phases) -> str:
                return _max(phases[phase]["runs"], key)

            def cpu(phase: str, phases: dict[str, Any] = phases) -> str:
                return "/".join(f"{run['cpu_seconds']:.1f}" for run in phases[phase]["runs"])

            rest = "/".join(map(str, peer["rest_writes"])) or "-"
            lines.append(
                f"| {peer['peer']} | {peer['n']} "
                f"| {runs('inject', 'deployment_writes')} / {runs('update', 'deployment_writes')} "
                f"| {runs('inject', 'other_writes')} / {runs('update', 'other_writes')} "
                f"| {cpu('inject')} / {cpu('update')} "
                f"| {'/'.join(map(str, peer['removal_left']))} of {peer['n']} | {rest} "
                f"| {', '.join(f'{c:.0f}' for c in peer['cpu_seconds_per_round'])} "
                f"| {peer['peak_rss_mb']:.0f} |"
            )
    return lines


PEER_STYLES = ("^:", "v-.", "D:")
PEER_TIME_TARGET = 1 / 3  # of each peer's median, for inject and update


def _peer_targets(sizes: list[dict[str, Any]]) -> list[str]:
    """The targets against the peers, at the largest size they ran at."""
    size = max(sizes, key=lambda s: s["n"])
    n, peers = size["n"], size["peers"]
    lines = [
        f"| N={n}: the operator against the peers | operator | peers | target | met |",
        "|---|---|---|---|---|",
    ]
    for name in ("inject", "update"):
        ours = size["phases"][name]["operator"]["median"]
        ratios = {p["peer"]: ours / p["phases"][name]["seconds"]["median"] for p in peers}
        lines.append(
            f"| {name} s (median) | {ours:.2f} "
            f"| {', '.join(f'{p}: {ours / r:.1f} ({r:.3f}x)' for p, r in ratios.items())} "
            f"| <= 1/3 of each | {_met(max(ratios.values()) <= PEER_TIME_TARGET)} |"
        )
    for name in ("inject", "update"):
        ours_writes = [r["deployment_writes"] for r in size["phases"][name]["operator_runs"]]
        theirs = _least(peers, name, "deployment_writes")
        lines.append(
            f"| {name}: Deployment writes | {'/'.join(map(str, sorted(set(ours_writes))))} "
            f"| {', '.join(f'{p}: {w}' for p, w in theirs.items())} | exactly {n}, <= theirs "
            f"| {_met(set(ours_writes) == {n} and n <= min(theirs.values()))} |"
        )
    for name in ("inject", "update"):
        ours_cpu = max(r["cpu_seconds"] for r in size["phases"][name]["operator_runs"])
        theirs_cpu = _least(peers, name, "cpu_seconds")
        lines.append(
            f"| {name}: CPU s (operator's most, peers' least) | {ours_cpu:.1f} "
            f"| {', '.join(f'{p}: {c:.1f}' for p, c in theirs_cpu.items())} | below each "
            f"| {_met(ours_cpu < min(theirs_cpu.values()))} |"
        )
    # The operator's removal phase ends only when no Deployment carries the sidecar.
    removals = [r["deployment_writes"] for r in size["phases"]["remove"]["operator_runs"]]
    left = {p["peer"]: max(p["removal_left"]) for p in peers}
    lines.append(
        f"| removal: Deployments left with the sidecar (operator: writes) "
        f"| 0 ({'/'.join(map(str, sorted(set(removals))))}) "
        f"| {', '.join(f'{p}: {c}' for p, c in left.items())} | 0 in exactly {n} writes "
        f"| {_met(set(removals) == {n})} |"
    )
    return lines


def _least(peers: list[dict[str, Any]], phase: str, key: str) -> dict[str, Any]:
    """Each peer's least `key` over its runs of `phase`."""
    return {p["peer"]: min(r[key] for r in p["phases"][phase]["runs"]) for p in peers}


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
    # A peer has no removal line: it removes nothing (see the side-by-side table).
    peers = list(dict.fromkeys(p["peer"] for size in sizes for p in size.get("peers", [])))
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
        for who, style in zip(peers, PEER_STYLES, strict=False):
            runs = [
                (size["n"], peer["phases"][name]["seconds"])
                for size in sizes
                for peer in size.get("peers", [])
                if peer["peer"] == who and name in peer["phases"]
            ]
            if runs:
                axis.errorbar(
                    [n for n, _ in runs],
                    [s["median"] for _, s in runs],
                    yerr=[
                        [s["median"] - s["min"] for _, s in runs],
                        [s["max"] - s["median"] for _, s in runs],
                    ],
                    fmt=style,
                    capsize=3,
                    label=who,
                )
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
