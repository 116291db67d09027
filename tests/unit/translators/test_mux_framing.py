"""The multiplexed WebSocket frames, as bytes: what a client frame means and what a reply is."""

from __future__ import annotations

import struct

import grpc
import orjson
import pytest
from google.rpc import status_pb2

from translators.errors import BadRequest
from translators.mux_framing import (
    MAX_STREAM_ID,
    MAX_WINDOW,
    FrameKind,
    MuxFrame,
    binary_credit_frame,
    binary_message_frame,
    binary_status_frame,
    credit_frame,
    parse_binary_frame,
    parse_frame,
    result_frame,
    status_frame,
)


def test_open_message_and_controls() -> None:
    assert parse_frame('{"id": 1, "open": {"method": "/echo.v1.EchoService/Chat"}}') == MuxFrame(
        1, FrameKind.OPEN, method="/echo.v1.EchoService/Chat"
    )
    frame = parse_frame(b'{"message": {"message": "hi", "repeat": 2}, "id": 7}')
    assert frame.stream_id == 7 and frame.kind is FrameKind.MESSAGE
    assert orjson.loads(frame.body) == {"message": "hi", "repeat": 2}
    assert parse_frame('{"id": 3, "control": "half_close"}').control == "half_close"
    assert parse_frame(f'{{"id": {MAX_STREAM_ID}, "control": "cancel"}}').control == "cancel"


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"id": 0, "control": "cancel"}',
        f'{{"id": {MAX_STREAM_ID + 1}, "control": "cancel"}}',
        '{"id": true, "control": "cancel"}',
        '{"id": "1", "control": "cancel"}',
        '{"id": 1}',
        '{"id": 1, "control": "cancel", "extra": 1}',
        '{"id": 1, "control": "cancel", "message": {}}',
        '{"id": 1, "control": "explode"}',
        '{"id": 1, "message": [1]}',
        '{"id": 1, "open": {"method": "echo.v1.EchoService.Chat"}}',
        '{"id": 1, "open": {"method": "/echo.v1.EchoService/Chat", "x": 1}}',
        '{"id": 1, "open": "/echo.v1.EchoService/Chat"}',
    ],
)
def test_broken_frames_are_bad_requests(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_frame(text)


def test_reply_frames_are_json() -> None:
    assert orjson.loads(result_frame(5, b'{"message":"x"}')) == {"id": 5, "result": {"message": "x"}}
    status = b'{"code":0,"message":"","details":[]}'
    assert orjson.loads(status_frame(5, status)) == {"id": 5, "status": {"code": 0, "message": "", "details": []}}


def test_window_and_credit_in_json() -> None:
    opened = parse_frame('{"id": 1, "open": {"method": "/echo.v1.EchoService/Chat", "window": 8}}')
    assert opened == MuxFrame(1, FrameKind.OPEN, method="/echo.v1.EchoService/Chat", window=8)
    assert parse_frame('{"id": 2, "credit": 3}') == MuxFrame(2, FrameKind.CREDIT, credit=3)
    assert orjson.loads(credit_frame(2, 16)) == {"id": 2, "credit": 16}


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 1, "credit": 0}',
        '{"id": 1, "credit": -1}',
        '{"id": 1, "credit": 1.5}',
        f'{{"id": 1, "credit": {MAX_WINDOW + 1}}}',
        '{"id": 1, "credit": true}',
        '{"id": 1, "open": {"method": "/echo.v1.EchoService/Chat", "window": 0}}',
        '{"id": 1, "open": {"method": "/echo.v1.EchoService/Chat", "window": "8"}}',
    ],
)
def test_bad_windows_and_credits(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_frame(text)


def head(sid: int, kind: int) -> bytes:
    return struct.pack(">IB", sid, kind)


def test_binary_frames() -> None:
    opened = parse_binary_frame(head(3, 1) + struct.pack(">I", 4) + b"/echo.v1.EchoService/Chat")
    assert opened == MuxFrame(3, FrameKind.OPEN, method="/echo.v1.EchoService/Chat", window=4)
    assert parse_binary_frame(head(3, 1) + b"\0\0\0\0/a.B/C").window == 0
    assert parse_binary_frame(head(3, 2) + b"\x0a\x01x") == MuxFrame(3, FrameKind.MESSAGE, body=b"\x0a\x01x")
    assert parse_binary_frame(head(3, 2)).body == b""  # an empty message is a valid protobuf
    assert parse_binary_frame(head(3, 3)).control == "half_close"
    assert parse_binary_frame(head(MAX_STREAM_ID, 4)).control == "cancel"
    assert parse_binary_frame(head(3, 5) + struct.pack(">I", 7)) == MuxFrame(3, FrameKind.CREDIT, credit=7)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0\0\0\1",
        head(0, 3),
        head(MAX_STREAM_ID + 1, 3),
        head(1, 0),
        head(1, 6),  # STATUS comes from the gateway only
        head(1, 7),
        head(1, 3) + b"x",
        head(1, 4) + b"x",
        head(1, 5) + b"\0\0\0",
        head(1, 5) + struct.pack(">I", 0),
        head(1, 1) + b"\0\0",
        head(1, 1) + struct.pack(">I", 2**31) + b"/a.B/C",
        head(1, 1) + b"\0\0\0\0/a.B/\xff",
        head(1, 1) + b"\0\0\0\0a.B.C",
    ],
)
def test_broken_binary_frames(data: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_binary_frame(data)


def test_binary_replies() -> None:
    assert binary_message_frame(9, b"\x08\x01") == head(9, 2) + b"\x08\x01"
    assert binary_credit_frame(9, 16) == head(9, 5) + struct.pack(">I", 16)
    frame = binary_status_frame(9, grpc.StatusCode.NOT_FOUND, "gone", [])
    assert frame[:5] == head(9, 6)
    status = status_pb2.Status.FromString(frame[5:])
    assert (status.code, status.message, list(status.details)) == (5, "gone", [])
    detail = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "R", "domain": "d"}
    with_detail = status_pb2.Status.FromString(binary_status_frame(1, grpc.StatusCode.ABORTED, "x", [detail])[5:])
    assert with_detail.details[0].type_url.endswith("google.rpc.ErrorInfo")
