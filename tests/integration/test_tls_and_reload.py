"""TLS termination (real TLS clients, mTLS, certificate reload without dropping connections) and
hot reload of the config (valid swaps, invalid refused, in-flight requests finish under the old one)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.certs import Pki, make_pki

from .conftest import Backends, StartGateway, demo_config


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def tls_config(backends: Backends, pki: Pki, **tls: Any) -> dict[str, Any]:
    raw = demo_config(backends)
    raw["listen"]["tls"] = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **tls}
    return raw


def client_context(pki: Pki, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


async def peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        return writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_https_serves_with_tls12_or_better(demo_backends: Backends, start_gateway: StartGateway,
                                                 pki: Pki) -> None:
    gw = await start_gateway(tls_config(demo_backends, pki))
    assert gw.url.startswith("https://")
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "tls"}, ssl=client_context(pki)) as r:
        assert r.status == 200 and (await r.json())["message"] == "tls"
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with gw.http.get(f"{gw.url}/v1/items/1", ssl=ssl.create_default_context()):
            pass
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_1  # the deprecated version is the point
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.raises((ssl.SSLError, aiohttp.ClientError)):
        async with gw.http.get(f"{gw.url}/v1/items/1", ssl=old):
            pass


async def test_min_version_13(demo_backends: Backends, start_gateway: StartGateway, pki: Pki) -> None:
    gw = await start_gateway(tls_config(demo_backends, pki, min_version="1.3"))
    tls12 = client_context(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, aiohttp.ClientError)):
        async with gw.http.get(f"{gw.url}/v1/items/1", ssl=tls12):
            pass
    async with gw.http.get(f"{gw.url}/v1/items/1", ssl=client_context(pki)) as r:
        assert r.status == 200


async def test_mtls_clients(demo_backends: Backends, start_gateway: StartGateway, pki: Pki) -> None:
    gw = await start_gateway(tls_config(demo_backends, pki, client_ca_file=str(pki.ca), client_auth="require"))
    async with gw.http.get(f"{gw.url}/v1/items/1", ssl=client_context(pki, with_cert=True)) as r:
        assert r.status == 200
    with pytest.raises((ssl.SSLError, aiohttp.ClientError)):
        async with gw.http.get(f"{gw.url}/v1/items/1", ssl=client_context(pki)) as r:
            await r.read()


async def test_certificate_reload_keeps_open_connections(demo_backends: Backends, start_gateway: StartGateway,
                                                         pki: Pki, tmp_path: Path) -> None:
    gw = await start_gateway(tls_config(demo_backends, pki))
    port = gw.serving.public_port
    context = client_context(pki)
    before = await peer_certificate(port, context)
    connector = aiohttp.TCPConnector(ssl=context, limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{gw.url}/v1/items/1") as r:
            assert r.status == 200
        # A new certificate (same CA) replaces the files; a broken one first is refused and kept.
        fresh = make_pki(tmp_path / "fresh")
        pki.server_cert.write_text("not a certificate")
        assert gw.serving.certificates is not None
        assert gw.serving.certificates.reload() is False
        assert await peer_certificate(port, context) == before
        pki.server_cert.write_bytes(fresh.server_cert.read_bytes())
        pki.server_key.write_bytes(fresh.server_key.read_bytes())
        assert gw.serving.certificates.reload() is True
        async with http.get(f"{gw.url}/v1/items/2") as r:  # the pooled connection survived
            assert r.status == 200
    fresh_context = client_context(fresh)
    after = await peer_certificate(port, fresh_context)
    assert after != before and after == ssl.PEM_cert_to_DER_cert(fresh.server_cert.read_text())


async def test_reload_swaps_valid_config_and_refuses_invalid(demo_backends: Backends,
                                                             start_gateway: StartGateway, tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    raw = demo_config(demo_backends)
    path.write_text(yaml.safe_dump(raw))
    gw = await start_gateway(raw, config_path=path)
    async with gw.http.get(f"{gw.url}/v1/items/1?nope=1") as r:
        assert r.status == 400  # strict by default
    raw["services"]["echo.v1.EchoService"]["transcoding"] = {"reject_unknown_query_parameters": False}
    path.write_text(yaml.safe_dump(raw))
    async with gw.http.post(f"{gw.admin}/admin/reload") as r:
        assert r.status == 200, await r.text()
    async with gw.http.get(f"{gw.url}/v1/items/1?nope=1") as r:
        assert r.status == 200
    path.write_text("services: {broken")
    async with gw.http.post(f"{gw.admin}/admin/reload") as r:
        assert r.status == 400
        assert "not valid YAML" in (await r.json())["error"]
    async with gw.http.get(f"{gw.url}/v1/items/1?nope=1") as r:
        assert r.status == 200  # the last good config keeps serving


async def test_in_flight_requests_finish_under_the_old_config(demo_backends: Backends,
                                                              start_gateway: StartGateway, tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    raw = demo_config(demo_backends)
    raw["server"] = {"shutdown_grace_s": 3}
    path.write_text(yaml.safe_dump(raw))
    gw = await start_gateway(raw, config_path=path)
    slow = asyncio.create_task(gw.http.post(f"{gw.url}/v1/echo", json={"message": "__sleep__:700"}))
    await asyncio.sleep(0.2)
    del raw["services"]["echo.v1.EchoService"]
    del raw["backends"]["echo"]
    path.write_text(yaml.safe_dump(raw))
    async with gw.http.post(f"{gw.admin}/admin/reload") as r:
        assert r.status == 200
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "new"}) as r:
        assert r.status == 404  # the new config has no echo service
    response = await slow
    assert response.status == 200  # started under the old config, finished under it
    response.release()
    async with gw.http.get(f"{gw.url}/v1/shelves") as r:
        assert r.status == 200
