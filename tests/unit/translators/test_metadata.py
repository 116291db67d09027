"""Header-to-metadata rules (grpc-gateway's) and Grpc-Timeout parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translators.errors import BadRequest
from translators.metadata import parse_grpc_timeout, response_headers, to_metadata


def test_inbound_rules() -> None:
    md = to_metadata(
        [
            ("Authorization", "Bearer t"),
            ("Grpc-Metadata-Tenant", "acme"),
            ("Grpc-Metadata-Blob-Bin", "AAEC"),
            ("User-Agent", "curl"),
            ("Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("X-Custom", "kept"),
            ("X-Other", "dropped"),
            ("Grpc-Metadata-Grpc-Timeout", "1S"),
        ],
        allow=frozenset({"x-custom"}),
    )
    assert ("authorization", "Bearer t") in md
    assert ("grpcgateway-authorization", "Bearer t") in md
    assert ("tenant", "acme") in md
    assert ("blob-bin", b"\x00\x01\x02") in md
    assert ("grpcgateway-user-agent", "curl") in md
    assert ("x-custom", "kept") in md
    keys = {k for k, _ in md}
    assert not keys & {"connection", "transfer-encoding", "x-other", "grpc-timeout", "grpcgateway-connection"}


def test_bad_binary_header_is_400() -> None:
    with pytest.raises(BadRequest):
        to_metadata([("Grpc-Metadata-Blob-Bin", "not base64!!")])


def test_outbound_headers_and_trailers() -> None:
    out = response_headers([("x-a", "1"), ("x-b-bin", b"\x00")], [("x-t", "2"), ("grpc-status", "0")])
    assert out == [("Grpc-Metadata-x-a", "1"), ("Grpc-Metadata-x-b-bin", "AA=="), ("Grpc-Trailer-x-t", "2")]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1S", 1.0), ("100m", 0.1), ("2M", 120.0), ("1H", 3600.0), ("500u", 0.0005), ("7n", 7e-9)],
)
def test_grpc_timeout(value: str, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "1", "S", "1s", "123456789S", "-1S", "1.5S", "abc"])
def test_malformed_grpc_timeout(value: str) -> None:
    with pytest.raises(BadRequest):
        parse_grpc_timeout(value)


@given(st.text(max_size=12))
def test_grpc_timeout_never_crashes(value: str) -> None:
    try:
        assert parse_grpc_timeout(value) >= 0
    except BadRequest:
        pass


def _reference(headers: list[tuple[str, str]], allow: frozenset[str], hidden: set[str]) -> list[tuple[str, object]]:
    """grpc-gateway's inbound rules written straight, header by header (the rules before names were remembered)."""
    from translators.metadata import _RESERVED, HOP_BY_HOP, METADATA_PREFIX, PERMANENT, PERMANENT_PREFIX, _b64

    out: list[tuple[str, object]] = []
    for name, value in headers:
        key = name.lower()
        if key in HOP_BY_HOP or key in hidden:
            continue
        if key == "authorization":
            out.append(("authorization", value))
        if key.startswith(METADATA_PREFIX):
            inner = key[len(METADATA_PREFIX) :]
            if inner and not _RESERVED.match(inner):
                out.append((inner, _b64(value, name) if inner.endswith("-bin") else value))
        elif key in PERMANENT:
            out.append((PERMANENT_PREFIX + key, value))
        elif key in allow:
            out.append((key, value))
    return out


NAMES = st.sampled_from(
    ["Authorization", "authorization", "Grpc-Metadata-X-Id", "grpc-metadata-trace-bin", "Grpc-Metadata-Grpc-X",
     "Grpc-Metadata-", "Connection", "TE", "User-Agent", "X-Tenant", "x-tenant", "X-Api-Key", "Cookie", "X-Other"]
)


@given(
    st.lists(st.tuples(NAMES, st.sampled_from(["AQID", "dg", ""])), max_size=8),
    st.sampled_from([frozenset(), frozenset({"x-tenant"}), frozenset({"x-tenant", "x-other"})]),
    st.sampled_from([set(), {"x-api-key"}, {"authorization", "x-tenant"}]),
)
def test_remembered_names_follow_the_rules(headers: list[tuple[str, str]], allow: frozenset[str], hidden: set[str]) -> None:
    """A header's fate is worked out once per name and allow-list: the same metadata as the rules applied each time."""
    for _ in range(2):  # the first pass works names out, the second reads them back
        assert to_metadata(headers, allow, hidden) == _reference(headers, allow, hidden)
