"""A TCP relay between one operator replica and the API server, which a test can cut: the
replica then hears nothing back, neither on new connections nor on those it holds (a partition,
not a refusal). TLS passes through it untouched."""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from typing import Any


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut = threading.Event()
        relay = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                relay._pipe(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.cut.set()
        self._server.shutdown()
        self._server.server_close()

    def _pipe(self, client: socket.socket) -> None:
        if self.cut.is_set():
            self.cut.wait()
            return
        with socket.create_connection(self.target) as upstream:
            ends = {client: upstream, upstream: client}
            while not self.cut.is_set():
                ready, _, _ = select.select(list(ends), [], [], 0.2)
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        return
                    if not self.cut.is_set():
                        ends[end].sendall(data)
            # Cut: hold both ends open and silent, as a partition does.
            while True:
                select.select(list(ends), [], [], 1.0)
                for end in ends:
                    end.setblocking(False)
                    try:
                        if not end.recv(65536):
                            return
                    except BlockingIOError:
                        pass
