"""A pytest plugin that logs when each test started and ended, and on which xdist worker: the
run's own record of what ran beside what (where hack/cpu-by-process.py's timeline shows idle
cores, which tests were waiting). Used for docs/local-control-plane.md:

    TESTCLOCK_T0=$(date +%s.%N) PYTHONPATH=hack TEST_WORKERS=4 bash hack/test.sh -p testclock
    sort -t$'\\t' -k3 -n /tmp/testclock.tsv | tail   # the last to end

One line per test and process (the controlling process logs its workers' tests too): worker,
start and end in seconds from TESTCLOCK_T0, the test's id; appended to TESTCLOCK_OUT
(/tmp/testclock.tsv)."""

from __future__ import annotations

import os
import time

ORIGIN = float(os.environ.get("TESTCLOCK_T0", "0"))
OUT = os.environ.get("TESTCLOCK_OUT", "/tmp/testclock.tsv")
_started: dict[str, float] = {}


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _started[nodeid] = time.time()


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    started = _started.pop(nodeid, time.time())
    with open(OUT, "a") as out:
        out.write(f"{worker}\t{started - ORIGIN:.1f}\t{time.time() - ORIGIN:.1f}\t{nodeid}\n")
