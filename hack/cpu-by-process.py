"""Where a run's CPU goes: every process's CPU read from /proc each 0.3 s until SIGTERM or
SIGINT, then a table by kind of process (the control planes apart by directory, the operators
the tests fork from their zygote among "tests' operators") and how many cores were busy in each
window of the run (where it waits rather than computes). Processes that live less than a
sample's interval are missed. Used for docs/local-control-plane.md:

    python3 hack/cpu-by-process.py > cpu.txt & sampler=$!
    TEST_WORKERS=4 bash hack/test.sh; kill $sampler
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType

TICK = os.sysconf("SC_CLK_TCK")
WINDOW = 15.0  # seconds per line of the busy-cores timeline
COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")


def kind_of(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    words = [part.decode(errors="replace") for part in argv if part]
    if not words:
        return None
    command, line = os.path.basename(words[0]), " ".join(words)
    if command in COMPONENTS:
        return f"{command} ({os.path.basename(cwd)})"  # the cluster's directory names it
    if "tests.zygote" in line:
        return "tests' operators (forked from the zygote)"
    if "sidecar-operator run" in line:
        return "operators"
    if "kubectl-sidecars" in line:
        return "kubectl sidecars (the plugin)"
    if "sidecar-operator" in line:
        return "sidecar-operator " + (words[2] if len(words) > 2 else "")
    if command == "kubectl":
        return "kubectl sidecars (the plugin)" if "sidecars" in words[1:2] else "kubectl"
    if "pytest" in line or words[1:3] == ["-u", "-c"]:  # an xdist worker: `python -u -c ...`
        return "pytest (controllers and xdist workers)"
    if "tests.chaos" in line:
        return "chaos harness"
    return command


def busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def main() -> None:
    seen: dict[int, tuple[str, float, float]] = {}  # pid: kind, CPU at first sight, latest
    started, busy_at_start = time.monotonic(), busy_seconds()
    done = False

    def stop(_signal: int, _frame: FrameType | None) -> None:
        nonlocal done
        done = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    first = True
    timeline: list[float] = []  # cores busy, one figure per WINDOW
    window_start, window_busy = started, busy_at_start
    while not done:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu = (int(fields[11]) + int(fields[12])) / TICK
            if pid in seen:
                seen[pid] = (*seen[pid][:2], cpu)
            elif (found := kind_of(pid)) is not None:
                seen[pid] = (found, cpu if first else 0.0, cpu)  # what ran before: from now on
        first = False
        if (now := time.monotonic()) - window_start >= WINDOW:
            busy_now = busy_seconds()
            timeline.append((busy_now - window_busy) / (now - window_start))
            window_start, window_busy = now, busy_now
        time.sleep(0.3)
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for kind, before, latest in seen.values():
        if latest > before:
            totals[kind][0] += latest - before
            totals[kind][1] += 1
    wall, busy = time.monotonic() - started, busy_seconds() - busy_at_start
    print(f"{wall:.0f} s of wall time, {busy:.0f} s of CPU busy")
    for kind, (cpu, count) in sorted(totals.items(), key=lambda item: -item[1][0]):
        if cpu >= 0.5:
            print(f"{cpu:8.1f} s {count:5d} processes  {kind}")
    print(f"cores busy per {WINDOW:.0f} s:")
    for index, cores in enumerate(timeline):
        print(f"{index * WINDOW:5.0f} s {cores:4.2f} {'#' * round(cores * 20)}")


if __name__ == "__main__":
    main()
