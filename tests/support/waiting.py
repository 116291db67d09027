"""Waiting for a count to hold still, instead of guessing how long a loaded machine takes to get there."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def settled(read: Callable[[], int], quiet_s: float = 0.5, limit_s: float = 15.0) -> int:
    """The value of `read()` once it has not changed for `quiet_s`; AssertionError after `limit_s`.

    A backpressure test asks "does the producer stop, and how far ahead did it get?". Sleeping a
    fixed second answers it only on a quiet machine: under load the producer may still be filling
    the buffers when the second is up. This waits for the stall itself, and the caller then checks
    how far it got, so a producer that never stops still fails (it runs to the end, past any bound).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    value, since = read(), loop.time()
    while True:
        await asyncio.sleep(0.05)
        now, current = loop.time(), read()
        if current != value:
            value, since = current, now
        elif now - since >= quiet_s:
            return value
        if now > deadline:
            raise AssertionError(f"still changing after {limit_s}s (now {current})")
