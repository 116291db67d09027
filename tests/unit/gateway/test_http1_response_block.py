"""A header block carried by an answer: the bytes of its fields merged into the answer's headers,
and the block's own checks (what aiohttp would refuse, names a reply's headers may hold)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, istr

from gateway.exchange import Answer, HeaderBlock
from gateway.http1_response import _encode_carrying, encode

BLOCK_NAMES = st.lists(
    st.sampled_from([istr("RateLimit-Limit"), "RateLimit-Remaining", "ratelimit-reset", "X-Trace-Id", "Vary"]),
    min_size=1, max_size=4, unique_by=str.lower,
)
VALUES = st.text(alphabet="abc019 ,;=-", max_size=8)


def merged(pairs: list[tuple[str, str]], block: HeaderBlock) -> CIMultiDict[str]:
    headers = CIMultiDict(pairs)
    headers.update(block.fields)  # what stamp_headers does with call.response_headers
    return headers


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([100, 200, 201, 204, 304, 400, 404, 429, 500, 503]),
    st.sampled_from(["GET", "HEAD", "POST", "OPTIONS"]),
    st.binary(max_size=20),
    st.booleans(),
    st.lists(st.sampled_from(["Content-Type", "X-Request-Id", "Allow", "Grpc-Metadata-x", "Grpc-Trailer-y"]), max_size=4),
    BLOCK_NAMES,
    st.data(),
)
def test_a_block_is_sent_as_its_fields_merged_would_be(
    status: int, method: str, body: bytes, keep_alive: bool, names: list[str], block_names: list[str], data: st.DataObject
) -> None:
    pairs = [(name, f"v{i}") for i, name in enumerate(names)]
    block = HeaderBlock.of({name: data.draw(VALUES) for name in block_names})
    expected = _encode_carrying(Answer(status, merged(pairs, block), body), method, keep_alive)
    assert encode(Answer(status, merged(pairs, block), body), method, keep_alive) == expected
    assert encode(Answer(status, CIMultiDict(pairs), body, block), method, keep_alive) == expected
    # an answer that already carries a header aiohttp adds takes the general path, block included
    dated = [*pairs, ("Date", "then")]
    expected = _encode_carrying(Answer(status, merged(dated, block), body), method, keep_alive)
    assert encode(Answer(status, CIMultiDict(dated), body, block), method, keep_alive) == expected


def test_the_lines_are_the_fields_rendered() -> None:
    block = HeaderBlock.of({istr("RateLimit-Limit"): "10", "RateLimit-Remaining": "9", "RateLimit-Reset": "1"})
    assert block.lines == "RateLimit-Limit: 10\r\nRateLimit-Remaining: 9\r\nRateLimit-Reset: 1"
    assert block.fields == {"RateLimit-Limit": "10", "RateLimit-Remaining": "9", "RateLimit-Reset": "1"}


@pytest.mark.parametrize(
    "fields",
    [
        {}, {"X": "a\r\nSet-Cookie: x"}, {"X": "a\nb"}, {"X": "a\rb"}, {"Bad Name": "1"}, {"": "1"},
        # aiohttp's own or read by it, and the names a unary reply's headers hold
        {"Content-Type": "a/b"}, {"content-length": "1"}, {"Date": "d"}, {"Server": "s"}, {"Connection": "close"},
        {"X-Request-Id": "r"}, {"Grpc-Metadata-x": "1"}, {"grpc-trailer-y": "1"},
    ],
)
def test_a_block_refuses_what_it_cannot_carry(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        HeaderBlock.of(fields)
