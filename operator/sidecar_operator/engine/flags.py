"""A flag that any thread may set and the operator's event loop awaits.

The Deployment watch and the HTTP loop run in threads of their own; the policy workers are
coroutines on Kopf's loop. An `asyncio.Event` may only be set from its loop's thread, so setting
goes through `call_soon_threadsafe` when it comes from elsewhere.
"""

from __future__ import annotations

import asyncio
import threading


class Flag:
    """Set from any thread; awaited on `loop`, or waited for by a thread (`wait_blocking`).
    Cleared only on `loop`, by what waits for it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._threads = threading.Event()  # the same state, for threads that block on it

    def set(self) -> None:
        self._threads.set()
        if _running_loop() is self._loop:
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._set_here)

    def _set_here(self) -> None:
        """Only if not cleared meanwhile: a set that came before the clear is covered by what
        the waiter does after clearing it (it reads the state the setter left), and carrying it
        over ran the worker's pass twice."""
        if self._threads.is_set():
            self._event.set()

    def clear(self) -> None:
        self._threads.clear()
        self._event.clear()

    def is_set(self) -> bool:
        return self._threads.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True once set; False if `timeout` seconds passed first."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return self._event.is_set()
        return True

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """For a thread other than the loop's: blocks it, never the loop."""
        return self._threads.wait(timeout)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
