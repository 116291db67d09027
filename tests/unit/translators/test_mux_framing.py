"""The multiplexed WebSocket frames, as bytes: what a client frame means and what a reply is."""

from __future__ import annotations

import orjson
import pytest

from translators.errors import BadRequest
from translators.mux_framing import (
    MAX_STREAM_ID,
    FrameKind,
    MuxFrame,
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
