"""The request head of the lean HTTP/1.1 server (`gateway/http1.py`): header fields and target.

`Http1Protocol._parse` checks the request line itself, then hands the header fields to `read_fields`
and the target to `split_target`, both once per request served here, on the hot path. Each returns
None for a request the lean server leaves to aiohttp, so only what aiohttp's parser reads the same
way is read here: plain `token ":" visible-ASCII` fields within the count limit, a Host, one plain
Content-Length, a Connection of close or keep-alive, no Transfer-Encoding, Upgrade or Expect, a
target without a fragment. `Fields` is what the server needs of the header fields, an immutable
value a keep-alive connection reuses while its client sends the same fields again; `split_target`
decodes the path and query as aiohttp's `URL.build(..., encoded=True)` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from gateway.handlers.grpc_web import media_type

# The header fields: each a token, a colon, then visible ASCII, spaces and tabs. No obs-fold, no
# bytes over 0x7e: those are aiohttp's.
_BLOCK = re.compile(r"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t -~]*)*")
# One header field of a block `_BLOCK` matched: its name and its value without surrounding spaces and tabs.
_FIELD = re.compile(r"\r\n([^:]+):[ \t]*((?:[^\r]*[^\r \t])?)[ \t]*")
_EMPTY_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())


@dataclass(frozen=True, slots=True)
class Fields:
    """What the lean server reads from a request's header fields (immutable: a connection reuses it)."""

    headers: CIMultiDictProxy[str]
    host: str
    keep_alive: bool
    length: int  # of the body; 0 without Content-Length
    grpc_web: bool  # a gRPC-Web content type (served by aiohttp when the method is POST)


def read_fields(block: bytes, max_headers: int) -> Fields | None:
    """The header fields after the request line (`block` starts with CRLF), or None when the request
    is aiohttp's: a field that is not `token ":" visible-ASCII`, more than `max_headers`, no Host,
    Transfer-Encoding, Upgrade, Expect, a Connection other than close or keep-alive, or a
    Content-Length that is not one plain number."""
    text = block.decode("latin-1")
    if _BLOCK.fullmatch(text) is None:
        return None
    pairs = _FIELD.findall(text)
    if len(pairs) > max_headers:
        return None
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    host = headers.get("Host")
    if host is None or "Transfer-Encoding" in headers or "Upgrade" in headers or "Expect" in headers:
        return None
    connection = headers.get("Connection")
    keep_alive = True
    if connection is not None:
        token = connection.lower()
        if token == "close":
            keep_alive = False
        elif token != "keep-alive":
            return None
    length = headers.get("Content-Length")
    if length is not None and (
        not (length.isdigit() and len(length) < 16) or len(headers.getall("Content-Length")) > 1
    ):
        return None
    grpc_web = media_type(headers.get("Content-Type")) is not None
    return Fields(headers, host, keep_alive, int(length) if length is not None else 0, grpc_web)


def split_target(target: str) -> tuple[str, MultiDictProxy[str]] | None:
    """The decoded path and the query of an origin-form target, as aiohttp's parser makes them
    (`URL.build(path, query_string, encoded=True)`); None for one with a fragment (aiohttp's)."""
    if "%" not in target and "?" not in target and "." not in target and "//" not in target and "#" not in target:
        return target, _EMPTY_QUERY  # nothing to decode, split or normalise: yarl would keep it as it is
    if "#" in target:
        return None
    raw, _, query_string = target.partition("?")
    url = URL.build(path=raw, query_string=query_string, encoded=True)
    return url.path, url.query
