"""The operator under test: `sidecar-operator run` as a user starts it, with its peak RSS and
CPU seconds read from /proc while it runs, and its own metrics when asked for."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL = 0.25  # seconds between readings of the operator's CPU time
PASSES = "sidecar_operator_reconciles"  # the operator's counter of finished passes, per policy
# The operator serves its metrics on localhost: a proxy from the environment must not see them.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Usage:
    peak_rss_mb: float
    cpu_seconds: float


def free_port() -> int:
    """A port nothing listens on now: others' operators may run on this machine too."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def usage_of(pid: int) -> Usage:
    """A process's peak resident set (VmHWM) and user+system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return Usage(_status_kb(pid, "VmHWM:") / 1024, ticks / CLOCK_TICKS)


def _status_kb(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith(field))


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        *,
        metrics: bool = False,
        args: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.metrics_port = free_port() if metrics else None
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0  # monotonic time of `start`

    def start(self) -> None:
        executable = Path(sys.executable).with_name("sidecar-operator")
        metrics = ["--metrics-port", str(self.metrics_port)] if self.metrics_port else []
        self.started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(executable), "run", "--log-format", "json", *metrics, *self.args],
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
        return usage_of(self.pid)

    def rss_mb(self) -> float:
        """The resident set now (VmRSS), not its peak."""
        return _status_kb(self.pid, "VmRSS:") / 1024

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

    async def passes(self) -> dict[str, float]:
        """Passes finished so far, by policy; empty until the metrics are served."""
        if self.metrics_port is None:
            raise RuntimeError("started without metrics")
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"

        def read() -> str:
            with DIRECT.open(url, timeout=5) as response:
                return str(response.read().decode())

        try:
            exposition = await asyncio.to_thread(read)
        except OSError:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the operator is not running; see {self.log_path}") from None
            return {}  # not serving yet
        return {
            sample.labels["policy"]: sample.value
            for family in text_string_to_metric_families(exposition)
            if family.name == PASSES
            for sample in family.samples
            if sample.name == PASSES + "_total"
        }

    async def first_passes(self, policies: set[str], timeout: float) -> float:
        """Seconds from `start` until every one of `policies` has finished a pass: a worker's
        first pass waits for the complete listing of Deployments, plans every one of them and
        sends what it finds missing, so this is when the operator has caught up with the whole
        cluster. The counter also counts a pass that failed (the operator logs it and tries
        again); such a pass tried writes, which a restart's write count shows."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = {name for name, count in (await self.passes()).items() if count >= 1}
            if policies <= done:
                return time.monotonic() - self.started
            await asyncio.sleep(0.1)
        raise TimeoutError(f"not every policy had finished a pass {timeout:.0f}s after the start")

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
