"""gRPC-Web through a real gateway: frames and trailers built and parsed here, per the gRPC-Web spec
(grpc/grpc doc/PROTOCOL-WEB.md), independently of the gateway's own framing module."""

from __future__ import annotations

import base64
import struct

import pytest

import protos

from .conftest import Gateway

protos.add_generated_path()
from echo.v1 import echo_pb2

PROTO = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"


def encode(*messages: bytes) -> bytes:
    return b"".join(struct.pack(">BI", 0, len(m)) + m for m in messages)


def decode(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """(messages, trailers) of a gRPC-Web response body."""
    messages, trailers, pos = [], {}, 0
    while pos < len(body):
        flag, length = struct.unpack_from(">BI", body, pos)
        payload = body[pos + 5 : pos + 5 + length]
        assert len(payload) == length, "truncated frame"
        pos += 5 + length
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip()] = value.strip()
        else:
            assert flag == 0
            messages.append(payload)
    return messages, trailers


def decode_text(body: bytes) -> bytes:
    """A -text body: base64 chunks, each padded, concatenated (decoded chunk by chunk)."""
    out, chunk = b"", b""
    for i in range(0, len(body), 4):
        chunk += body[i : i + 4]
        if chunk.endswith(b"="):
            out += base64.b64decode(chunk)
            chunk = b""
    return out + base64.b64decode(chunk)


async def test_unary_proto(gw: Gateway) -> None:
    request = echo_pb2.EchoRequest(message="web", repeat=2).SerializeToString()
    headers = {"Content-Type": PROTO, "X-Grpc-Web": "1", "Grpc-Metadata-X-Echo-Metadata": "m"}
    async with gw.http.post(f"{gw.url}/echo.v1.EchoService/Echo", data=encode(request), headers=headers) as r:
        assert r.status == 200 and r.headers["Content-Type"] == PROTO
        assert r.headers["x-echo-header"] == "m"  # initial metadata as plain headers
        messages, trailers = decode(await r.read())
    assert echo_pb2.EchoResponse.FromString(messages[0]).message == "webweb"
    assert trailers["grpc-status"] == "0" and trailers["x-echo-trailer"] == "m"


async def test_unary_text(gw: Gateway) -> None:
    body = base64.b64encode(encode(echo_pb2.GetItemRequest(id="7").SerializeToString()))
    async with gw.http.post(f"{gw.url}/echo.v1.EchoService/GetItem", data=body, headers={"Content-Type": TEXT}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == TEXT
        messages, trailers = decode(decode_text(await r.read()))
    assert echo_pb2.Item.FromString(messages[0]).name == "item 7" and trailers["grpc-status"] == "0"


async def test_server_streaming_with_error_trailer(gw: Gateway) -> None:
    request = echo_pb2.StreamItemsRequest(count=3, prefix="__error__:DATA_LOSS").SerializeToString()
    async with gw.http.post(f"{gw.url}/echo.v1.EchoService/StreamItems", data=encode(request),
                            headers={"Content-Type": PROTO}) as r:
        messages, trailers = decode(await r.read())
    assert [echo_pb2.Item.FromString(m).id for m in messages] == ["item-0", "item-1", "item-2"]
    assert trailers["grpc-status"] == "15" and "test hook" in trailers["grpc-message"]


async def test_server_streaming_text_ok(gw: Gateway) -> None:
    body = base64.b64encode(encode(echo_pb2.StreamItemsRequest(count=2, prefix="t").SerializeToString()))
    async with gw.http.post(f"{gw.url}/echo.v1.EchoService/StreamItems", data=body,
                            headers={"Content-Type": TEXT + "+proto"}) as r:
        messages, trailers = decode(decode_text(await r.read()))
    assert [echo_pb2.Item.FromString(m).id for m in messages] == ["t0", "t1"] and trailers["grpc-status"] == "0"


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/echo.v1.EchoService/Echo", encode(echo_pb2.EchoRequest(message="__error__:NOT_FOUND").SerializeToString()), "5"),
        ("/echo.v1.EchoService/Nope", encode(b""), "12"),
        ("/echo.v1.EchoService/Chat", encode(b""), "12"),
        ("/echo.v1.EchoService/Echo", b"\x00\x00\x00", "3"),
        ("/echo.v1.EchoService/Echo", encode(b"\xff\xff"), "3"),
    ],
)
async def test_errors_are_trailers_only(gw: Gateway, path: str, body: bytes, code: str) -> None:
    async with gw.http.post(f"{gw.url}{path}", data=body, headers={"Content-Type": PROTO}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == PROTO
        assert r.headers["grpc-status"] == code and r.headers.get("grpc-message")
        assert await r.read() == b""
