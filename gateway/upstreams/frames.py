"""HTTP/2 frames (RFC 9113) as a gRPC client needs them: constants, builders and one splitter.

Pure bytes in and out, no I/O: the connection (`session.py` up to `connection.py`) owns the socket
and the stream state. Builders return ready-to-write bytes; `split_frames` cuts complete frames off
a buffer and says how much it used, so a partial frame waits for more input. It is the reference
splitter the frame tests hold the builders to; `connection.py` cuts its reads with the same rule
written into its dispatch loop (one pass, no Frame objects). Frame headers go through one
precompiled `struct`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types.
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD
ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}

# Settings (RFC 9113 6.5.2).
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LIMIT = 2**24 - 1

# 24-bit length as (high 8 bits, low 16 bits), type, flags, stream id (the reserved bit is masked off).
HEAD = struct.Struct(">BHBBL")
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")


class Frame(NamedTuple):
    type: int
    flags: int
    stream_id: int
    payload: bytes


# A Frame made without NamedTuple's generated (Python-level) __new__: a C call, on every frame.
_new = tuple.__new__


class FrameError(ValueError):
    """A frame that breaks HTTP/2: a connection error with `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    return HEAD.pack(length >> 16, length & 0xFFFF, frame_type, flags, stream_id)


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return HEAD.pack(n >> 16, n & 0xFFFF, frame_type, flags, stream_id) + payload


def settings(values: dict[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values.items()))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, _U32.pack(code))


def ping(payload: bytes, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, payload)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def headers(stream_id: int, block: bytes, max_frame: int, end_stream: bool = False) -> bytes:
    """A HEADERS frame, followed by CONTINUATION frames when the block exceeds `max_frame`."""
    flags = END_STREAM if end_stream else 0
    n = len(block)
    if n <= max_frame:
        return HEAD.pack(n >> 16, n & 0xFFFF, HEADERS, flags | END_HEADERS, stream_id) + block
    parts = [frame(HEADERS, flags, stream_id, block[:max_frame])]
    for start in range(max_frame, n, max_frame):
        chunk = block[start : start + max_frame]
        last = start + max_frame >= n
        parts.append(frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk))
    return b"".join(parts)


def split_frames(data: bytes, max_frame: int = MAX_FRAME_LIMIT) -> tuple[list[Frame], int]:
    """The complete frames at the head of `data` and how many bytes they took."""
    frames: list[Frame] = []
    pos, end = 0, len(data)
    while end - pos >= 9:
        hi, lo, frame_type, flags, stream_id = HEAD.unpack_from(data, pos)
        length = hi << 16 | lo
        if length > max_frame:
            raise FrameError(FRAME_SIZE_ERROR, f"frame of {length} bytes above the {max_frame} allowed")
        stop = pos + 9 + length
        if stop > end:
            break
        frames.append(_new(Frame, (frame_type, flags, stream_id & 0x7FFFFFFF, data[pos + 9 : stop])))
        pos = stop
    return frames, pos


def frame_length(data: bytes) -> int:
    """The payload length in the frame header at the start of `data` (at least 9 bytes)."""
    hi, lo = HEAD.unpack_from(data)[:2]
    return int(hi << 16 | lo)


def strip_padding(flags: int, payload: bytes) -> bytes:
    """A DATA or HEADERS payload without its padding (the PADDED flag), or FrameError."""
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise FrameError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


def header_fragment(flags: int, payload: bytes) -> bytes:
    """The header block fragment of a HEADERS payload: padding and priority fields removed."""
    if flags & (PADDED | PRIORITY_FLAG):
        payload = strip_padding(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise FrameError(FRAME_SIZE_ERROR, "HEADERS priority fields truncated")
            payload = payload[5:]
    return payload


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise FrameError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def parse_window_update(payload: bytes) -> int:
    if len(payload) != 4:
        raise FrameError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
    return int(_U32.unpack(payload)[0]) & 0x7FFFFFFF


def parse_rst_stream(payload: bytes) -> int:
    if len(payload) != 4:
        raise FrameError(FRAME_SIZE_ERROR, "RST_STREAM payload must be 4 bytes")
    return int(_U32.unpack(payload)[0])


def parse_goaway(payload: bytes) -> tuple[int, int, bytes]:
    if len(payload) < 8:
        raise FrameError(FRAME_SIZE_ERROR, "GOAWAY payload truncated")
    last, code = _GOAWAY.unpack_from(payload)
    return last & 0x7FFFFFFF, code, payload[8:]
