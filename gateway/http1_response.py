"""The response bytes of the lean HTTP/1.1 server (`gateway/http1.py`): an `Answer` written as aiohttp would.

`encode` turns an answer into the bytes aiohttp writes for `web.Response(status, headers, body)` to
an HTTP/1.1 request: `StreamResponse._prepare_headers` and `Response._start` of aiohttp 3.14, in
their order. It runs once per response, so it is written for the instruction count: each header
field is rendered by one C-level `": ".join` (no format string parsed per field), the line-break
check is two `memchr` scans of the fields joined once, and the four headers aiohttp adds itself are
looked for in the answer's `CIMultiDict` with pre-folded `istr` names rather than by lower-casing
and searching the rendered text. `_encode_carrying` is the literal transcription of aiohttp's rules,
for the rare answer that already carries one of those headers, and the tests' reference.
"""

from __future__ import annotations

from time import time

from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_response import REASON_PHRASES
from multidict import istr

from gateway.exchange import Answer

_FIELD = ": ".join  # ("Name", "value") -> "Name: value", in C
_SERVER_FIELD = f"Server: {SERVER_SOFTWARE}"
_CONTENT_LENGTH, _DATE, _SERVER, _CONNECTION, _CONTENT_TYPE = (
    istr("Content-Length"), istr("Date"), istr("Server"), istr("Connection"), istr("Content-Type")
)
_STATUS_HEADS: dict[int, str] = {}  # status -> its status line without CRLF, made on first use
# The Date field and the second it holds, [start, end) in clock time: aiohttp formats the date per
# response (a call and an int() of the clock); a chained float compare here. A clock set back refreshes it.
_date: list[float | str] = [0.0, 0.0, ""]


def encode(answer: Answer, method: str, keep_alive: bool) -> bytes:
    """The response bytes aiohttp writes for `web.Response(status, headers, body)` to an HTTP/1.1 request.

    The answer's headers, then Content-Length unless the body is empty and the answer is to HEAD (or
    a 304) and never for 1xx and 204; a default Content-Type for a non-empty body that may have one;
    Date, Server, and `Connection: close` when the connection ends. HEAD and bodiless statuses send
    no body. The answer's header block, if any, is sent as rendered, after its headers (where a
    merge of its fields into them would put them: it holds none of their names). An answer that
    already carries Content-Length, Date, Server or Connection (none of ours does) takes
    `_encode_carrying`. A header holding a line break raises ValueError, as in aiohttp.
    """
    status, headers, body = answer.status, answer.headers, answer.body
    if _CONTENT_LENGTH in headers or _DATE in headers or _SERVER in headers or _CONNECTION in headers:
        return _encode_carrying(answer, method, keep_alive)
    lines = [_STATUS_HEADS.get(status) or _status_head(status)]
    lines += map(_FIELD, headers.items())
    flat = "".join(lines)  # the status line holds no line break: one scan covers every field
    if "\n" in flat or "\r" in flat:
        raise ValueError("a response header holds a line break")  # aiohttp refuses these too
    block = answer.block
    if block is not None:  # rendered and checked once; its names are none of the headers'
        lines.append(block.lines)
    empty = method == "HEAD" or status < 200 or status == 204 or status == 304
    if (body or (status != 304 and method != "HEAD")) and status >= 200 and status != 204:
        lines.append(f"Content-Length: {len(body)}")
    if body and not empty and _CONTENT_TYPE not in headers:
        lines.append("Content-Type: application/octet-stream")
    date = _date
    if not date[0] <= time() < date[1]:  # type: ignore[operator]
        _new_date()
    lines.append(date[2])  # type: ignore[arg-type]
    lines.append(_SERVER_FIELD)
    if not keep_alive:
        lines.append("Connection: close")
    lines.append("\r\n")  # the last field's CRLF and the empty line
    head = "\r\n".join(lines).encode()
    return head if empty else head + body


def _new_date() -> None:
    """The Date field of this second, in aiohttp's format (its own helper), and when it goes stale."""
    second = int(time())
    _date[2] = f"Date: {rfc822_formatted_time()}"
    _date[0], _date[1] = float(second), float(second + 1)


def _encode_carrying(answer: Answer, method: str, keep_alive: bool) -> bytes:
    """`encode` for an answer whose headers already hold Content-Length, Date, Server or Connection."""
    status, headers, body = answer.status, answer.headers, answer.body
    if answer.block is not None:  # after the headers, as a merge of its fields would put them
        headers.extend(answer.block.fields)
    empty = method == "HEAD" or status < 200 or status in (204, 304)
    if "Content-Length" not in headers and (body or (status != 304 and method != "HEAD")):
        headers["Content-Length"] = str(len(body))
    if empty:
        if (status < 200 or status == 204) and "Content-Length" in headers:
            del headers["Content-Length"]
    elif body:
        headers.setdefault("Content-Type", "application/octet-stream")
    if "Date" not in headers:
        headers["Date"] = rfc822_formatted_time()
    headers.setdefault("Server", SERVER_SOFTWARE)
    if not keep_alive and "Connection" not in headers:
        headers["Connection"] = "close"
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):
        raise ValueError("a response header holds a line break")
    head = f"{_status_head(status)}\r\n{fields}\r\n".encode()
    return head if empty else head + body


def _status_head(status: int) -> str:
    line = _STATUS_HEADS.get(status)
    if line is None:
        line = _STATUS_HEADS[status] = f"HTTP/1.1 {status} {REASON_PHRASES.get(status, '')}"
    return line
