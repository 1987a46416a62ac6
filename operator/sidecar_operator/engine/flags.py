"""A flag the operator's loop awaits, with a wait that can give up."""

from __future__ import annotations

import asyncio


class Flag(asyncio.Event):
    async def wait_at_most(self, seconds: float | None) -> bool:
        """True once set; False if `seconds` passed first."""
        try:
            await asyncio.wait_for(self.wait(), seconds)
        except TimeoutError:
            return self.is_set()
        return True
