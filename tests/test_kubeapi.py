"""The operator's HTTP path, against servers that misbehave (the real API server serves every
other test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client

from sidecar_operator.kubeapi import KubeApi, LoopThread


def test_a_write_the_server_drops_is_sent_once_more_then_is_a_connection_error(
    monkeypatch: Any,
) -> None:
    """aiohttp retries only idempotent methods, not PATCH; and its ServerDisconnectedError is no
    OSError, which the Deployment watch retries on."""
    accepted: list[int] = []

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's head, then no answer
        accepted.append(1)
        writer.close()

    server = LoopThread("test-server")
    listening = server.run(_listen(drop))
    port = listening.sockets[0].getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    monkeypatch.setattr(client.Configuration, "get_default_copy", lambda: configuration)
    kube = KubeApi()
    try:
        with pytest.raises(ConnectionError, match="Server disconnected"):
            kube.patch_policy_status("logs", {"observedGeneration": 1})
    finally:
        kube.close()
        server.call(listening.close)
    assert len(accepted) == 2


async def _listen(handler: Any) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", 0)
