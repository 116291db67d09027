"""The lean HTTP/1.1 server's pure parts: request targets read as aiohttp's own parser reads them."""

from __future__ import annotations

import asyncio

from aiohttp._http_parser import HttpRequestParser  # the C parser aiohttp serves with
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http1 import split_target

SEGMENT = st.text(alphabet="abcXYZ019-._~%2F:@!$&'()*+,;=/?+ ", min_size=0, max_size=12)


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
