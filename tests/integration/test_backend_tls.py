"""TLS and mTLS towards gRPC backends, with certificates generated in the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support import echo_backend
from tests.support.certs import Pki, make_pki

from .conftest import Backends, StartGateway, demo_config


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def _tls_echo(pki: Pki, require_client_auth: bool) -> tuple[grpc.aio.Server, str]:
    from echo.v1 import echo_pb2_grpc

    server = grpc.aio.server()
    echo_pb2_grpc.add_EchoServiceServicer_to_server(echo_backend.EchoService(), server)
    credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes() if require_client_auth else None,
        require_client_auth=require_client_auth,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def servers() -> AsyncIterator[list[grpc.aio.Server]]:
    started: list[grpc.aio.Server] = []
    yield started
    for server in started:
        await server.stop(0)


def _config(backends: Backends, address: str, tls: dict[str, Any]) -> dict[str, Any]:
    raw = demo_config(backends)
    raw["backends"]["echo"] = {"addresses": [address], "tls": tls, "health": {"enabled": False}}
    return raw


async def test_tls_backend(pki: Pki, demo_backends: Backends, start_gateway: StartGateway,
                           servers: list[grpc.aio.Server]) -> None:
    server, address = await _tls_echo(pki, require_client_auth=False)
    servers.append(server)
    gw = await start_gateway(_config(demo_backends, address, {"ca_file": str(pki.ca), "server_name": "localhost"}))
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "secret"}) as r:
        assert r.status == 200
        assert (await r.json())["message"] == "secret"


async def test_mtls_backend(pki: Pki, demo_backends: Backends, start_gateway: StartGateway,
                            servers: list[grpc.aio.Server]) -> None:
    server, address = await _tls_echo(pki, require_client_auth=True)
    servers.append(server)
    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    gw = await start_gateway(_config(demo_backends, address, tls))
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "mutual"}) as r:
        assert r.status == 200
    # Without a client certificate the backend refuses the handshake: a 503, not a hang.
    gw2 = await start_gateway(_config(demo_backends, address, {"ca_file": str(pki.ca)}))
    async with gw2.http.post(f"{gw2.url}/v1/echo", json={"message": "x"}) as r:
        assert r.status == 503


async def test_untrusted_backend_certificate_is_503(pki: Pki, tmp_path: Path, demo_backends: Backends,
                                                    start_gateway: StartGateway,
                                                    servers: list[grpc.aio.Server]) -> None:
    server, address = await _tls_echo(pki, require_client_auth=False)
    servers.append(server)
    other = make_pki(tmp_path / "other")
    gw = await start_gateway(_config(demo_backends, address, {"ca_file": str(other.ca)}))
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}) as r:
        assert r.status == 503
