"""The lean HTTP/2 client's pure layers: frames, HPACK both ways, gRPC message framing, wire rules.

No sockets. The `hpack` package is the independent reference: our request blocks must decode with
its Decoder, and our decoder must read what its Encoder writes (Huffman or not, dynamic table too).
"""

from __future__ import annotations

import asyncio
import base64
import itertools

import grpc
import hpack
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.upstream import UnaryResult
from gateway.upstreams import frames as F
from gateway.upstreams import huffman
from gateway.upstreams.calls import Admission, Call, RefusedStream, outcome, reset_error
from gateway.upstreams.grpc_wire import (
    MessageError,
    MessageReader,
    ResponseBlocks,
    ResponseHeaders,
    code_for_http_status,
    code_for_reset,
    decode_bin,
    decode_message,
    encode_timeout,
    frame_message,
    unary_body,
)
from gateway.upstreams.headers import (
    HeaderDecoder,
    HeaderError,
    literal,
    metadata_block,
    request_prefix,
)
from translators.errors import GatewayError

_C = grpc.StatusCode


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# ---- frames -------------------------------------------------------------------------------------------


def test_control_frames_round_trip() -> None:
    wire = b"".join(
        (
            F.settings({F.ENABLE_PUSH: 0, F.INITIAL_WINDOW_SIZE: 1 << 22}),
            F.SETTINGS_ACK,
            F.window_update(0, 12345),
            F.window_update(7, 1),
            F.rst_stream(3, F.CANCEL),
            F.ping(b"12345678"),
            F.ping(b"abcdefgh", ack=True),
            F.goaway(5, F.ENHANCE_YOUR_CALM, b"calm down"),
        )
    )
    frames, used = F.split_frames(wire)
    assert used == len(wire)
    assert [(f.type, f.flags, f.stream_id) for f in frames] == [
        (F.SETTINGS, 0, 0),
        (F.SETTINGS, F.ACK, 0),
        (F.WINDOW_UPDATE, 0, 0),
        (F.WINDOW_UPDATE, 0, 7),
        (F.RST_STREAM, 0, 3),
        (F.PING, 0, 0),
        (F.PING, F.ACK, 0),
        (F.GOAWAY, 0, 0),
    ]
    assert F.parse_settings(frames[0].payload) == [(F.ENABLE_PUSH, 0), (F.INITIAL_WINDOW_SIZE, 1 << 22)]
    assert frames[1].payload == b""
    assert F.parse_window_update(frames[2].payload) == 12345
    assert F.parse_rst_stream(frames[4].payload) == F.CANCEL
    assert frames[5].payload == b"12345678"
    assert F.parse_goaway(frames[7].payload) == (5, F.ENHANCE_YOUR_CALM, b"calm down")


def test_frame_header_layout_is_rfc_9113() -> None:
    wire = F.frame(F.DATA, F.END_STREAM, 0x7FFFFFFF, b"x" * 70000)
    assert wire[:3] == (70000).to_bytes(3, "big")
    assert wire[3] == F.DATA and wire[4] == F.END_STREAM
    assert wire[5:9] == b"\x7f\xff\xff\xff"
    # The reserved bit of the stream id is ignored on the way in.
    frames, _ = F.split_frames(b"\x00\x00\x00\x00\x00\x80\x00\x00\x05")
    assert frames[0].stream_id == 5


def test_a_large_header_block_is_split_into_continuations() -> None:
    block = bytes(range(256)) * 200  # 51200 bytes
    wire = F.headers(9, block, max_frame=16384, end_stream=True)
    frames, used = F.split_frames(wire)
    assert used == len(wire)
    assert [f.type for f in frames] == [F.HEADERS, F.CONTINUATION, F.CONTINUATION, F.CONTINUATION]
    assert frames[0].flags == F.END_STREAM  # END_STREAM on HEADERS, END_HEADERS on the last CONTINUATION
    assert [f.flags for f in frames[1:]] == [0, 0, F.END_HEADERS]
    assert all(len(f.payload) <= 16384 and f.stream_id == 9 for f in frames)
    assert b"".join(f.payload for f in frames) == block
    small = F.split_frames(F.headers(1, b"abc", 16384))[0]
    assert [(f.type, f.flags, f.payload) for f in small] == [(F.HEADERS, F.END_HEADERS, b"abc")]


@settings(max_examples=200)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_frames_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(F.frame(F.DATA, i % 2, 2 * i + 1, p) for i, p in enumerate(payloads))
    got: list[F.Frame] = []
    buffer = b""
    for chunk in _splits(wire, cuts):
        buffer += chunk
        frames, used = F.split_frames(buffer)
        got.extend(frames)
        buffer = buffer[used:]
    assert buffer == b""
    assert [(f.stream_id, f.flags, f.payload) for f in got] == [
        (2 * i + 1, i % 2, p) for i, p in enumerate(payloads)
    ]


def test_oversized_frame_is_a_frame_size_error() -> None:
    with pytest.raises(F.FrameError) as info:
        F.split_frames(F.header(20000, F.DATA, 0, 1), max_frame=16384)
    assert info.value.code == F.FRAME_SIZE_ERROR


def test_padding_and_priority_are_stripped() -> None:
    assert F.strip_padding(0, b"abc") == b"abc"
    assert F.strip_padding(F.PADDED, b"\x02abc\x00\x00") == b"abc"
    assert F.header_fragment(F.PRIORITY_FLAG, b"\x00\x00\x00\x03\x10block") == b"block"
    assert F.header_fragment(F.PADDED | F.PRIORITY_FLAG, b"\x01\x00\x00\x00\x03\x10block\x00") == b"block"
    with pytest.raises(F.FrameError):
        F.strip_padding(F.PADDED, b"\x09abc")


# ---- HPACK: request blocks --------------------------------------------------------------------------


def test_request_block_decodes_with_hpack() -> None:
    long_value = "v" * 300  # a length that needs a multi-octet integer
    block = (
        request_prefix("http", "127.0.0.1:50071", "/echo.v1.EchoService/Echo")
        + literal(b"grpc-timeout", encode_timeout(5).encode())
        + metadata_block(
            [
                ("x-request-id", "abc"),
                ("trace-bin", b"\x00\x01\x02\x03"),
                ("long", long_value),
                ("raw", b"ok"),
            ]
        )
    )
    assert hpack.Decoder().decode(block) == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/echo.v1.EchoService/Echo"),
        (":authority", "127.0.0.1:50071"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("user-agent", "portcullis-h2/0.1"),
        ("grpc-timeout", "5000m"),
        ("x-request-id", "abc"),
        ("trace-bin", "AAECAw"),  # base64 without padding
        ("long", long_value),
        ("raw", "ok"),
    ]
    tls = hpack.Decoder().decode(request_prefix("https", "svc", "/p"))
    assert tls[1] == (":scheme", "https")


@given(
    st.lists(
        st.tuples(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), st.binary(max_size=200)), max_size=8
    )
)
def test_bin_metadata_is_unpadded_base64_of_the_bytes(pairs: list[tuple[str, bytes]]) -> None:
    metadata: list[tuple[str, str | bytes]] = [(k + "-bin", v) for k, v in pairs]
    decoded = hpack.Decoder().decode(metadata_block(metadata))
    assert [k for k, _ in decoded] == [k for k, _ in metadata]
    for (_, sent), (_, wire) in zip(metadata, decoded):
        assert "=" not in wire
        assert decode_bin(wire) == sent


@given(
    st.lists(
        st.tuples(st.sampled_from(["x-a", "x-b", "x-forwarded-for"]), st.text(max_size=200)), max_size=8
    )
)
def test_text_metadata_encodes_the_same_from_the_cache(pairs: list[tuple[str, str]]) -> None:
    metadata: list[tuple[str, str | bytes]] = list(pairs)
    cold = metadata_block(metadata)
    assert metadata_block(metadata) == cold  # warm: every field from the cache
    assert hpack.Decoder().decode(cold, raw=True) == [(k.encode(), v.encode()) for k, v in pairs]


# ---- HPACK: response decoding -------------------------------------------------------------------------

_names = st.sampled_from([":status", "content-type", "grpc-status", "grpc-message", "x-a", "x-b-bin", "date"])
_headers = st.lists(
    st.tuples(st.one_of(_names, st.from_regex(r"x-[a-z]{1,12}", fullmatch=True)), st.text(max_size=60)),
    max_size=8,
)


@settings(max_examples=150)
@given(
    blocks=st.lists(st.tuples(_headers, st.booleans()), min_size=1, max_size=12),
    table=st.sampled_from([0, 256, 4096]),
)
def test_decoder_reads_what_hpack_encodes(
    blocks: list[tuple[list[tuple[str, str]], bool]], table: int
) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table  # emits a table size update, and forces evictions when small
    decoder = HeaderDecoder()
    for fields, use_huffman in blocks:
        before = decoder.mutations
        wire = encoder.encode(fields, huffman=use_huffman)
        assert decoder.decode(wire) == fields
        if decoder.mutations == before:  # a block that left the table alone decodes the same again
            assert decoder.decode(wire) == fields


def test_decoder_counts_table_mutations_only() -> None:
    encoder, decoder = hpack.Encoder(), HeaderDecoder()
    fields = [(":status", "200"), ("content-type", "application/grpc")]
    decoder.decode(encoder.encode(fields))
    after_first = decoder.mutations
    assert after_first > 0  # content-type value went into the dynamic table
    second = encoder.encode(fields)
    assert decoder.decode(second) == fields
    assert decoder.mutations == after_first  # fully indexed now: cacheable by its bytes
    assert len(second) == 2


@pytest.mark.parametrize(
    "block",
    [b"\x80", b"\xff\xff\xff\xff\xff\xff", b"\xbf", b"\x00\x05ab", b"\x81\x20"],
    ids=["index-0", "huge-integer", "bad-dynamic-index", "truncated-string", "update-after-field"],
)
def test_bad_blocks_are_header_errors(block: bytes) -> None:
    decoder = HeaderDecoder()
    with pytest.raises(HeaderError):
        decoder.decode(block)


@given(st.binary(max_size=100))
def test_huffman_matches_the_rfc_code(data: bytes) -> None:
    coded = hpack.huffman.HuffmanEncoder(
        hpack.huffman_constants.REQUEST_CODES, hpack.huffman_constants.REQUEST_CODES_LENGTH
    ).encode(data)
    assert huffman.encode(data) == coded
    assert huffman.decode(coded) == data


def test_huffman_rejects_eos_and_bad_padding() -> None:
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(b"\xff\xff\xff\xff")  # EOS
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(b"\x00")  # '0' then 3 zero bits of padding


# ---- gRPC messages ------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    messages=st.lists(st.binary(max_size=2000), max_size=10),
    cuts=st.lists(st.integers(min_value=0, max_value=30_000), max_size=12),
)
def test_messages_survive_any_chunking(messages: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(frame_message(m) for m in messages)
    reader = MessageReader()
    got: list[bytes] = []
    for chunk in _splits(wire, cuts):
        got.extend(reader.feed(chunk))
    assert got == messages
    assert not reader.partial
    if len(messages) == 1:
        assert unary_body(_splits(wire, cuts)) == messages[0]


def test_compressed_and_oversized_messages_are_refused() -> None:
    with pytest.raises(MessageError) as info:
        MessageReader().feed(b"\x01\x00\x00\x00\x01x")
    assert info.value.code is _C.INTERNAL
    with pytest.raises(MessageError) as info:
        MessageReader(limit=10).feed(b"\x00\x00\x00\x00\x0b")
    assert info.value.code is _C.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    "chunks",
    [[b""], [frame_message(b"a") + frame_message(b"b")], [frame_message(b"abc")[:-1]]],
    ids=["none", "two", "truncated"],
)
def test_a_unary_body_is_exactly_one_message(chunks: list[bytes]) -> None:
    with pytest.raises(MessageError) as info:
        unary_body(chunks)
    assert info.value.code is _C.INTERNAL


# ---- the rest of the gRPC wire rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("plain", "plain"),
        ("a%20b%25c", "a b%c"),
        ("caf%C3%A9 %E2%9C%93", "café ✓"),
        ("bad %zz stays", "bad %zz stays"),
        ("lone %FF byte", "lone \ufffd byte"),
    ],
)
def test_grpc_message_is_percent_decoded(raw: str, text: str) -> None:
    assert decode_message(raw) == text


@pytest.mark.parametrize("value", ["AAECAw", "AAECAw==", "/+8"])
def test_bin_values_decode_padded_or_not(value: str) -> None:
    assert decode_bin(value) == base64.b64decode(value + "=" * (-len(value) % 4))


def test_response_headers_split_status_from_metadata() -> None:
    details = base64.b64encode(b"\x08\x03").decode().rstrip("=")
    info = ResponseHeaders(
        [
            (":status", "200"),
            ("content-type", "application/grpc+proto"),
            ("grpc-status", "5"),
            ("grpc-message", "no%20such%20thing"),
            ("x-echo-trailer", "v"),
            ("x-echo-trailer-bin", "AAE"),
            ("grpc-status-details-bin", details),
            ("grpc-encoding", "identity"),
        ]
    )
    assert info.status == 200 and info.is_grpc
    assert info.grpc_status is _C.NOT_FOUND
    assert info.grpc_message == "no such thing"
    # grpc.aio shows grpc-status-details-bin in the trailers, decoded; the other gRPC headers not.
    assert info.metadata == (
        ("x-echo-trailer", "v"),
        ("x-echo-trailer-bin", b"\x00\x01"),
        ("grpc-status-details-bin", b"\x08\x03"),
    )
    assert ResponseHeaders([("grpc-status", "99")]).grpc_status is _C.UNKNOWN
    assert not ResponseHeaders([(":status", "200"), ("content-type", "text/html")]).is_grpc


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        (5, "5000m"),
        (0.0001, "1m"),
        (0.2, "200m"),
        (99_999.999, "99999999m"),
        (100_000, "100000S"),
        (1e9, "277778H"),
    ],
)
def test_grpc_timeout_has_at_most_8_digits(seconds: float, header: str) -> None:
    assert encode_timeout(seconds) == header


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, _C.INTERNAL),
        (401, _C.UNAUTHENTICATED),
        (403, _C.PERMISSION_DENIED),
        (404, _C.UNIMPLEMENTED),
        (429, _C.UNAVAILABLE),
        (502, _C.UNAVAILABLE),
        (503, _C.UNAVAILABLE),
        (504, _C.UNAVAILABLE),
        (500, _C.UNKNOWN),
        (302, _C.UNKNOWN),
    ],
)
def test_http_status_mapping_is_the_grpc_table(status: int, code: grpc.StatusCode) -> None:
    assert code_for_http_status(status) is code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (F.NO_ERROR, _C.INTERNAL),
        (F.PROTOCOL_ERROR, _C.INTERNAL),
        (F.REFUSED_STREAM, _C.UNAVAILABLE),
        (F.CANCEL, _C.CANCELLED),
        (F.ENHANCE_YOUR_CALM, _C.RESOURCE_EXHAUSTED),
        (F.INADEQUATE_SECURITY, _C.PERMISSION_DENIED),
    ],
)
def test_rst_stream_mapping_is_the_grpc_table(error: int, code: grpc.StatusCode) -> None:
    assert code_for_reset(error) is code


# ---- what a response means for a call ------------------------------------------------------------------


def _call(unary: bool = True, chunks: list[bytes] | None = None) -> Call:
    call = Call(1, unary, None, 65535)
    call.chunks = chunks or []
    return call


def test_outcome_of_an_ok_unary_response() -> None:
    call = _call(chunks=[frame_message(b"body")])
    call.initial = (("x-h", "1"),)
    result, error = outcome(call, ResponseHeaders([("grpc-status", "0"), ("x-t", "2")]), False, "echo")
    assert error is None and result == UnaryResult(b"body", [("x-h", "1")], [("x-t", "2")])
    result, error = outcome(_call(), ResponseHeaders([("grpc-status", "0")]), False, "echo")
    assert result is None and error is not None and error.code is _C.INTERNAL


def test_outcome_errors_are_built_like_translate_rpc_error() -> None:
    status = status_pb2.Status(code=3, message="bad")
    status.details.add().Pack(
        error_details_pb2.BadRequest(field_violations=[{"field": "f", "description": "d"}])
    )
    details = base64.b64encode(status.SerializeToString()).decode().rstrip("=")
    info = ResponseHeaders(
        [("grpc-status", "3"), ("grpc-message", "bad"), ("grpc-status-details-bin", details)]
    )
    _, error = outcome(_call(), info, True, "echo")
    assert error is not None and (error.code, error.message) == (_C.INVALID_ARGUMENT, "bad")
    assert error.details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    _, error = outcome(_call(), ResponseHeaders([("grpc-status", "14")]), True, "echo")
    assert error is not None and error.message == "backend echo unavailable: UNAVAILABLE"
    _, error = outcome(_call(), ResponseHeaders([(":status", "429")]), True, "echo")
    assert error is not None and error.code is _C.UNAVAILABLE and "HTTP status 429" in error.message
    _, error = outcome(_call(), ResponseHeaders([(":status", "200")]), True, "echo")
    assert error is not None and error.code is _C.UNKNOWN
    _, error = outcome(_call(unary=False), ResponseHeaders([("grpc-status", "0")]), False, "echo")
    assert error is None


def test_only_a_refusal_before_headers_may_be_retried() -> None:
    assert isinstance(reset_error(F.REFUSED_STREAM, True, "echo"), RefusedStream)
    late = reset_error(F.REFUSED_STREAM, False, "echo")
    assert not isinstance(late, RefusedStream) and late.code is _C.UNAVAILABLE
    assert reset_error(F.CANCEL, True, "echo").code is _C.CANCELLED


def test_response_blocks_are_cached_while_the_table_stands_still() -> None:
    encoder, blocks = hpack.Encoder(), ResponseBlocks()
    first = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    info = blocks.read(first)
    assert info.status == 200 and info.is_grpc
    warm = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    assert blocks.read(warm) is blocks.read(warm)  # fully indexed: one decode, then a lookup
    fresh = blocks.read(encoder.encode([("grpc-status", "0"), ("x-new", "v")]))  # inserts: not cached
    assert fresh.metadata == (("x-new", "v"),)


async def test_admission_is_first_come_first_served() -> None:
    admission = Admission()
    admission.limit = 1
    active = [1]
    order: list[int] = []

    async def enter(i: int) -> None:
        await admission.wait(lambda: active[0], lambda: True, None)
        order.append(i)

    tasks = [asyncio.ensure_future(enter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert admission.must_wait(0)  # callers queue: newcomers go behind them
    for _ in range(3):
        active[0] = 0
        admission.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        active[0] = 1
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    with pytest.raises(GatewayError) as info:
        await admission.wait(lambda: 1, lambda: True, asyncio.get_running_loop().time() + 0.01)
    assert info.value.code is _C.DEADLINE_EXCEEDED


def test_metadata_fields_are_cached_by_value_and_the_cache_is_bounded() -> None:
    from gateway.upstreams import headers as H

    pairs: list[tuple[str, str | bytes]] = [
        ("x-forwarded-host", "example.com"),
        ("trace-bin", b"\x00\x01"),
        ("raw", b"bytes value"),
        ("x-request-id", "r1"),
    ]
    first = H.metadata_block(pairs)
    again = H.metadata_block(pairs)  # from the cache this time
    assert first == again
    assert hpack.Decoder().decode(first, raw=True) == [
        (b"x-forwarded-host", b"example.com"),
        (b"trace-bin", base64.b64encode(b"\x00\x01").rstrip(b"=")),
        (b"raw", b"bytes value"),
        (b"x-request-id", b"r1"),
    ]
    assert ("trace-bin", b"\x00\x01") not in H._FIELDS  # -bin and bytes values are encoded each time
    for i in range(H._FIELDS_MAX + 10):  # unique values (request ids) cannot grow it without bound
        block = H.metadata_block([("x-request-id", f"id-{i}")])
        assert hpack.Decoder().decode(block, raw=True) == [(b"x-request-id", f"id-{i}".encode())]
    assert len(H._FIELDS) <= H._FIELDS_MAX
    assert H.metadata_block(pairs) == first  # and after it was emptied, the same bytes again
