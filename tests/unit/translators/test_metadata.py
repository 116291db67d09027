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
