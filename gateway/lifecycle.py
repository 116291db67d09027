"""Owners of the long-lived resources: one cleanup context each, start-up before `yield`.

The upstream channels and their health checks live here, created after the app starts and closed
in reverse order when it stops; background loops run under one `TaskGroup` that shutdown cancels.
Nothing is created at module level.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.keys import RUNTIME, UPSTREAMS
from gateway.upstream import build_upstreams


async def upstreams_ctx(app: web.Application) -> AsyncIterator[None]:
    upstreams = build_upstreams(app[RUNTIME].config.backends)
    app[UPSTREAMS].update(upstreams)
    stop = asyncio.Event()

    async def supervise() -> None:
        async with asyncio.TaskGroup() as group:
            for upstream in upstreams.values():
                if upstream.config.health.enabled:
                    group.create_task(upstream.check_health_forever())
            await stop.wait()
            raise asyncio.CancelledError

    supervisor = asyncio.create_task(supervise())
    try:
        yield
    finally:
        stop.set()
        supervisor.cancel()
        try:
            await supervisor
        except asyncio.CancelledError:
            pass
        await asyncio.gather(*(u.close() for u in upstreams.values()))


async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """Policies open their clients, files and loops here and close them in reverse order."""
    pipeline = app[RUNTIME].pipeline
    await pipeline.start()
    try:
        yield
    finally:
        await pipeline.stop()
