"""Stream framing as pure bytes: HTTP stream formats, client-stream bodies, WebSocket frames and closes."""

from __future__ import annotations

import grpc
import orjson
import pytest

from translators.errors import BadRequest, PayloadTooLarge
from translators.stream_framing import (
    Ending,
    RequestSplitter,
    StreamFramer,
    choose_format,
    close_code,
    control_of,
    is_request_stream_type,
    result_frame,
    split_subprotocols,
    status_frame,
)

STATUS = b'{"code":10,"message":"x","details":[]}'


@pytest.mark.parametrize(
    ("accept", "configured", "expected"),
    [
        (None, "ndjson", "ndjson"),
        ("application/json", "json_array", "json_array"),
        ("text/event-stream", "json_array", "sse"),
        ("application/json, Text/Event-Stream;q=0.9", "ndjson", "sse"),
    ],
)
def test_choose_format(accept: str | None, configured: str, expected: str) -> None:
    assert choose_format(accept, configured) == expected


def test_ndjson_lines_and_error() -> None:
    framer = StreamFramer("ndjson")
    out = framer.message(b'{"a":1}') + framer.message(b'{"a":2}') + framer.error(STATUS) + framer.end()
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert lines == [{"result": {"a": 1}}, {"result": {"a": 2}}, {"error": orjson.loads(STATUS)}]
    assert framer.content_type == "application/x-ndjson"


@pytest.mark.parametrize(
    ("messages", "fail", "expected"),
    [
        ([], False, []),
        ([b'{"a":1}'], False, [{"a": 1}]),
        ([b'{"a":1}', b'{"a":2}'], False, [{"a": 1}, {"a": 2}]),
        ([b'{"a":1}'], True, [{"a": 1}, {"error": orjson.loads(STATUS)}]),
        ([], True, [{"error": orjson.loads(STATUS)}]),
    ],
)
def test_json_array_is_always_one_valid_document(messages: list[bytes], fail: bool, expected: list[object]) -> None:
    framer = StreamFramer("json_array")
    out = b"".join(framer.message(m) for m in messages)
    if fail:
        out += framer.error(STATUS)
    out += framer.end()
    assert orjson.loads(out) == expected


def test_sse_events() -> None:
    framer = StreamFramer("sse")
    out = framer.message(b'{"a":1}') + framer.error(STATUS)
    assert out == b'data: {"a":1}\n\nevent: error\ndata: ' + STATUS + b"\n\n"
    assert framer.end() == b""


def test_splitter_ndjson_across_chunks() -> None:
    splitter = RequestSplitter(limit=100)
    got = splitter.feed(b'{"a":1}\n\n{"a"') + splitter.feed(b':2}\r\n{"a":3}') + splitter.finish()
    assert got == [b'{"a":1}', b'{"a":2}', b'{"a":3}']


def test_splitter_json_array() -> None:
    splitter = RequestSplitter(limit=100)
    assert splitter.feed(b'  [{"a":1},') == []
    assert splitter.feed(b' {"a":2}]') == []
    assert splitter.finish() == [b'{"a":1}', b'{"a":2}']


@pytest.mark.parametrize("body", [b"[1, 2", b'{"a":1} x'])
def test_splitter_bad_array(body: bytes) -> None:
    splitter = RequestSplitter(limit=100)
    splitter.feed(body)
    if body.startswith(b"["):
        with pytest.raises(BadRequest):
            splitter.finish()
    else:
        assert splitter.finish() == [b'{"a":1} x']  # a bad line is the request translator's to refuse


def test_splitter_limits_each_message_not_the_stream() -> None:
    splitter = RequestSplitter(limit=10)
    for _ in range(100):
        assert splitter.feed(b'{"a":1}\n') == [b'{"a":1}']
    with pytest.raises(PayloadTooLarge):
        splitter.feed(b'{"a":"' + b"x" * 20)
    with pytest.raises(PayloadTooLarge):
        RequestSplitter(limit=10).feed(b"[" + b"1," * 20)


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [(None, True), ("application/json", True), ("application/x-ndjson; charset=utf-8", True),
     ("application/jsonl", True), ("application/vnd.a+json", True), ("text/plain", False)],
)
def test_request_stream_types(content_type: str | None, ok: bool) -> None:
    assert is_request_stream_type(content_type) is ok


def test_control_frames() -> None:
    assert control_of('{"@control": "half_close"}') == "half_close"
    assert control_of(' {"@control":"other"}') == "other"
    assert control_of('{"message": "@control"}') is None
    assert control_of('{"message": "hi"}') is None
    assert control_of("not json {") is None
    with pytest.raises(BadRequest):
        control_of('{"@control": "half_close", "message": "x"}')


def test_websocket_frames_and_close_codes() -> None:
    assert orjson.loads(result_frame(b'{"a":1}')) == {"result": {"a": 1}}
    assert orjson.loads(status_frame(STATUS)) == {"status": orjson.loads(STATUS)}
    assert close_code(Ending.STATUS, grpc.StatusCode.OK) == 1000
    assert close_code(Ending.STATUS, grpc.StatusCode.NOT_FOUND) == 1011
    assert close_code(Ending.INVALID_FRAME, grpc.StatusCode.INVALID_ARGUMENT) == 1007
    assert close_code(Ending.POLICY, grpc.StatusCode.PERMISSION_DENIED) == 1008
    assert close_code(Ending.TOO_BIG, grpc.StatusCode.RESOURCE_EXHAUSTED) == 1009
    assert close_code(Ending.UNSUPPORTED_FRAME, grpc.StatusCode.INVALID_ARGUMENT) == 1003
    assert close_code(Ending.IDLE, grpc.StatusCode.DEADLINE_EXCEEDED) == 1001


def test_subprotocols_carry_a_bearer_token() -> None:
    assert split_subprotocols("grpc-ws.json, bearer.abc.def-ghi") == (["grpc-ws.json"], "abc.def-ghi")
    assert split_subprotocols(None) == ([], None)
    assert split_subprotocols("chat.v1,chat.v2") == (["chat.v1", "chat.v2"], None)
