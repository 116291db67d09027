"""The lean HTTP/2 client (`H2Upstream`) against real servers, held to what `GrpcUpstream` (grpc.aio) does.

Two kinds of peer, both on 127.0.0.1: the grpc.aio demo backends (plus small grpc.aio servers built
here with other options, TLS, or handlers that record cancellation), where every answer is compared
with grpc.aio's; and `RawH2Server`, a scriptable HTTP/2 server on a real socket that encodes with the
`hpack` package, for what a grpc server will not send on demand: non-200 statuses, a missing
grpc-status, RST_STREAM codes, GOAWAY, PING, CONTINUATION, a compressed message, and silence.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import hpack
import pytest
from echo.v1 import echo_pb2, echo_pb2_grpc
from library.v1 import library_pb2 as lib

from gateway.config import BackendConfig
from gateway.upstream import GrpcUpstream, UnaryResult, Upstream, build_upstreams
from gateway.upstreams import frames as F
from gateway.upstreams.grpc_wire import frame_message
from gateway.upstreams.h2 import H2Upstream
from tests.support import echo_backend, library_backend
from tests.support.serving import RunningServer
from translators.errors import GatewayError

pytestmark = pytest.mark.asyncio
_C = grpc.StatusCode
ECHO = "/echo.v1.EchoService/Echo"
GET_ITEM = "/echo.v1.EchoService/GetItem"
STREAM = "/echo.v1.EchoService/StreamItems"


def _config(address: str, client: str = "h2", **extra: object) -> BackendConfig:
    return BackendConfig.model_validate(
        {"addresses": [address], "client": client, "health": {"enabled": False}, **extra}
    )


@asynccontextmanager
async def _both(address: str, **extra: object) -> AsyncIterator[tuple[GrpcUpstream, H2Upstream]]:
    grpcio = GrpcUpstream("echo", _config(address, "grpcio", **extra))
    h2 = H2Upstream("echo", _config(address, "h2", **extra))
    try:
        yield grpcio, h2
    finally:
        await grpcio.close()
        await h2.close()


async def _error(call: Awaitable[object]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await call
    return info.value


def _echo(message: str, repeat: int = 0) -> bytes:
    return echo_pb2.EchoRequest(message=message, repeat=repeat).SerializeToString()


@pytest.fixture
async def echo() -> AsyncIterator[RunningServer]:
    server = await echo_backend.serve()
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def library() -> AsyncIterator[RunningServer]:
    server = await library_backend.serve()
    try:
        yield server
    finally:
        await server.stop(0)


@asynccontextmanager
async def _grpc_server(
    options: list[tuple[str, object]] | None = None,
    handlers: list[grpc.GenericRpcHandler] | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[str]:
    """A grpc.aio server with the echo service (and `handlers`), with options the demo server lacks."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *(options or [])])
    echo_pb2_grpc.add_EchoServiceServicer_to_server(echo_backend.EchoService(), server)
    if handlers:
        server.add_generic_rpc_handlers(handlers)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


# ---- equivalence with grpc.aio --------------------------------------------------------------------------


async def test_selection_follows_the_config(echo: RunningServer) -> None:
    upstreams = build_upstreams({"a": _config(echo.address, "h2"), "b": _config(echo.address, "grpcio")})
    try:
        assert isinstance(upstreams["a"], H2Upstream) and isinstance(upstreams["b"], GrpcUpstream)
        assert BackendConfig(addresses=("127.0.0.1:1",)).client == "h2"
    finally:
        for upstream in upstreams.values():
            await upstream.close()


async def test_unary_success_is_byte_identical(echo: RunningServer) -> None:
    async with _both(echo.address) as (grpcio, h2):
        for rpc, body in [
            (GET_ITEM, echo_pb2.GetItemRequest(id="a/b").SerializeToString()),
            (GET_ITEM, b""),
            (GET_ITEM, echo_pb2.GetItemRequest(id="ü" * 5000).SerializeToString()),
        ]:
            want = await grpcio.unary(rpc, body, [], 5)
            got = await h2.unary(rpc, body, [], 5)
            assert got == want
        want_echo = echo_pb2.EchoResponse.FromString((await grpcio.unary(ECHO, _echo("hi", 3), [], 5)).body)
        got_echo = echo_pb2.EchoResponse.FromString((await h2.unary(ECHO, _echo("hi", 3), [], 5)).body)
        assert got_echo.message == want_echo.message == "hihihi"


@pytest.mark.parametrize("code", [c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
async def test_every_status_code_matches(echo: RunningServer, code: str) -> None:
    async with _both(echo.address) as (grpcio, h2):
        want = await _error(grpcio.unary(ECHO, _echo(f"__error__:{code}"), [], 5))
        got = await _error(h2.unary(ECHO, _echo(f"__error__:{code}"), [], 5))
    assert (got.code, got.message, got.details) == (want.code, want.message, want.details)
    assert got.code.name == code


async def test_error_details_from_the_library_backend(library: RunningServer) -> None:
    requests = [
        (
            "/library.v1.LibraryService/CreateBook",
            lib.CreateBookRequest(parent="shelves/1", book=lib.Book(title="")).SerializeToString(),
        ),
        (
            "/library.v1.LibraryService/GetBook",
            lib.GetBookRequest(name="shelves/1/books/999").SerializeToString(),
        ),
        ("/library.v1.LibraryService/GetShelf", lib.GetShelfRequest(name="nonsense").SerializeToString()),
    ]
    async with _both(library.address) as (grpcio, h2):
        for rpc, body in requests:
            want = await _error(grpcio.unary(rpc, body, [], 5))
            got = await _error(h2.unary(rpc, body, [], 5))
            assert (got.code, got.message, got.details) == (want.code, want.message, want.details)
            assert got.details
    bad_request = await _error(h2.unary(*requests[0], [], 5)) if False else got  # noqa: F841
    first = await _first_error(library.address, *requests[0])
    assert first.code is _C.INVALID_ARGUMENT
    assert first.details[0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert first.details[0]["fieldViolations"][0]["field"] == "book.title"


async def _first_error(address: str, rpc: str, body: bytes) -> GatewayError:
    h2 = H2Upstream("library", _config(address))
    try:
        return await _error(h2.unary(rpc, body, [], 5))
    finally:
        await h2.close()


async def test_metadata_both_ways(echo: RunningServer) -> None:
    metadata: list[tuple[str, str | bytes]] = [
        ("x-echo-metadata", "v1"),
        ("x-echo-metadata-bin", b"\x00\x01\xfe\xff"),
        ("color", "blue"),
        ("trace-bin", b"\x00" * 7),
        ("x-echo-metadata", "v2"),
    ]
    async with _both(echo.address) as (grpcio, h2):
        want = await grpcio.unary(ECHO, _echo("__metadata__"), metadata, 5)
        got = await h2.unary(ECHO, _echo("__metadata__"), metadata, 5)
        # gRPC orders values per key only: grpc's core groups a repeated key, we keep the given order.
        assert _by_key(got.initial_metadata) == _by_key(want.initial_metadata)
        assert _by_key(got.trailing_metadata) == _by_key(want.trailing_metadata)
        assert ("x-echo-header-bin", b"\x00\x01\xfe\xff") in got.initial_metadata
        assert ("x-echo-trailer", "v2") in got.trailing_metadata
        seen = {
            k: v for k, v in echo_pb2.EchoResponse.FromString(got.body).labels.items() if k != "user-agent"
        }
        seen_by_grpcio = echo_pb2.EchoResponse.FromString(want.body).labels
        assert seen == {k: v for k, v in seen_by_grpcio.items() if k != "user-agent"}
        assert seen["x-echo-metadata"] == "v1,v2" and seen["trace-bin"] == "AAAAAAAAAA=="
        # Errors carry metadata the same way (trailers are where details live).
        items = [
            (m.initial_metadata, m.trailing_metadata)
            for m in [await u.unary(GET_ITEM, b"", [("x-echo-metadata", "e")], 5) for u in (grpcio, h2)]
        ]
        assert items[0] == items[1]


def _by_key(metadata: list[tuple[str, str | bytes]]) -> list[tuple[str, str | bytes]]:
    return sorted(metadata, key=lambda pair: pair[0])  # stable: a key's values keep their order


async def test_deadline_exceeded_on_time(echo: RunningServer) -> None:
    async with _both(echo.address) as (grpcio, h2):
        await h2.unary(GET_ITEM, b"", [], 5)  # connected: time only the call
        for upstream in (grpcio, h2):
            started = time.monotonic()
            error = await _error(upstream.unary(ECHO, _echo("__sleep__:3000"), [], 0.3))
            elapsed = time.monotonic() - started
            assert error.code is _C.DEADLINE_EXCEEDED
            assert 0.28 <= elapsed < 0.5, (type(upstream).__name__, elapsed)
        # The connection is fine afterwards.
        assert (await h2.unary(GET_ITEM, b"", [], 5)).body


async def test_dead_backend_is_unavailable_fast() -> None:
    async with _both("127.0.0.1:1") as (grpcio, h2):
        want = await _error(grpcio.unary(ECHO, _echo("x"), [], 5))
        started = time.monotonic()
        got = await _error(h2.unary(ECHO, _echo("x"), [], 5))
        assert time.monotonic() - started < 0.5
        again = await _error(h2.unary(ECHO, _echo("x"), [], 5))  # backing off: no new connect
        assert time.monotonic() - started < 0.5
    assert want.code is got.code is again.code is _C.UNAVAILABLE
    assert got.message.startswith("backend echo unavailable: ") and "refused" in got.message.lower()
    assert want.message.startswith("backend echo unavailable: ")


async def test_backend_stopped_mid_flight_then_back() -> None:
    server = await echo_backend.serve()
    address = server.address
    async with _both(address) as (grpcio, h2):
        await grpcio.unary(GET_ITEM, b"", [], 5)
        await h2.unary(GET_ITEM, b"", [], 5)
        calls = [asyncio.ensure_future(u.unary(ECHO, _echo("__sleep__:3000"), [], 5)) for u in (grpcio, h2)]
        await asyncio.sleep(0.2)
        await server.stop(0)
        want, got = [await _error(c) for c in calls]
        assert got.code is want.code, (got.message, want.message)
        assert got.code in (_C.UNAVAILABLE, _C.CANCELLED)
        # A new server on the same port: the h2 client reconnects once its backoff allows.
        server = await echo_backend.serve(address)
        try:
            for _ in range(100):
                try:
                    await h2.unary(GET_ITEM, b"", [], 1)
                    break
                except GatewayError as error:
                    assert error.code is _C.UNAVAILABLE
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("the h2 client never reconnected")
        finally:
            await server.stop(0)


async def test_a_thousand_concurrent_calls_share_one_connection() -> None:
    peak = 0
    running = 0

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal peak, running
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.002)
        running -= 1
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Test", {"Slow": grpc.unary_unary_rpc_method_handler(slow)}
    )
    async with _grpc_server([("grpc.max_concurrent_streams", 16)], [handler]) as address:
        h2 = H2Upstream("echo", _config(address))
        try:
            replies = await asyncio.gather(
                *(h2.unary("/test.Test/Slow", str(i).encode(), [], 20) for i in range(1000))
            )
            assert [r.body for r in replies] == [str(i).encode() for i in range(1000)]
            assert len(h2._conns) == 1
        finally:
            await h2.close()
    assert 1 < peak <= 16


async def test_four_mib_request_and_response() -> None:
    big = 16 * 1024 * 1024
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", big),
        ("grpc.max_send_message_length", big),
    ]
    async with _grpc_server(options) as address, _both(address) as (grpcio, h2):
        message = "x" * (4 * 1024 * 1024)
        got = echo_pb2.EchoResponse.FromString((await h2.unary(ECHO, _echo(message, 1), [], 30)).body)
        want = echo_pb2.EchoResponse.FromString((await grpcio.unary(ECHO, _echo(message, 1), [], 30)).body)
        assert got.message == want.message == message
        # Several at once share the connection's windows.
        replies = await asyncio.gather(*(h2.unary(ECHO, _echo(message, 2), [], 30) for _ in range(3)))
        assert all(len(echo_pb2.EchoResponse.FromString(r.body).message) == 2 * len(message) for r in replies)


# ---- server streaming ---------------------------------------------------------------------------------


async def _collect(
    upstream: Upstream, body: bytes, timeout: float = 10
) -> tuple[list[bytes], GatewayError | None]:
    items: list[bytes] = []
    try:
        async for item in upstream.server_stream(STREAM, body, [], timeout):
            items.append(item)
    except GatewayError as error:
        return items, error
    return items, None


async def test_server_stream_of_a_thousand_items(echo: RunningServer) -> None:
    body = echo_pb2.StreamItemsRequest(count=1000, prefix="p").SerializeToString()
    async with _both(echo.address) as (grpcio, h2):
        want = await _collect(grpcio, body)
        got = await _collect(h2, body)
    assert got == want
    assert len(got[0]) == 1000 and echo_pb2.Item.FromString(got[0][-1]).id == "p999"


async def test_server_stream_error_mid_stream(echo: RunningServer) -> None:
    body = echo_pb2.StreamItemsRequest(count=5, prefix="__error__:ABORTED").SerializeToString()
    async with _both(echo.address) as (grpcio, h2):
        want_items, want = await _collect(grpcio, body)
        got_items, got = await _collect(h2, body)
    assert got_items == want_items and len(got_items) == 5
    assert got is not None and want is not None
    assert (got.code, got.message) == (want.code, want.message) and got.code is _C.ABORTED


async def test_server_stream_deadline(echo: RunningServer) -> None:
    body = echo_pb2.StreamItemsRequest(count=100, prefix="__sleep__:100").SerializeToString()
    async with _both(echo.address) as (_, h2):
        started = time.monotonic()
        items, error = await _collect(h2, body, timeout=0.35)
    assert error is not None and error.code is _C.DEADLINE_EXCEEDED
    assert 2 <= len(items) <= 4 and time.monotonic() - started < 0.6


async def test_early_close_cancels_the_backend_call() -> None:
    cancelled = asyncio.Event()

    async def forever(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    handler = grpc.method_handlers_generic_handler(
        "test.Test", {"Forever": grpc.unary_stream_rpc_method_handler(forever)}
    )
    async with _grpc_server(handlers=[handler]) as address:
        h2 = H2Upstream("echo", _config(address))
        try:
            stream = h2.server_stream("/test.Test/Forever", b"", [], 30)
            assert [await anext(stream) for _ in range(3)] == [b"tick"] * 3
            await stream.aclose()
            await asyncio.wait_for(cancelled.wait(), 2)
            # The same way when the consuming task is cancelled instead.
            cancelled.clear()

            async def consume() -> None:
                async for _ in h2.server_stream("/test.Test/Forever", b"", [], 30):
                    pass

            task = asyncio.ensure_future(consume())
            await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.wait_for(cancelled.wait(), 2)
            assert (await h2.unary(GET_ITEM, b"", [], 5)).body  # the connection lives on
            assert sum(c.active for c in h2._conns) == 0
        finally:
            await h2.close()


# ---- TLS ----------------------------------------------------------------------------------------------


def _certificates(tmp: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test ca"))
        .issuer_name(name("test ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        leaf_key = key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem_key = leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    server_cert, server_key = leaf(
        "backend.test",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("backend.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = leaf("gateway", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("gateway")])
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }
    paths = {}
    for label, data in files.items():
        paths[label] = tmp / f"{label}.pem"
        paths[label].write_bytes(data)
    return paths


async def test_tls_and_mtls(tmp_path: Path) -> None:
    pem = _certificates(tmp_path)
    server_pair = [(pem["server_key"].read_bytes(), pem["server_cert"].read_bytes())]
    tls = grpc.ssl_server_credentials(server_pair)
    async with _grpc_server(credentials=tls) as address:
        for extra in ({"ca_file": pem["ca"]}, {"ca_file": pem["ca"], "server_name": "backend.test"}):
            async with _both(address, tls=extra) as (grpcio, h2):
                want = await grpcio.unary(GET_ITEM, b"", [], 5)
                assert await h2.unary(GET_ITEM, b"", [], 5) == want
        async with _both(address, tls={"ca_file": pem["ca"], "server_name": "other.test"}) as (_, h2):
            assert (await _error(h2.unary(GET_ITEM, b"", [], 5))).code is _C.UNAVAILABLE
        async with _both(address, tls={}) as (_, h2):  # system roots do not trust our CA
            assert (await _error(h2.unary(GET_ITEM, b"", [], 5))).code is _C.UNAVAILABLE

    mutual = grpc.ssl_server_credentials(
        server_pair, root_certificates=pem["ca"].read_bytes(), require_client_auth=True
    )
    async with _grpc_server(credentials=mutual) as address:
        client = {"ca_file": pem["ca"], "cert_file": pem["client_cert"], "key_file": pem["client_key"]}
        async with _both(address, tls=client) as (grpcio, h2):
            assert await h2.unary(GET_ITEM, b"", [], 5) == await grpcio.unary(GET_ITEM, b"", [], 5)
        async with _both(address, tls={"ca_file": pem["ca"]}) as (_, h2):
            assert (await _error(h2.unary(GET_ITEM, b"", [], 5))).code is _C.UNAVAILABLE


# ---- health -------------------------------------------------------------------------------------------


async def test_health_checks_through_the_same_connection() -> None:
    server = await echo_backend.serve()
    config = BackendConfig.model_validate(
        {"addresses": [server.address], "health": {"interval_s": 0.05, "timeout_s": 0.5}}
    )
    h2 = H2Upstream("echo", config)
    assert not h2.healthy()
    checks = asyncio.ensure_future(h2.check_health_forever())
    try:
        await _until(h2.healthy)
        assert len(h2._conns) == 1
        await server.health.enter_graceful_shutdown()  # NOT_SERVING
        await _until(lambda: not h2.healthy())
        assert h2.health_report() == {server.address: False}
    finally:
        checks.cancel()
        await h2.close()
        await server.stop(0)


async def _until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.02)


# ---- a scriptable raw HTTP/2 server ------------------------------------------------------------------

Script = Callable[["RawConnection", int, dict[str, str], bytes], Awaitable[None]]


class RawConnection:
    """One accepted client connection: frames seen, and helpers to answer in HTTP/2."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.frames: list[F.Frame] = []

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def headers(
        self, sid: int, fields: list[tuple[str, str]], end_stream: bool = False, max_frame: int = 16384
    ) -> None:
        self.send(F.headers(sid, self.encoder.encode(fields), max_frame, end_stream))

    def data(self, sid: int, payload: bytes, end_stream: bool = False) -> None:
        self.send(F.frame(F.DATA, F.END_STREAM if end_stream else 0, sid, payload))

    def reply(
        self, sid: int, message: bytes, status: str = "0", trailers: list[tuple[str, str]] | None = None
    ) -> None:
        self.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        self.data(sid, frame_message(message))
        self.headers(sid, [("grpc-status", status), *(trailers or [])], end_stream=True)


class RawH2Server:
    def __init__(self, script: Script, settings: dict[int, int] | None = None) -> None:
        self.script = script
        self.settings = settings or {}
        self.connections: list[RawConnection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for conn in self.connections:
            conn.writer.close()
        for task in list(self._tasks):
            task.cancel()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RawConnection(writer)
        self.connections.append(conn)
        decoder = hpack.Decoder()
        requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            assert await reader.readexactly(len(F.PREFACE)) == F.PREFACE
            conn.send(F.settings(self.settings))
            buffer = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk
                frames, used = F.split_frames(buffer)
                buffer = buffer[used:]
                for frame in frames:
                    conn.frames.append(frame)
                    if frame.type == F.SETTINGS and not frame.flags & F.ACK:
                        conn.send(F.SETTINGS_ACK)
                    elif frame.type == F.HEADERS:
                        fields = dict(decoder.decode(F.header_fragment(frame.flags, frame.payload)))
                        requests[frame.stream_id] = (fields, bytearray())
                    elif frame.type == F.DATA and frame.stream_id in requests:
                        requests[frame.stream_id][1].extend(frame.payload)
                        if frame.flags & F.END_STREAM:
                            fields, body = requests.pop(frame.stream_id)
                            task = asyncio.ensure_future(
                                self.script(conn, frame.stream_id, fields, bytes(body[5:]))
                            )
                            self._tasks.add(task)
                            task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


@asynccontextmanager
async def _raw(
    script: Script, settings: dict[int, int] | None = None
) -> AsyncIterator[tuple[RawH2Server, H2Upstream]]:
    server = RawH2Server(script, settings)
    address = await server.start()
    h2 = H2Upstream("raw", _config(address))
    try:
        yield server, h2
    finally:
        await h2.close()
        await server.stop()


async def _by_path(conn: RawConnection, sid: int, headers: dict[str, str], body: bytes) -> None:
    """Answers chosen by :path; the request's headers must be what gRPC asks for."""
    assert headers[":method"] == "POST" and headers["te"] == "trailers"
    assert headers["content-type"] == "application/grpc" and headers[":scheme"] == "http"
    path = headers[":path"]
    if path == "/ok":
        conn.reply(sid, body, trailers=[("x-trailer", "t")])
    elif path == "/html503":
        conn.headers(sid, [(":status", "503"), ("content-type", "text/html")], end_stream=True)
    elif path == "/html404":
        conn.headers(sid, [(":status", "404"), ("content-type", "text/html")])
        conn.data(sid, b"<h1>no</h1>", end_stream=True)
    elif path == "/no-status":
        conn.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.data(sid, frame_message(b"x"))
        conn.headers(sid, [("x-nothing", "here")], end_stream=True)
    elif path == "/data-end":
        conn.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.data(sid, frame_message(b"x"), end_stream=True)
    elif path == "/refused":
        conn.send(F.rst_stream(sid, F.REFUSED_STREAM))
    elif path == "/cancel":
        conn.send(F.rst_stream(sid, F.CANCEL))
    elif path == "/calm":
        conn.send(F.rst_stream(sid, F.ENHANCE_YOUR_CALM))
    elif path == "/compressed":
        conn.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.data(sid, b"\x01\x00\x00\x00\x01x")
        conn.headers(sid, [("grpc-status", "0")], end_stream=True)
    elif path == "/big-trailers":  # a trailer block over one frame: CONTINUATION
        conn.headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.data(sid, frame_message(b"x"))
        fields = [("grpc-status", "0"), *((f"x-big-{i}", "v" * 1000) for i in range(40))]
        conn.headers(sid, fields, end_stream=True, max_frame=4096)
    elif path == "/message":
        conn.headers(
            sid,
            [
                ("grpc-status", "9"),
                ("grpc-message", "caf%C3%A9%20closed%"),
                (":status", "200"),
                ("content-type", "application/grpc"),
            ],
            end_stream=True,
        )
    elif path == "/ping":
        conn.send(F.ping(b"pingpong"))
        await asyncio.sleep(0.05)
        conn.reply(sid, b"pong")
    elif path == "/silent":
        pass


@pytest.mark.parametrize(
    ("path", "code", "text"),
    [
        ("/html503", _C.UNAVAILABLE, "backend raw unavailable: received HTTP status 503"),
        ("/html404", _C.UNIMPLEMENTED, "received HTTP status 404"),
        ("/no-status", _C.UNKNOWN, "no grpc-status"),
        ("/data-end", _C.UNKNOWN, "without grpc-status"),
        ("/refused", _C.UNAVAILABLE, "REFUSED_STREAM"),
        ("/cancel", _C.CANCELLED, "CANCEL"),
        ("/calm", _C.RESOURCE_EXHAUSTED, "ENHANCE_YOUR_CALM"),
        ("/compressed", _C.INTERNAL, "compressed"),
        ("/message", _C.FAILED_PRECONDITION, "café closed%"),
    ],
)
async def test_protocol_edges_map_to_grpc_codes(path: str, code: grpc.StatusCode, text: str) -> None:
    async with _raw(_by_path) as (_, h2):
        error = await _error(h2.unary(path, b"req", [], 5))
        assert error.code is code and text in error.message
        assert await h2.unary("/ok", b"still fine", [], 5) == UnaryResult(
            b"still fine", [], [("x-trailer", "t")]
        )


async def test_continuation_and_ping() -> None:
    async with _raw(_by_path) as (server, h2):
        result = await h2.unary("/big-trailers", b"", [], 5)
        assert len(result.trailing_metadata) == 40 and result.trailing_metadata[0] == ("x-big-0", "v" * 1000)
        assert (await h2.unary("/ping", b"", [], 5)).body == b"pong"
        acks = [f for f in server.connections[0].frames if f.type == F.PING and f.flags & F.ACK]
        assert [f.payload for f in acks] == [b"pingpong"]


async def test_local_deadline_resets_the_stream() -> None:
    async with _raw(_by_path) as (server, h2):
        started = time.monotonic()
        error = await _error(h2.unary("/silent", b"", [("k", "v")], 0.2))
        assert error.code is _C.DEADLINE_EXCEEDED and time.monotonic() - started < 0.35
        await _until(lambda: any(f.type == F.RST_STREAM for f in server.connections[0].frames))
        rst = next(f for f in server.connections[0].frames if f.type == F.RST_STREAM)
        assert F.parse_rst_stream(rst.payload) == F.CANCEL
        headers = next(f for f in server.connections[0].frames if f.type == F.HEADERS)
        fields = dict(hpack.Decoder().decode(headers.payload))
        timeout = fields["grpc-timeout"]
        assert timeout.endswith("m") and 150 <= int(timeout[:-1]) <= 201 and fields["k"] == "v"


async def test_deadlines_out_of_start_order_each_fire_on_time() -> None:
    # One timer serves a connection's deadlines: calls whose deadlines come before an earlier
    # call's must still fail at their own time, and calls that finish leave the others armed.
    async with _raw(_by_path) as (server, h2):
        await h2.unary("/ping", b"", [], 5)  # connected: time only the calls

        async def timed(path: str, timeout: float) -> tuple[float, GatewayError | None]:
            started = time.monotonic()
            try:
                await h2.unary(path, b"", [], timeout)
            except GatewayError as exc:
                return time.monotonic() - started, exc
            return time.monotonic() - started, None

        results = await asyncio.gather(
            timed("/silent", 0.6), timed("/silent", 0.2), timed("/ping", 5), timed("/silent", 0.4)
        )
        for (elapsed, error), timeout in zip(results, (0.6, 0.2, None, 0.4), strict=True):
            if timeout is None:
                assert error is None
                continue
            assert error is not None and error.code is _C.DEADLINE_EXCEEDED
            assert timeout - 0.01 <= elapsed < timeout + 0.15, (timeout, elapsed)
        def resets() -> list[F.Frame]:
            return [f for f in server.connections[0].frames if f.type == F.RST_STREAM]

        await _until(lambda: len(resets()) == 3)
        assert {F.parse_rst_stream(f.payload) for f in resets()} == {F.CANCEL}
        assert (await h2.unary("/ping", b"", [], 5)).body == b"pong"


async def test_goaway_fails_unprocessed_calls_and_moves_to_a_new_connection() -> None:
    async def script(conn: RawConnection, sid: int, headers: dict[str, str], body: bytes) -> None:
        if headers[":path"] == "/hold" and len(server.connections) == 1:
            await asyncio.sleep(0.1)
            conn.send(F.goaway(sid - 2, F.NO_ERROR))  # the call on `sid` was not processed
            return
        conn.reply(sid, body)

    async with _raw(script) as (server, h2):
        assert (await h2.unary("/first", b"1", [], 5)).body == b"1"
        error = await _error(h2.unary("/hold", b"", [], 5))
        assert error.code is _C.UNAVAILABLE and "GOAWAY" in error.message
        assert (await h2.unary("/after", b"2", [], 5)).body == b"2"
        assert len(server.connections) == 2


async def test_max_concurrent_streams_from_settings_is_respected() -> None:
    in_flight = 0
    peak = 0

    async def script(conn: RawConnection, sid: int, headers: dict[str, str], body: bytes) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        conn.reply(sid, body)

    async with _raw(script, {F.MAX_CONCURRENT_STREAMS: 3}) as (server, h2):
        replies = await asyncio.gather(*(h2.unary("/x", str(i).encode(), [], 10) for i in range(30)))
        assert [r.body for r in replies] == [str(i).encode() for i in range(30)]
        assert peak == 3 and len(server.connections) == 1


async def test_exhausted_stream_ids_move_to_a_new_connection() -> None:
    async with _raw(_by_path) as (server, h2):
        assert (await h2.unary("/ok", b"1", [], 5)).body == b"1"
        (first,) = h2._conns
        first._next_id = 2**31 - 3  # two stream ids left
        assert (await h2.unary("/ok", b"2", [], 5)).body == b"2"
        assert (await h2.unary("/ok", b"3", [], 5)).body == b"3"  # the last id: the connection drains
        await asyncio.wait_for(first.closed, 2)
        assert (await h2.unary("/ok", b"4", [], 5)).body == b"4"
        assert len(server.connections) == 2
