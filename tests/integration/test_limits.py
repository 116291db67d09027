"""Connection and request limits: slow-loris heads, slow bodies, connection cap, header limits."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .conftest import Backends, StartGateway, demo_config


def limited(backends: Backends, **server: Any) -> dict[str, Any]:
    raw = demo_config(backends)
    raw["server"] = server
    return raw


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_slow_loris_head_is_cut_off(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(limited(demo_backends, header_timeout_s=0.5))
    reader, writer = await _open(gw.serving.public_port)
    started = time.monotonic()
    writer.write(b"GET /v1/items/1 HTTP/1.1\r\nHost: x\r\n")
    for _ in range(20):  # one header line every 100 ms, never finishing the head
        await asyncio.sleep(0.1)
        if writer.is_closing() or reader.at_eof():
            break
        writer.write(b"X-Slow: 1\r\n")
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed without an answer
    assert time.monotonic() - started < 2.0
    writer.close()
    # A client that sends its head in time is served on the same listener.
    async with gw.http.get(f"{gw.url}/v1/items/1") as r:
        assert r.status == 200


async def test_slow_body_is_a_408(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(limited(demo_backends, body_timeout_s=0.3))
    reader, writer = await _open(gw.serving.public_port)
    writer.write(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"message\":")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_connection_cap(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(limited(demo_backends, max_connections=3))
    held = [await _open(gw.serving.public_port) for _ in range(3)]
    reader, writer = await _open(gw.serving.public_port)
    answer = await asyncio.wait_for(reader.read(), 3)
    assert answer.startswith(b"HTTP/1.1 503") and b'"code":14' in answer
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    async with gw.http.get(f"{gw.url}/v1/items/1") as r:  # room again once they closed
        assert r.status == 200


async def test_header_count_and_size(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(limited(demo_backends, max_headers=10, max_header_bytes=1024))
    many = {f"X-H{i}": "v" for i in range(20)}
    async with gw.http.get(f"{gw.url}/v1/items/1", headers=many) as r:
        assert r.status in (400, 431)
    async with gw.http.get(f"{gw.url}/v1/items/1", headers={"X-Big": "v" * 4000}) as r:
        assert r.status in (400, 431)
    async with gw.http.get(f"{gw.url}/v1/items/1", headers={"X-Fine": "v"}) as r:
        assert r.status == 200


async def test_deeply_nested_json_is_a_400(gw: Any) -> None:
    body = b'{"labels":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}"
    async with gw.http.post(f"{gw.url}/v1/echo", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["code"] == 3


async def test_client_dropping_mid_body_is_a_quiet_499(demo_backends: Backends, start_gateway: StartGateway,
                                                       tmp_path: Any, caplog: Any) -> None:
    log = tmp_path / "access.jsonl"
    raw = limited(demo_backends, body_timeout_s=5)
    raw["policies"] = [{"name": "access_log", "config": {"sink": "file", "path": str(log), "flush_interval_s": 0.05}}]
    gw = await start_gateway(raw)
    _reader, writer = await _open(gw.serving.public_port)
    writer.write(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"message\":")
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.transport.abort()  # RST, not FIN
    for _ in range(40):
        await asyncio.sleep(0.05)
        if log.exists() and log.read_text():
            break
    assert '"status":499' in log.read_text()
    assert "unhandled error" not in caplog.text
    async with gw.http.get(f"{gw.url}/v1/items/1") as r:
        assert r.status == 200
