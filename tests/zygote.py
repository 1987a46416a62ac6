"""The operators the tests start, forked from a process that has already imported the operator.

Each `sidecar-operator run` spends about 1.7 s of CPU importing Kopf, the kubernetes client,
aiohttp and the models before it does anything, and a `make test` starts over fifty of them
(own shards, replicas, restarts, the chaos smoke's SIGKILLs): about 90 s of two cores' CPU in a
CPU-bound run (docs/local-control-plane.md). The zygote imports once; each start forks it and
the child runs the very `run` command with the test's arguments, environment and log file, in a
session of its own, as a user's process would. Signals, exit and the log are the child's own;
the zygote ignores SIGCHLD so its children are reaped as they exit (`shared.stop_pid` waits for
one to be gone).

One zygote per test process and kubeconfig: the kubernetes client reads `KUBECONFIG` when it
is imported, so a child must use the kubeconfig its zygote imported with. A zygote exits when
its test process closes its stdin (or dies)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar


class Zygote:
    """Starts operator processes for one kubeconfig by asking the zygote to fork."""

    _running: ClassVar[dict[str, Zygote]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "KUBECONFIG": kubeconfig},
            text=True,
        )

    @classmethod
    def spawn(cls, argv: list[str], env: dict[str, str], log: Path) -> int:
        """Start `sidecar-operator` with these arguments (argv[0] its name) and this exact
        environment, its output appended to `log`: the new process's pid."""
        kubeconfig = env["KUBECONFIG"]
        with cls._lock:
            zygote = cls._running.get(kubeconfig)
            if zygote is None or zygote._process.poll() is not None:
                zygote = cls._running[kubeconfig] = cls(kubeconfig)
            return zygote._fork({"argv": argv, "env": env, "log": str(log)})

    def _fork(self, request: dict[str, Any]) -> int:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the zygote for {self.kubeconfig} exited ({self._process.wait()})")
        return int(json.loads(answer)["pid"])


def _serve() -> None:
    """The zygote: import what `run` imports, then fork one operator per request line."""
    import kopf  # noqa: F401  # the imports `cli.run` makes, made once here

    from sidecar_operator import cli, handlers, logs, metrics  # noqa: F401
    from sidecar_operator.engine import leadership  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped on exit: never zombies
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _become(request, cli.app)
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()


def _become(request: dict[str, Any], app: Any) -> None:
    """In the child: detach from the zygote, take the request's environment and output, and run
    the command; never return."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = request["argv"]
        app()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    _serve()
