"""Both demo backends in-process, for tests that put a gateway in front of them.

Owns starting the echo and library backends together on ephemeral loopback ports and stopping them
together, in reverse order, however the test ends. Each call gets a freshly seeded library, so no two
tests share state. Use it as `async with running_backends() as backends:` and dial
`backends.echo.address` and `backends.library.address`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from tests.support import echo_backend, library_backend
from tests.support.serving import RunningServer


@dataclass(frozen=True, slots=True)
class Backends:
    echo: RunningServer
    library: RunningServer


@asynccontextmanager
async def running_backends(host: str = "127.0.0.1", grace: float | None = None) -> AsyncIterator[Backends]:
    """Serve both backends on `host` for the duration of the block; `grace` is their drain time on exit."""
    async with AsyncExitStack() as stack:
        echo = await echo_backend.serve(f"{host}:0")
        stack.push_async_callback(echo.stop, grace)
        library = await library_backend.serve(f"{host}:0")
        stack.push_async_callback(library.stop, grace)
        yield Backends(echo=echo, library=library)
