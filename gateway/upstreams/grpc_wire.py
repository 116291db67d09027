"""The gRPC-over-HTTP/2 rules a client needs, as pure functions: framing, timeouts, status, metadata.

Owns what the gRPC protocol spec (doc/PROTOCOL-HTTP2.md and doc/http-grpc-status-mapping.md) says
about the bytes: the 5-byte length prefix of each message, the `grpc-timeout` format, how an HTTP
status or an RST_STREAM code becomes a gRPC code when no `grpc-status` came, percent-decoding of
`grpc-message`, base64 for `-bin` metadata, and what a response header block says (read once per
distinct block). The connection's layers (`caller.py`, `connection.py`) apply them; nothing here
does I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable
from urllib.parse import unquote

import grpc

from gateway.upstreams import frames
from gateway.upstreams.headers import HeaderDecoder

_C = grpc.StatusCode
PREFIX = struct.Struct(">BL")  # compressed flag, big-endian length
# Largest message accepted from a backend: the same limit GrpcUpstream sets on its channels.
MAX_MESSAGE = 64 * 1024 * 1024
_BLOCK_CACHE = 256  # distinct response header blocks remembered per connection
CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}

# doc/http-grpc-status-mapping.md: the code of a response that carries no grpc-status.
HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: _C.INTERNAL,
    401: _C.UNAUTHENTICATED,
    403: _C.PERMISSION_DENIED,
    404: _C.UNIMPLEMENTED,
    429: _C.UNAVAILABLE,
    502: _C.UNAVAILABLE,
    503: _C.UNAVAILABLE,
    504: _C.UNAVAILABLE,
}
# The same document's table for a stream reset before a status arrived.
RST_TO_GRPC: dict[int, grpc.StatusCode] = {
    frames.REFUSED_STREAM: _C.UNAVAILABLE,  # never processed: safe to retry
    frames.CANCEL: _C.CANCELLED,
    frames.ENHANCE_YOUR_CALM: _C.RESOURCE_EXHAUSTED,
    frames.INADEQUATE_SECURITY: _C.PERMISSION_DENIED,
}
# Response headers gRPC owns; grpc.aio does not show them as metadata, so neither do we.
RESERVED = frozenset(
    (
        "grpc-status",
        "grpc-message",
        "content-type",
        "te",
        "user-agent",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-timeout",
        "host",
    )
)


class MessageError(ValueError):
    """A response body that is not a valid gRPC message stream; `code` is what the call fails with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame_message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return PREFIX.pack(0, len(payload)) + payload


class MessageReader:
    """Cuts length-prefixed messages out of DATA payloads that may split them anywhere."""

    __slots__ = ("_buffer", "limit")

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        if not buffer and len(data) >= 5:  # the common case: whole messages in one DATA frame
            flag, length = PREFIX.unpack_from(data)
            if len(data) == length + 5 and not flag and length <= self.limit:
                return [data[5:]]
        buffer += data
        out: list[bytes] = []
        pos, end = 0, len(buffer)
        while end - pos >= 5:
            flag, length = PREFIX.unpack_from(buffer, pos)
            if flag:
                raise MessageError(_C.INTERNAL, "backend sent a compressed message; none was negotiated")
            if length > self.limit:
                raise MessageError(
                    _C.RESOURCE_EXHAUSTED, f"received message larger than max ({length} vs. {self.limit})"
                )
            if end - pos - 5 < length:
                break
            out.append(bytes(buffer[pos + 5 : pos + 5 + length]))
            pos += 5 + length
        if pos:
            del buffer[:pos]
        return out

    @property
    def partial(self) -> bool:
        """Bytes of an unfinished message are waiting: a stream ending now is truncated."""
        return bool(self._buffer)


def unary_body(chunks: list[bytes], limit: int = MAX_MESSAGE) -> bytes:
    """The one message of a unary response, from its DATA payloads."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if len(data) >= 5:
        flag, length = PREFIX.unpack_from(data)
        if not flag and len(data) == length + 5:
            return data[5:]
    reader = MessageReader(limit)
    messages = reader.feed(data)
    if reader.partial:
        raise MessageError(_C.INTERNAL, "backend response ended inside a message")
    if len(messages) != 1:
        what = "no response message" if not messages else f"{len(messages)} messages"
        raise MessageError(_C.INTERNAL, f"unary call got {what}")
    return messages[0]


def encode_timeout(seconds: float) -> str:
    """A `grpc-timeout` value: at most 8 digits and a unit, rounded up so the server never waits less."""
    millis = max(1, math.ceil(seconds * 1000))
    if millis < 100_000_000:
        return f"{millis}m"
    secs = math.ceil(seconds)
    if secs < 100_000_000:
        return f"{secs}S"
    return f"{min(99_999_999, math.ceil(seconds / 3600))}H"


def decode_message(value: str) -> str:
    """`grpc-message` is percent-encoded UTF-8; bad sequences are kept, never fatal."""
    return unquote(value, errors="replace") if "%" in value else value


def decode_bin(value: str) -> bytes:
    """A `-bin` header value: base64, padded or not (servers send either)."""
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return value.encode()


def code_for_http_status(status: int) -> grpc.StatusCode:
    return HTTP_TO_GRPC.get(status, _C.UNKNOWN)


def code_for_reset(error_code: int) -> grpc.StatusCode:
    return RST_TO_GRPC.get(error_code, _C.INTERNAL)


class ResponseHeaders:
    """What one response header block says, read once; `connection.py` caches these by block bytes."""

    __slots__ = ("content_type", "grpc_message", "grpc_status", "is_grpc", "metadata", "status")

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        self.status: int | None = None
        self.grpc_status: grpc.StatusCode | None = None
        self.grpc_message: str | None = None
        self.content_type: str | None = None
        metadata: list[tuple[str, str | bytes]] = []
        for name, value in fields:
            if name[:1] == ":":
                if name == ":status":
                    self.status = int(value) if value.isdigit() else 0
            elif name in RESERVED:
                if name == "grpc-status":
                    number = int(value) if value.isdigit() else -1
                    self.grpc_status = CODE_BY_NUMBER.get(number, _C.UNKNOWN)
                elif name == "grpc-message":
                    self.grpc_message = decode_message(value)
                elif name == "content-type":
                    self.content_type = value
            elif name.endswith("-bin"):
                metadata.append((name, decode_bin(value)))
            else:
                metadata.append((name, value))
        self.metadata = tuple(metadata)
        ct = self.content_type
        self.is_grpc = ct is not None and ct.startswith("application/grpc")


class ResponseBlocks:
    """Response header blocks read through one connection's HPACK decoder, in arrival order.

    What a block means is cached by its bytes while the decoder's dynamic table stands still: a
    backend answers with the same few blocks (`:status 200` + content-type, `grpc-status: 0`),
    fully indexed once warm, so most responses cost a dict lookup instead of a decode.
    """

    __slots__ = ("_cache", "_decoder")

    def __init__(self) -> None:
        self._decoder = HeaderDecoder()
        self._cache: dict[bytes, ResponseHeaders] = {}

    @property
    def known(self) -> dict[bytes, ResponseHeaders]:
        """The cache itself (emptied in place, never replaced): a hit there is what `read` returns."""
        return self._cache

    def read(self, block: bytes) -> ResponseHeaders:
        """Raises `HeaderError` for a block that does not decode (a connection error)."""
        info = self._cache.get(block)
        if info is None:
            decoder = self._decoder
            before = decoder.mutations
            info = ResponseHeaders(decoder.decode(block))
            if decoder.mutations != before:  # the table changed: every cached meaning may be stale
                self._cache.clear()
            elif len(self._cache) < _BLOCK_CACHE:
                self._cache[block] = info
        return info
