"""The operator under test: `sidecar-operator run` as a user starts it, with its peak RSS and
CPU seconds read from /proc while it runs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL = 0.25  # seconds between readings of the operator's CPU time


@dataclass
class Usage:
    peak_rss_mb: float
    cpu_seconds: float


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = Path(sys.executable).with_name("sidecar-operator")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(executable), "run", "--log-format", "json"],
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the operator is not running; see {self.log_path}")
        return self.process.pid

    def usage(self) -> Usage:
        """Peak resident set (VmHWM) and user+system CPU seconds so far."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        peak_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        return Usage(peak_kb / 1024, ticks / CLOCK_TICKS)

    async def warm(
        self, *, quiet_seconds: float = 1.0, at_least: float = 3.0, timeout: float = 300
    ) -> float:
        """Wait until the operator has listed the cluster and gone idle (under a tenth of a core
        for `quiet_seconds`), so a measurement starts from a warm operator. `at_least` keeps a
        process that has just started from looking idle before it begins. Returns seconds."""
        started = time.monotonic()
        last = self.usage().cpu_seconds
        quiet_since = time.monotonic()
        while time.monotonic() - started < timeout:
            await asyncio.sleep(POLL)
            now = self.usage().cpu_seconds
            if now - last > POLL / 10:
                quiet_since = time.monotonic()
            last = now
            if (
                time.monotonic() - quiet_since >= quiet_seconds
                and time.monotonic() - started >= at_least
            ):
                return time.monotonic() - started
        raise TimeoutError(f"the operator did not go idle within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
