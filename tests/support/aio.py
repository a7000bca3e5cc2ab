"""Small asyncio helpers the integration tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 50 ms; AssertionError if it is not true within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def in_thread(fn: Callable[[], object]) -> object:
    """Run a blocking call (baresip's client) while the event loop keeps serving."""
    return await asyncio.to_thread(fn)
