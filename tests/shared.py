"""What a test run's processes share. Under pytest-xdist every worker is a pytest session of its
own, but the run has one control plane, one operator and one webhook configuration: the first
worker that needs one sets it up, under a lock, and records it here; the others find it. Nothing
that is shared is torn down by a worker (another may still use it): the run's controlling process
does that once every worker is done (`finish`). Without xdist the one process is both.

Tests take turns (`Turns`): most run beside each other; those marked `exclusive` (they stop the
session's operator, install the operator's cluster-wide objects, or restart a control-plane
component) run alone. A test that stops, kills or restarts an operator runs one of its own, a
shard serving only its policies (`own_operator`), and needs no turn of its own."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT_VARIABLE = "SIDECAR_OPERATOR_TEST_SHARED"


class Shared:
    """Records (JSON) in a directory every process of the run knows (ROOT_VARIABLE)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, name: str, kind: int = fcntl.LOCK_EX) -> Iterator[None]:
        with (self.root / f"{name}.lock").open("a") as handle:
            fcntl.flock(handle, kind)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def once(self, name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The record `make` returned for the first process that asked; made once per run."""
        with self.locked(name):
            found = self.get(name)
            if found is None:
                found = make()
                self.put(name, found)
            return found

    def get(self, name: str) -> dict[str, Any] | None:
        path = self.root / f"{name}.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    def put(self, name: str, record: dict[str, Any]) -> None:
        path = self.root / f"{name}.json"
        path.with_suffix(".tmp").write_text(json.dumps(record))
        path.with_suffix(".tmp").replace(path)


class Turns:
    """A readers-writer lock across the run's processes, fair to the writer: an exclusive test
    takes the gate, so no test starts after it asked, then waits for those running to finish.
    (`flock` alone would let overlapping shared holders starve it until the run's end.)"""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    @contextlib.contextmanager
    def turn(self, exclusive: bool) -> Iterator[None]:
        if exclusive:
            with self.shared.locked("gate"), self.shared.locked("running"):
                yield
            return
        with self.shared.locked("gate"):
            pass  # wait out an exclusive test that asked first
        with self.shared.locked("running", fcntl.LOCK_SH):
            yield


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop a process this one may not have started (so cannot wait for): signal it, then wait
    until it is gone or a zombie, killing it after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):  # gone as its file was read
        return False
    return state not in ("Z", "X")
