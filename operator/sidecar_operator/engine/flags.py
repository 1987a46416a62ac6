"""A flag the operator's loop awaits, with a wait that can give up."""

from __future__ import annotations

import asyncio


class Flag(asyncio.Event):
    async def wait_at_most(self, seconds: float | None) -> bool:
        """True once set; False if `seconds` passed first. Not `asyncio.wait_for`: on Python
        3.11 it swallows a cancellation that arrives as the flag is set, and the worker Kopf
        cancelled (its policy deleted, its replica standing by) went on running."""
        try:
            async with asyncio.timeout(seconds):
                await self.wait()
        except TimeoutError:
            return self.is_set()
        return True
