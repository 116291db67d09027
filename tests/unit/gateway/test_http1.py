"""The lean HTTP/1.1 server's pure parts: targets split as aiohttp's parser splits them, header fields read
or left to aiohttp, and response bytes written by aiohttp's rules."""

from __future__ import annotations

import asyncio

from aiohttp._http_parser import HttpRequestParser  # the C parser aiohttp serves with
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.exchange import Answer
from gateway.http1 import read_fields, split_target
from gateway.http1_response import _encode_carrying, encode

SEGMENT = st.text(alphabet="abcXYZ019-._~%2F:@!$&'()*+,;=/?+ []{}\"<>|^`\\", min_size=0, max_size=12)


def aiohttp_reads(target: str) -> tuple[str, list[tuple[str, str]]]:
    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(BaseProtocol(loop), loop, 2**16)
        messages, _, _ = parser.feed_data(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        url = messages[0][0].url
        return url.path, list(url.query.items())
    finally:
        loop.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=4))
def test_targets_split_as_aiohttp_splits_them(parts: list[str]) -> None:
    target = "/" + "/".join(parts).replace(" ", "%20")
    split = split_target(target)
    assert split is not None
    path, query = split
    assert (path, list(query.items())) == aiohttp_reads(target)


def test_examples() -> None:
    for target in ("/", "/v1/items/item-1", "/v1/items/it%65m-1", "/a/../b", "/a//b/", "/v1/x:publish",
                   "/v1/items?tag=a&tag=b&x=%20+y", "/v1/a%2Fb?", "/v1/./x"):
        split = split_target(target)
        assert split is not None
        assert (split[0], list(split[1].items())) == aiohttp_reads(target), target
    assert split_target("/a#frag") is None


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([100, 200, 201, 204, 304, 400, 404, 413, 499, 500, 503, 599]),
    st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "DELETE"]),
    st.binary(max_size=20),
    st.booleans(),
    st.lists(st.sampled_from(["Content-Type", "X-Request-Id", "Allow", "Grpc-Metadata-x", "Vary"]), max_size=4),
)
def test_encode_follows_aiohttps_rules(status: int, method: str, body: bytes, keep_alive: bool, names: list[str]) -> None:
    """The fast path writes what the literal transcription of aiohttp's rules (`_encode_carrying`) writes."""
    pairs = [(name, f"v{i}") for i, name in enumerate(names)]
    fast = encode(Answer(status, CIMultiDict(pairs), body), method, keep_alive)
    general = _encode_carrying(Answer(status, CIMultiDict(pairs), body), method, keep_alive)
    assert fast == general


def test_encode_keeps_a_header_the_answer_already_has() -> None:
    answer = Answer(200, CIMultiDict([("Content-Type", "a/b"), ("Date", "then"), ("Server", "me")]), b"x")
    out = encode(answer, "GET", False)
    assert out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nDate: then\r\nServer: me\r\n")
    assert out.endswith(b"Content-Length: 1\r\nConnection: close\r\n\r\nx")


def test_encode_refuses_a_line_break_in_a_header() -> None:
    for value in ("a\r\nSet-Cookie: x", "a\nb", "a\rb"):
        try:
            encode(Answer(200, CIMultiDict([("X", value)]), b""), "GET", True)
        except ValueError:
            continue
        raise AssertionError(value)


def test_fields_that_are_aiohttps() -> None:
    ok = read_fields(b"\r\nHost: h\r\nX-A:  v \t\r\nContent-Length: 3", 100)
    assert ok is not None and ok.host == "h" and ok.length == 3 and ok.keep_alive and ok.headers["x-a"] == "v"
    assert read_fields(b"\r\nHost: h\r\nConnection: close", 100).keep_alive is False  # type: ignore[union-attr]
    for block in (b"\r\nX: y", b"\r\nHost : h", b"\r\nHost: h\r\n folded", b"\r\nHost: h\r\nTransfer-Encoding: chunked",
                  b"\r\nHost: h\r\nUpgrade: websocket", b"\r\nHost: h\r\nExpect: 100-continue",
                  b"\r\nHost: h\r\nConnection: upgrade", b"\r\nHost: h\r\nContent-Length: -1",
                  b"\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1", b"\r\nHost: h\xe9",
                  b"\r\nHost: h\x00"):
        assert read_fields(block, 100) is None, block
    assert read_fields(b"\r\nHost: h\r\nA: 1\r\nB: 2", 2) is None


def test_encode_refuses_a_line_break_beside_a_header_aiohttp_adds() -> None:
    """The general path (an answer already carrying Date) checks its fields as the fast path does."""
    for value in ("a\r\nSet-Cookie: x", "a\nb"):
        try:
            encode(Answer(200, CIMultiDict([("Date", "then"), ("X", value)]), b""), "GET", True)
        except ValueError:
            continue
        raise AssertionError(value)


def test_encode_dates_the_response_as_aiohttp_does() -> None:
    from aiohttp.helpers import rfc822_formatted_time

    before = rfc822_formatted_time()
    out = encode(Answer(200, CIMultiDict(), b""), "GET", True).decode()
    after = rfc822_formatted_time()
    assert f"\r\nDate: {before}\r\n" in out or f"\r\nDate: {after}\r\n" in out
