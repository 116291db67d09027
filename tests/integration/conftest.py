"""A real gateway in front of real demo backends, all on ephemeral 127.0.0.1 ports.

`demo_backends` starts the echo and library grpc.aio servers; `gateway` starts the public and
admin aiohttp apps of a `GatewayConfig` pointing at them and yields their base URLs and a client
session. Everything is stopped at the end of each test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import build_apps
from gateway.config import GatewayConfig
from gateway.runtime import build_runtime
from tests.support import echo_backend, library_backend
from tests.support.serving import RunningServer


@dataclass
class Backends:
    echo: RunningServer
    library: RunningServer


@dataclass
class Gateway:
    url: str
    admin: str
    http: aiohttp.ClientSession
    config: GatewayConfig


def demo_config(backends: Backends, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2", "library.v1.library_pb2"]}],
        "backends": {
            "echo": {"addresses": [backends.echo.address], "health": {"interval_s": 0.2}},
            "library": {"addresses": [backends.library.address], "health": {"interval_s": 0.2}},
        },
        "services": {
            "echo.v1.EchoService": {"backend": "echo", "timeout_ms": 3000},
            "library.v1.LibraryService": {"backend": "library", "timeout_ms": 3000},
        },
    }
    config.update(overrides)
    return config


@pytest.fixture
async def demo_backends() -> AsyncIterator[Backends]:
    echo = await echo_backend.serve()
    library = await library_backend.serve()
    try:
        yield Backends(echo, library)
    finally:
        await echo.stop(0)
        await library.stop(0)


StartGateway = Callable[[dict[str, Any]], Awaitable[Gateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(raw: dict[str, Any]) -> Gateway:
        config = GatewayConfig.model_validate(raw)
        # Off the loop: a reflection source makes blocking calls to backends served on this loop.
        public, admin = build_apps(await asyncio.to_thread(build_runtime, config))
        urls = []
        for app in (public, admin):
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        sessions.append(session)
        return Gateway(urls[0], urls[1], session, config)

    try:
        yield start
    finally:
        for session in sessions:
            await session.close()
        for runner in reversed(runners):
            await runner.cleanup()


@pytest.fixture
async def gw(demo_backends: Backends, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(demo_backends))
