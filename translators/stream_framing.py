"""How a gRPC stream's messages and final status are framed over HTTP and WebSocket, as pure bytes.

The handlers own the sockets; this module owns the bytes each message and status becomes, so the
framing is testable without a socket. Messages arrive here already rendered as JSON bytes by
`translators.response`.

HTTP server streams (`StreamFramer`), chosen by `choose_format`:
  ndjson      `{"result": <message>}` per line; a failure after the stream began is a last
              `{"error": <google.rpc.Status>}` line (grpc-gateway's framing). The default.
  json_array  `[<message>,<message>,...]` (Envoy's framing), configured per route; a failure after
              the stream began ends the array with a last element `{"error": <google.rpc.Status>}`.
  sse         `data: <message>` events, a failure is a last `event: error` whose data is the
              Status; chosen whenever the client sends `Accept: text/event-stream`.
HTTP client streams (`RequestSplitter`): a body of newline-delimited JSON messages, cut as bytes
arrive, or one JSON array of messages (read whole, up to the body limit); the first non-blank
byte tells which.
WebSocket (see docs/websocket.md): `{"result": <message>}` text frames out, a final
`{"status": <google.rpc.Status>}` frame, then a close code from `close_code`, the one table of them.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

import grpc
import orjson

from translators.errors import BadRequest, PayloadTooLarge

StreamFormat = Literal["ndjson", "json_array", "sse"]
CONTENT_TYPES: dict[str, str] = {
    "ndjson": "application/x-ndjson",
    "json_array": "application/json",
    "sse": "text/event-stream",
}
# Media types a client stream body may be sent as (plus any +json).
REQUEST_STREAM_TYPES = frozenset(("application/json", "application/x-ndjson", "application/jsonl"))
_BLANK = b" \t\r\n"


def choose_format(accept: str | None, configured: str) -> StreamFormat:
    """SSE when the client accepts `text/event-stream`, else the route's configured format."""
    if accept and "text/event-stream" in accept.lower():
        return "sse"
    return "json_array" if configured == "json_array" else "ndjson"


class StreamFramer:
    """One response stream's framing state: whether anything was sent, whether it is closed."""

    __slots__ = ("_ended", "_started", "format")

    def __init__(self, fmt: StreamFormat) -> None:
        self.format = fmt
        self._started = False
        self._ended = False

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def message(self, body: bytes) -> bytes:
        """The bytes of one message, whose JSON rendering is `body`."""
        fmt = self.format
        if fmt == "ndjson":
            return b'{"result":' + body + b"}\n"
        if fmt == "sse":
            return b"data: " + body + b"\n\n"
        lead = b"," if self._started else b"["
        self._started = True
        return lead + body

    def error(self, status: bytes) -> bytes:
        """The stream's last bytes when it fails after it began; `status` is a google.rpc.Status JSON."""
        self._ended = True
        fmt = self.format
        if fmt == "ndjson":
            return b'{"error":' + status + b"}\n"
        if fmt == "sse":
            return b"event: error\ndata: " + status + b"\n\n"
        lead = b"," if self._started else b"["
        return lead + b'{"error":' + status + b"}]"

    def end(self) -> bytes:
        """The bytes that close a stream that ended well (the array's bracket)."""
        if self._ended or self.format != "json_array":
            return b""
        self._ended = True
        return b"]" if self._started else b"[]"


def is_request_stream_type(content_type: str | None) -> bool:
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in REQUEST_STREAM_TYPES or media.endswith("+json")


class RequestSplitter:
    """Cuts a client-stream body into one JSON document per message as its bytes arrive.

    Newline-delimited JSON is cut line by line (blank lines skipped), each line at most `limit`
    bytes. A body whose first non-blank byte is `[` is one JSON array, kept until the end (at most
    `limit` bytes) and then cut into its elements.
    """

    __slots__ = ("_array", "_buffer", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._array: bool | None = None

    @property
    def format(self) -> StreamFormat:
        """`json_array` once the body showed a `[` first, else `ndjson`."""
        return "json_array" if self._array else "ndjson"

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        if self._array is None:
            start = buffer.lstrip(_BLANK)
            if not start:
                buffer.clear()
                return []
            self._array = start[:1] == b"["
        if self._array:
            if len(buffer) > self.limit:
                raise PayloadTooLarge(self.limit)
            return []
        out: list[bytes] = []
        end = buffer.rfind(b"\n")
        if end >= 0:
            for line in bytes(buffer[:end]).split(b"\n"):
                out.extend(self._line(line))
            del buffer[: end + 1]
        if len(buffer) > self.limit:
            raise PayloadTooLarge(self.limit)
        return out

    def finish(self) -> list[bytes]:
        """The messages left at the end of the body."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if not self._array:
            return self._line(rest)
        try:
            items = orjson.loads(rest)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON array of messages: {exc}") from None
        if not isinstance(items, list):
            raise BadRequest("a client stream body is newline-delimited JSON or one JSON array")
        return [orjson.dumps(item) for item in items]

    def _line(self, line: bytes) -> list[bytes]:
        line = line.strip(_BLANK)
        if not line:
            return []
        if len(line) > self.limit:
            raise PayloadTooLarge(self.limit)
        return [line]


# ---- WebSocket ----------------------------------------------------------------------------------

CONTROL_KEY = "@control"  # never a protobuf JSON field name, so a control frame is never a message
HALF_CLOSE = "half_close"
SUBPROTOCOL_JSON = "grpc-ws.json"
SUBPROTOCOL_PROTO = "grpc-ws.proto"
BEARER_PREFIX = "bearer."  # a Sec-WebSocket-Protocol entry carrying a token, never selected


class Ending(Enum):
    """Why a WebSocket stream ended; `close_code` maps each to its close code."""

    STATUS = "status"  # the backend's (or the gateway's) final gRPC status
    INVALID_FRAME = "invalid_frame"  # a frame that is not a valid message: 1007
    UNSUPPORTED_FRAME = "unsupported_frame"  # binary in JSON mode, a message after half-close: 1003
    POLICY = "policy"  # a policy refused a message: 1008
    TOO_BIG = "too_big"  # a frame over the limit: 1009
    IDLE = "idle"  # nothing either way for the idle timeout: 1001
    SHUTDOWN = "shutdown"  # the gateway is stopping: 1001


_CLOSE_CODES = {
    Ending.INVALID_FRAME: 1007,
    Ending.UNSUPPORTED_FRAME: 1003,
    Ending.POLICY: 1008,
    Ending.TOO_BIG: 1009,
    Ending.IDLE: 1001,
    Ending.SHUTDOWN: 1001,
}


def close_code(ending: Ending, code: grpc.StatusCode) -> int:
    """The close code of a stream: 1000 for OK, 1011 for any other status, the table for the rest."""
    if ending is Ending.STATUS:
        return 1000 if code is grpc.StatusCode.OK else 1011
    return _CLOSE_CODES[ending]


def control_of(text: str) -> str | None:
    """The control name a text frame carries (`{"@control": "half_close"}`), or None for a message."""
    head = text.lstrip()[:32]
    if not head.startswith("{") or CONTROL_KEY not in text:
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or CONTROL_KEY not in doc:
        return None
    value = doc[CONTROL_KEY]
    if not isinstance(value, str) or len(doc) != 1:
        raise BadRequest(f"a control frame is {{{CONTROL_KEY!r}: <name>}} and nothing else")
    return value


def result_frame(body: bytes) -> bytes:
    return b'{"result":' + body + b"}"


def status_frame(status: bytes) -> bytes:
    """The last frame of every stream; `status` is a google.rpc.Status JSON (code 0 when OK)."""
    return b'{"status":' + status + b"}"


def split_subprotocols(header: str | None) -> tuple[list[str], str | None]:
    """(the offered subprotocols, a bearer token offered as `bearer.<token>`) from the header."""
    offered: list[str] = []
    token = None
    for entry in (header or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.lower().startswith(BEARER_PREFIX):
            token = entry[len(BEARER_PREFIX):]
        else:
            offered.append(entry)
    return offered, token
