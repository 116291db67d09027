"""A real gateway in front of real demo backends, all on ephemeral 127.0.0.1 ports.

`demo_backends` starts the echo and library grpc.aio servers; `gateway` starts the public and
admin aiohttp apps of a `GatewayConfig` pointing at them and yields their base URLs and a client
session. Everything is stopped at the end of each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import GatewayConfig
from gateway.server import Serving, start_serving
from tests.support import chat_backend, echo_backend, library_backend
from tests.support.chat_backend import ChatServer
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
    serving: Serving


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


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def chat() -> AsyncIterator[ChatServer]:
    """The demo WebSocket chat backend (tests/support/chat_backend.py) on an ephemeral port."""
    server = await chat_backend.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def start_gateway() -> AsyncIterator[StartGateway]:
    servings: list[Serving] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(raw: dict[str, Any], config_path: Path | None = None) -> Gateway:
        config = GatewayConfig.model_validate(raw)
        serving = await start_serving(config, config_path)
        servings.append(serving)
        scheme = "https" if config.listen.tls is not None else "http"
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        sessions.append(session)
        return Gateway(
            f"{scheme}://127.0.0.1:{serving.public_port}", f"http://127.0.0.1:{serving.admin_port}",
            session, config, serving,
        )

    try:
        yield start
    finally:
        for session in sessions:
            await session.close()
        for serving in reversed(servings):
            await serving.stop()


@pytest.fixture
async def gw(demo_backends: Backends, start_gateway: StartGateway) -> Gateway:
    return await start_gateway(demo_config(demo_backends))
