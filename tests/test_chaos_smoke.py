"""`make chaos`'s harness, run small (`--smoke`: each trial once, on a cluster of its own), so
that a harness that no longer runs fails CI: once a rename at its callers only crashed every trial
after the corpus, and nothing noticed for weeks. `make chaos` is the full run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.chaos.__main__ import TRIALS
from tests.kube import run

CLUSTER = "chaos-smoke"


@pytest.mark.own_cluster
@pytest.mark.timeout(1500)
def test_every_chaos_trial_runs_small_and_finds_no_defect(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    argv = [sys.executable, "-m", "tests.chaos", "--smoke", "--seed", "1"]
    result = run([*argv, "--cluster", CLUSTER, "--out", str(out)], check=False, timeout=1400)
    assert out.exists(), f"no report:\n{result.stdout}\n{result.stderr}"
    report = json.loads(out.read_text())
    ran = {row["trial"].replace(" ", "-") for row in report["rows"]}
    assert ran == set(TRIALS), f"trials that ran: {sorted(ran)}\n{result.stderr[-3000:]}"
    defects = [d for row in report["rows"] for d in row["defects"]]
    assert defects == [] and result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
