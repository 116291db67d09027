"""The frames of the multiplexed WebSocket mode: several gRPC streams over one socket, as pure bytes.

The mode is chosen by a subprotocol on the configured path (see docs/websocket.md, "Several streams
over one WebSocket"); `gateway/handlers/multiplex.py` owns the socket and the streams, this module
only what a frame means and what bytes a reply is, so both are testable without a socket.

`grpc-ws.mux.json`: every frame is a text frame holding one JSON object with a stream `id` (an
integer from 1 to 2^31-1, chosen by the client, increasing with each `open`) and exactly one of:

  from the client   {"id": N, "open": {"method": "/pkg.Service/Method"}}    start a stream
                    {"id": N, "open": {"method": ..., "window": W}}          ... with flow control
                    {"id": N, "message": <request message as JSON>}         one request message
                    {"id": N, "control": "half_close"}                      no more messages
                    {"id": N, "control": "cancel"}                          cancel the call
                    {"id": N, "credit": K}                                  K more response messages
  from the gateway  {"id": N, "result": <response message as JSON>}         one response message
                    {"id": N, "credit": K}                                  K more request messages
                    {"id": N, "status": <google.rpc.Status>}                stream N's last frame
                    {"status": <google.rpc.Status>}                         the socket's last frame

`grpc-ws.mux.proto`: every frame but the socket's last (still the JSON text frame above) is a
binary frame: a 4-byte big-endian stream id, a 1-byte kind, then the kind's payload:

  1 OPEN        4-byte big-endian window (0: no flow control), then the method path in UTF-8
  2 MESSAGE     one serialized protobuf message (request from the client, response from the gateway)
  3 HALF_CLOSE  empty
  4 CANCEL      empty
  5 CREDIT      4-byte big-endian count (either way, as in JSON)
  6 STATUS      a serialized google.rpc.Status: stream N's last frame (gateway only)

Flow control (docs/websocket.md): a stream opened with a window W > 0 gets at most W response
messages beyond what the client has granted with `credit`, and may send at most as many request
messages as the gateway has granted (its first grant follows the open).

A frame that breaks these rules is `BadRequest` (the handler ends the socket with 1007).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import grpc
import orjson
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the detail types)

from translators.errors import BadRequest
from translators.stream_framing import HALF_CLOSE

SUBPROTOCOL_MUX = "grpc-ws.mux.json"
SUBPROTOCOL_MUX_PROTO = "grpc-ws.mux.proto"
CANCEL = "cancel"
CONTROLS = frozenset((HALF_CLOSE, CANCEL))
MAX_STREAM_ID = 2**31 - 1
MAX_WINDOW = 2**31 - 1  # a window or a credit grant
_KINDS = ("open", "message", "control", "credit")
_HEAD = struct.Struct(">IB")  # binary frames: stream id, kind
_COUNT = struct.Struct(">I")
B_OPEN, B_MESSAGE, B_HALF_CLOSE, B_CANCEL, B_CREDIT, B_STATUS = 1, 2, 3, 4, 5, 6


class FrameKind(Enum):
    OPEN = "open"
    MESSAGE = "message"
    CONTROL = "control"
    CREDIT = "credit"


@dataclass(frozen=True, slots=True)
class MuxFrame:
    """One client frame: which stream, what kind, and the kind's payload."""

    stream_id: int
    kind: FrameKind
    method: str = ""  # OPEN: the gRPC path, "/pkg.Service/Method"
    body: bytes = b""  # MESSAGE: the request message's JSON, or its protobuf bytes in binary frames
    control: str = ""  # CONTROL: HALF_CLOSE or CANCEL
    window: int = 0  # OPEN: response messages the client takes before it grants more (0: no flow control)
    credit: int = 0  # CREDIT: how many more messages the client grants


def parse_frame(text: str | bytes) -> MuxFrame:
    """The frame a client text frame carries, or `BadRequest` saying what is wrong with it."""
    try:
        doc: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"a multiplexed frame is one JSON object: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("a multiplexed frame is one JSON object")
    stream_id = doc.get("id")
    if type(stream_id) is not int or not 1 <= stream_id <= MAX_STREAM_ID:
        raise BadRequest(f'a multiplexed frame needs an "id" from 1 to {MAX_STREAM_ID}')
    kinds = [k for k in _KINDS if k in doc]
    if len(kinds) != 1 or len(doc) != 2:
        raise BadRequest('a multiplexed frame has an "id" and exactly one of "open", "message", "control"')
    kind = kinds[0]
    value = doc[kind]
    if kind == "message":
        if not isinstance(value, dict):
            raise BadRequest("a request message is a JSON object")
        return MuxFrame(stream_id, FrameKind.MESSAGE, body=orjson.dumps(value))
    if kind == "control":
        if value not in CONTROLS:
            raise BadRequest(f"unknown control {value!r}: one of {', '.join(sorted(CONTROLS))}")
        return MuxFrame(stream_id, FrameKind.CONTROL, control=value)
    if kind == "credit":
        return MuxFrame(stream_id, FrameKind.CREDIT, credit=_count(value, "a credit"))
    if (
        not isinstance(value, dict)
        or not {"method"} <= set(value) <= {"method", "window"}
        or not isinstance(value["method"], str)
    ):
        raise BadRequest('"open" is {"method": "/pkg.Service/Method"} with an optional "window"')
    window = _count(value["window"], "a window") if "window" in value else 0
    return MuxFrame(stream_id, FrameKind.OPEN, method=_method(value["method"]), window=window)


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 1 <= value <= MAX_WINDOW:
        raise BadRequest(f"{what} is an integer from 1 to {MAX_WINDOW}")
    return value


def _method(method: str) -> str:
    if not method.startswith("/") or method.count("/") != 2:
        raise BadRequest(f"{method!r} is not a gRPC method path like /pkg.Service/Method")
    return method


def parse_binary_frame(data: bytes) -> MuxFrame:
    """The frame a client binary frame carries (`grpc-ws.mux.proto`), or `BadRequest`."""
    if len(data) < _HEAD.size:
        raise BadRequest("a binary multiplexed frame starts with a 4-byte stream id and a kind byte")
    stream_id, kind = _HEAD.unpack_from(data)
    if not 1 <= stream_id <= MAX_STREAM_ID:
        raise BadRequest(f"a multiplexed frame needs a stream id from 1 to {MAX_STREAM_ID}")
    payload = data[_HEAD.size :]
    if kind == B_MESSAGE:
        return MuxFrame(stream_id, FrameKind.MESSAGE, body=payload)
    if kind in (B_HALF_CLOSE, B_CANCEL):
        if payload:
            raise BadRequest("a half-close or cancel frame has no payload")
        return MuxFrame(stream_id, FrameKind.CONTROL, control=HALF_CLOSE if kind == B_HALF_CLOSE else CANCEL)
    if kind == B_CREDIT:
        if len(payload) != _COUNT.size:
            raise BadRequest("a credit frame carries a 4-byte count")
        return MuxFrame(stream_id, FrameKind.CREDIT, credit=_count(_COUNT.unpack(payload)[0], "a credit"))
    if kind == B_OPEN:
        if len(payload) < _COUNT.size:
            raise BadRequest("an open frame carries a 4-byte window, then the method")
        (window,) = _COUNT.unpack_from(payload)
        if window > MAX_WINDOW:
            raise BadRequest(f"a window is at most {MAX_WINDOW}")
        try:
            method = payload[_COUNT.size :].decode()
        except UnicodeDecodeError:
            raise BadRequest("the method path is not UTF-8") from None
        return MuxFrame(stream_id, FrameKind.OPEN, method=_method(method), window=window)
    raise BadRequest(f"unknown binary frame kind {kind}")


def result_frame(stream_id: int, body: bytes) -> bytes:
    """One response message of stream `stream_id`; `body` is its JSON rendering."""
    return b'{"id":%d,"result":%b}' % (stream_id, body)


def status_frame(stream_id: int, status: bytes) -> bytes:
    """Stream `stream_id`'s last frame; `status` is a google.rpc.Status JSON (code 0 when OK)."""
    return b'{"id":%d,"status":%b}' % (stream_id, status)


def credit_frame(stream_id: int, count: int) -> bytes:
    """The gateway grants stream `stream_id` `count` more request messages."""
    return b'{"id":%d,"credit":%d}' % (stream_id, count)


def binary_message_frame(stream_id: int, message: bytes) -> bytes:
    """One response message of stream `stream_id`, as its serialized protobuf."""
    return _HEAD.pack(stream_id, B_MESSAGE) + message


def binary_credit_frame(stream_id: int, count: int) -> bytes:
    return _HEAD.pack(stream_id, B_CREDIT) + _COUNT.pack(count)


def binary_status_frame(stream_id: int, code: grpc.StatusCode, message: str, details: list[Mapping[str, Any]]) -> bytes:
    """Stream `stream_id`'s last frame: a serialized google.rpc.Status (details as `Any`)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    if details:
        try:
            json_format.ParseDict({"details": list(details)}, status, ignore_unknown_fields=True)
        except json_format.ParseError:  # a detail of a type this process does not know: the status without it
            del status.details[:]
    return _HEAD.pack(stream_id, B_STATUS) + status.SerializeToString()
