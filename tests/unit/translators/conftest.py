"""Route tables over the generated demo stubs, for translator tests (no sockets)."""

from __future__ import annotations

import pytest

from translators.descriptors import ServiceInfo, from_modules
from translators.options import TranscodeOptions
from translators.routes import RouteTable, compile_routes


@pytest.fixture(scope="session")
def services() -> list[ServiceInfo]:
    return from_modules(["echo.v1.echo_pb2", "library.v1.library_pb2"])


@pytest.fixture(scope="session")
def table(services: list[ServiceInfo]) -> RouteTable:
    return compile_routes(services)


def table_with(services: list[ServiceInfo], **options: object) -> RouteTable:
    opts = TranscodeOptions(**options)  # type: ignore[arg-type]
    return compile_routes(services, lambda _name: opts)
