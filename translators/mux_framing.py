"""The frames of the multiplexed WebSocket mode: several gRPC streams over one socket, as pure bytes.

The mode is chosen by the `grpc-ws.mux.json` subprotocol on the configured path (see
docs/websocket.md, "Several streams over one WebSocket"); `gateway/handlers/multiplex.py` owns the
socket and the streams, this module only what a frame means and what bytes a reply is, so both are
testable without a socket. Every frame is a text frame holding one JSON object with a stream `id`
(an integer from 1 to 2^31-1, chosen by the client, increasing with each `open`) and exactly one of:

  from the client   {"id": N, "open": {"method": "/pkg.Service/Method"}}    start a stream
                    {"id": N, "message": <request message as JSON>}         one request message
                    {"id": N, "control": "half_close"}                      no more messages
                    {"id": N, "control": "cancel"}                          cancel the call
  from the gateway  {"id": N, "result": <response message as JSON>}         one response message
                    {"id": N, "status": <google.rpc.Status>}                stream N's last frame
                    {"status": <google.rpc.Status>}                         the socket's last frame

A frame that breaks these rules is `BadRequest` (the handler ends the socket with 1007).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from translators.errors import BadRequest
from translators.stream_framing import HALF_CLOSE

SUBPROTOCOL_MUX = "grpc-ws.mux.json"
CANCEL = "cancel"
CONTROLS = frozenset((HALF_CLOSE, CANCEL))
MAX_STREAM_ID = 2**31 - 1
_KINDS = ("open", "message", "control")


class FrameKind(Enum):
    OPEN = "open"
    MESSAGE = "message"
    CONTROL = "control"


@dataclass(frozen=True, slots=True)
class MuxFrame:
    """One client frame: which stream, what kind, and the kind's payload."""

    stream_id: int
    kind: FrameKind
    method: str = ""  # OPEN: the gRPC path, "/pkg.Service/Method"
    body: bytes = b""  # MESSAGE: the request message's JSON
    control: str = ""  # CONTROL: HALF_CLOSE or CANCEL


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
    if not isinstance(value, dict) or set(value) != {"method"} or not isinstance(value["method"], str):
        raise BadRequest('"open" is {"method": "/pkg.Service/Method"}')
    method = value["method"]
    if not method.startswith("/") or method.count("/") != 2:
        raise BadRequest(f"{method!r} is not a gRPC method path like /pkg.Service/Method")
    return MuxFrame(stream_id, FrameKind.OPEN, method=method)


def result_frame(stream_id: int, body: bytes) -> bytes:
    """One response message of stream `stream_id`; `body` is its JSON rendering."""
    return b'{"id":%d,"result":%b}' % (stream_id, body)


def status_frame(stream_id: int, status: bytes) -> bytes:
    """Stream `stream_id`'s last frame; `status` is a google.rpc.Status JSON (code 0 when OK)."""
    return b'{"id":%d,"status":%b}' % (stream_id, status)
