"""`make chaos` (`python -m tests.chaos [--seed N] [--size 30] [--trials sigkill,...] [--smoke]`):
runs the trials on a fresh local cluster named `chaos`, prints a table, writes
bench/results/chaos.json. `--smoke` runs each trial once, small (`trials.SMOKE`), on a cluster of
its own: `make test` runs it so that a broken harness fails CI."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tests.chaos import corpus, racing, trials
from tests.conftest import OperatorProcess
from tests.kube import CRD_FILE, PEERING_CRD_FILE, REPO, Kubectl, dev, eventually, kubeconfig_from

CLUSTER = "chaos"
PEERING = "sidecar-operator-chaos"
OPERATOR_NAMESPACE = "sidecar-operator-chaos"
RESULTS = REPO / "bench" / "results" / "chaos.json"
TRIALS = ("corpus", "orphans", "racing", "sigkill", "control-plane", "replicas", "waves")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--size", type=int, default=30, help="Deployments per trial")
    parser.add_argument("--trials", default=",".join(TRIALS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cases", default="", help="only corpus cases whose file name has this")
    parser.add_argument("--smoke", action="store_true", help="each trial once, small")
    parser.add_argument("--cluster", default=CLUSTER, help="the local cluster's name")
    options = parser.parse_args()
    chosen = options.trials.split(",")
    scale = trials.SMOKE if options.smoke else trials.Scale(size=options.size)
    cluster = options.cluster
    started = time.monotonic()
    dev("down", "--name", cluster)
    up = dev("up", "--name", cluster)
    admin = Kubectl(kubeconfig_from(up.stdout.strip().splitlines()[-1]))
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    rows: list[trials.Row] = []
    try:
        for path in (CRD_FILE, PEERING_CRD_FILE):
            admin("apply", "--server-side", "--force-conflicts", "-f", str(path))
        eventually(lambda: _established(admin), what="the CRDs established")
        admin("create", "namespace", OPERATOR_NAMESPACE)
        setting = trials.Setting(admin, cluster, workdir, scale, random.Random(options.seed))

        def replica(name: str) -> OperatorProcess:
            return OperatorProcess(
                admin.kubeconfig,
                workdir / f"{name}.log",
                f"--peering={PEERING}",
                f"--operator-namespace={OPERATOR_NAMESPACE}",
                env={"POD_NAME": name},
            )

        if {"corpus", "orphans", "racing", "sigkill", "control-plane"} & set(chosen):
            operator = replica("chaos-operator")
            operator.start()
            try:
                if "corpus" in chosen:
                    cases = (options.cases,) if options.cases else scale.cases
                    rows += _timed("corpus", lambda: _corpus(admin, cases))
                if "orphans" in chosen:
                    rows += _timed("orphans", lambda: trials.orphans(setting, operator))
                if "racing" in chosen:
                    rows += _timed("racing", lambda: racing.racing(setting))
                if "sigkill" in chosen:
                    rows += _timed("sigkill", lambda: trials.sigkills(setting, operator))
                if "control-plane" in chosen:
                    rows += _timed("control plane", lambda: trials.control_plane(setting, operator))
            finally:
                operator.stop()
        if "replicas" in chosen:
            rows += _timed("replicas", lambda: trials.replicas(setting, replica))
        if "waves" in chosen:
            rows += _timed("waves", lambda: trials.waves(setting, replica))
    finally:
        dev("down", "--name", cluster)
    seconds = round(time.monotonic() - started)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    defects = [d for row in rows for d in row.defects]
    report = {
        "commit": commit,
        "seed": options.seed,
        "seconds": seconds,
        "defects": len(defects),
        "rows": [asdict(row) for row in rows],
        "logs": str(workdir),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(rows))
    print(
        f"\n{len(defects)} defects; commit {commit}, seed {options.seed}, {seconds} s; "
        f"{options.out}; operator logs in {workdir}"
    )
    return 1 if defects else 0


def _timed(what: str, run: object) -> list[trials.Row]:
    print(f"chaos: {what} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    rows: list[trials.Row] = run()  # type: ignore[operator]
    print(f"chaos: {what} done in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return rows


def _corpus(admin: Kubectl, only: tuple[str, ...]) -> list[trials.Row]:
    return [
        trials.Row(
            "corpus",
            name,
            case.what,
            seconds,
            defects,
            {"expected": corpus.outcome(case)},
        )
        for name, case, defects, seconds in corpus.run(admin, OPERATOR_NAMESPACE, only=only)
    ]


def _established(admin: Kubectl) -> bool:
    for name in ("sidecarpolicies.sidecars.dev", "clusterkopfpeerings.kopf.dev"):
        conditions = admin.json("crd", name).get("status", {}).get("conditions") or []
        if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return False
    return True


def _table(rows: list[trials.Row]) -> str:
    lines = ["| trial | phase | faults | s | figures | defects |", "|---|---|---|---:|---|---|"]
    for row in rows:
        figures = ", ".join(f"{k} {v}" for k, v in row.figures.items())
        defects = "; ".join(row.defects) or "0"
        lines.append(
            f"| {row.trial} | {row.phase} | {row.faults} | {row.seconds} | {figures} | {defects} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
