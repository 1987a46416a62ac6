"""`make bench`: `python -m bench [--sizes 100,1000,5000] [--rounds 3] [--policies 100
--policies-n 5000] [--admission 1000] [--defaults 1000] [--waves 1000] [--values 1000]
[--churn 1000,5000,20000] [--admission-latency 1000,5000] [--peers 100,1000]`."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.admission import run_admission, run_latency
from bench.churn import run_churn
from bench.cluster import ROOT
from bench.defaults import run_defaults
from bench.many import run_many
from bench.measure import say
from bench.peers.scenario import KOPF_TEXTBOOK, kyverno_peers
from bench.run import run_size
from bench.values import run_values
from bench.waves import run_waves

# The limit's fastest in-flight count in `--sizes 1000 --rounds 1 --tune 64,128,256,512`
# (bench/results/tuning/): inject 3.53, 2.96, 3.73 and 2.92 s, one run each.
IN_FLIGHT = 512


def _commit() -> str:
    """The commit measured, marked `-dirty` when the tree differs from it: figures are only
    comparable between runs of known code."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head or 'unknown'}{'-dirty' if changed else ''}"


def _machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {model}"


async def main(
    sizes: list[int],
    rounds: int,
    zero_from: int,
    out: Path,
    *,
    in_flight: int,
    tune: list[int] | None,
    policies: int,
    policies_n: int,
    admission: int,
    defaults: int,
    waves: int,
    values: int,
    churn: list[int],
    latency: list[int],
    peers: list[int],
) -> None:
    started = time.monotonic()
    commit = _commit()  # the code measured is the code at the start
    results: list[dict[str, Any]] = []
    many: dict[str, Any] | None = None
    admitted: dict[str, Any] | None = None
    every_default: dict[str, Any] | None = None
    in_steps: dict[str, Any] | None = None
    per_workload: dict[str, Any] | None = None
    churned: list[dict[str, Any]] = []
    latencies: list[dict[str, Any]] = []

    def save() -> str:
        """After each scenario, not only at the end: a later one that fails (an operator that
        never goes idle, say) must not take the finished ones' figures with it."""
        summary = {
            "commit": commit,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": _machine(),
            "rounds": rounds,
            "seconds": round(time.monotonic() - started),
            "sizes": sorted(results, key=lambda r: r["n"]),
            "many": many,
            "admission": admitted,
            "defaults": every_default,
            "waves": in_steps,
            "values": per_workload,
            "churn": churned,
            "admission_latency": latencies,
        }
        table = report.write(summary, out)
        say(f"wrote {', '.join(report.files(summary))} in {out} after {summary['seconds']}s")
        return table

    # The targets are set at the first size of at least 1000 Deployments (or the largest below):
    # only there are the idle window, the restart and the reaction time measured, and the
    # limit's in-flight count tuned (if asked) and kept for the rest, the many policies' too.
    target = min((n for n in sizes if n >= 1000), default=max(sizes, default=0))
    compared = [KOPF_TEXTBOOK, *kyverno_peers()] if peers else []
    table = ""
    for n in sorted(sizes, key=lambda n: (n != target, n)):
        replicas = 0 if n >= zero_from else 1
        result = await run_size(
            n,
            replicas,
            rounds,
            tune=tune if n == target else None,
            concurrency=in_flight,
            extras=n == target,
            peers=compared if n in peers else (),
        )
        in_flight = result.concurrency
        results.append(result.summary())
        table = save()
    if policies:
        many = (await run_many(policies, policies_n, rounds, concurrency=in_flight)).summary()
        table = save()
    if admission:
        admitted = (await run_admission(admission)).summary()
        table = save()
    if defaults:
        every_default = (await run_defaults(defaults)).summary()
        table = save()
    if waves:
        in_steps = (await run_waves(waves, rounds)).summary()
        table = save()
    if values:
        per_workload = (await run_values(values, rounds, concurrency=in_flight)).summary()
        table = save()
    for n in churn:
        churned.append((await run_churn(n)).summary())
        table = save()
    for n in latency:
        latencies.append((await run_latency(n)).summary())
        table = save()
    print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--sizes", default="100,1000,5000", help="Deployment counts (0: none, policies only)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of the limit and of the operator, and of the waves (judged by medians)",
    )
    parser.add_argument(
        "--zero-replicas-from",
        type=int,
        default=5000,
        help="from this size on, Deployments have 0 replicas (no Pods to hold)",
    )
    parser.add_argument(
        "--in-flight", type=int, default=IN_FLIGHT, help="the limit's requests in flight"
    )
    parser.add_argument(
        "--tune",
        help="in-flight counts to try first (e.g. 64,128,256,512): the fastest inject is kept",
    )
    parser.add_argument(
        "--policies",
        type=int,
        default=100,
        help="SidecarPolicies of the many-policies scenario (0: off, the sizes only)",
    )
    parser.add_argument(
        "--policies-n", type=int, default=5000, help="Deployments of the many-policies scenario"
    )
    parser.add_argument(
        "--admission",
        type=int,
        default=1000,
        help="new Deployments of the admission scenario (0: off)",
    )
    parser.add_argument(
        "--defaults",
        type=int,
        default=1000,
        help="Deployments of the every-default scenario: writes at rest must be 0 (0: off)",
    )
    parser.add_argument(
        "--waves",
        type=int,
        default=1000,
        help="Deployments of the waves scenario: each step against a one-step rollout (0: off)",
    )
    parser.add_argument(
        "--values",
        type=int,
        default=1000,
        help="Deployments of the per-workload values scenario: a placeholder policy's inject "
        "against the limit, its RSS against a plain policy's (0: off)",
    )
    parser.add_argument(
        "--peers",
        default="100,1000",
        help="sizes at which the peers (a textbook Kopf operator, Kyverno) run between the "
        "operator's rounds; each is added to --sizes (empty or 0: no peers)",
    )
    parser.add_argument(
        "--churn",
        default="",
        help="existing Deployments of the churn scenario, each size on a fresh cluster: then "
        "20 creates a second for 60 s, the operator's reaction against the floor's (empty: off)",
    )
    parser.add_argument(
        "--admission-latency",
        default="",
        help="existing Deployments at which the webhook's latency is measured against a "
        "trivial webhook's, in the same run (empty: off)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    sizes = [n for n in (int(s) for s in args.sizes.split(",") if s.strip()) if n]
    peers = [n for n in (int(s) for s in args.peers.split(",") if s.strip()) if n]
    sizes = sorted({*sizes, *peers})
    churn = [int(s) for s in args.churn.split(",") if s.strip()]
    latency = [int(s) for s in args.admission_latency.split(",") if s.strip()]
    if not (
        sizes
        or args.policies
        or args.admission
        or args.defaults
        or args.waves
        or args.values
        or churn
        or latency
    ):
        parser.error(
            "nothing to run: give --sizes, --policies, --admission, --admission-latency, "
            "--defaults, --waves, --values, --churn or --peers"
        )
    tune = [int(c) for c in args.tune.split(",")] if args.tune else None
    asyncio.run(
        main(
            sizes,
            args.rounds,
            args.zero_replicas_from,
            args.out,
            in_flight=args.in_flight,
            tune=tune,
            policies=args.policies,
            policies_n=args.policies_n,
            admission=args.admission,
            defaults=args.defaults,
            waves=args.waves,
            values=args.values,
            churn=churn,
            latency=latency,
            peers=peers,
        )
    )


if __name__ == "__main__":
    cli()
