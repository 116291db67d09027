"""gRPC-Web framing (the protocol of grpc/grpc `doc/PROTOCOL-WEB.md`), as pure bytes.

A gRPC-Web body is a sequence of frames: one flag byte (0x00 a message, 0x80 trailers), a 4-byte
big-endian length, the payload. Requests carry message frames; a response carries its message
frames, then one trailer frame whose payload is HTTP/1-style header lines (`grpc-status`,
`grpc-message`, trailing metadata). The `-text` content types base64-encode the body; the gateway
encodes each response frame on its own (padded chunks, which gRPC-Web clients decode one by one).
`handlers/grpc_web.py` moves the bytes; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable
from urllib.parse import quote

import grpc

from translators.errors import BadRequest

PREFIX = struct.Struct(">BL")
MESSAGE_FLAG = 0x00
TRAILER_FLAG = 0x80
COMPRESSED_FLAG = 0x01
CONTENT_TYPES = frozenset(
    (
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpc-web-text",
        "application/grpc-web-text+proto",
    )
)


def media_type(content_type: str | None) -> str | None:
    """The gRPC-Web media type of a request, or None when it is not gRPC-Web."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return media if media in CONTENT_TYPES else None


def is_text(media: str) -> bool:
    return media.startswith("application/grpc-web-text")


def request_messages(body: bytes, text: bool) -> list[bytes]:
    """The messages of a request body; `BadRequest` for a malformed or compressed one."""
    if text:
        try:
            body = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("a grpc-web-text body that is not base64") from None
    out: list[bytes] = []
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < 5:
            raise BadRequest("a grpc-web body that ends inside a frame header")
        flag, length = PREFIX.unpack_from(body, pos)
        if flag & COMPRESSED_FLAG:
            raise BadRequest("compressed grpc-web messages are not supported")
        if flag != MESSAGE_FLAG:
            raise BadRequest(f"unexpected grpc-web frame flag {flag:#x} in a request")
        if end - pos - 5 < length:
            raise BadRequest("a grpc-web body that ends inside a message")
        out.append(body[pos + 5 : pos + 5 + length])
        pos += 5 + length
    return out


def message_frame(message: bytes, text: bool) -> bytes:
    return _encode(PREFIX.pack(MESSAGE_FLAG, len(message)) + message, text)


def trailer_frame(
    code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, str | bytes]], text: bool
) -> bytes:
    return _encode(_framed_trailers(trailer_lines(code, message, metadata)), text)


def trailer_lines(
    code: grpc.StatusCode, message: str, metadata: Iterable[tuple[str, str | bytes]] = ()
) -> list[tuple[str, str]]:
    """The trailers of a call, as (lower-case name, value); `-bin` values base64-encoded."""
    lines = [("grpc-status", str(code.value[0]))]
    if message:
        lines.append(("grpc-message", quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
    for key, value in metadata:
        text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
        lines.append((key.lower(), text))
    return lines


def _framed_trailers(lines: list[tuple[str, str]]) -> bytes:
    payload = "".join(f"{k}:{v}\r\n" for k, v in lines).encode()
    return PREFIX.pack(TRAILER_FLAG, len(payload)) + payload


def _encode(frame: bytes, text: bool) -> bytes:
    return base64.b64encode(frame) if text else frame
