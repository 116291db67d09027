"""`H2Upstream`: a backend reached through the lean HTTP/2 gRPC client, behind the `Upstream` protocol.

Owns the backend's connections (`channels_per_address` per address, round robin), their lazy
(re)connection with per-address exponential backoff, and the grpc.health.v1 view that feeds
`/readyz`, checked through the same connections. It is the "h2" choice of `BackendConfig.client`,
built by `gateway.upstream.build_upstreams` and closed by `lifecycle.py`. A connection is opened on
first use and replaced when it is lost or receives GOAWAY; while an address is backing off, calls
fail at once with UNAVAILABLE (as grpc does for calls that do not wait for ready) or go to another
address. The connect itself runs in one task per connection slot, shared by every call waiting for
it, so a burst of calls makes one connection attempt, not a storm.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, Coroutine
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from gateway.config import BackendConfig, BackendTLS
from gateway.upstream import Observer, UnaryResult, stop_writer, writer_failure
from gateway.upstreams.calls import DEADLINE_EXCEEDED, REFUSED_RETRIES, RefusedStream
from gateway.upstreams.connection import H2Connection
from translators.errors import GatewayError
from translators.metadata import Metadata

log = logging.getLogger("portcullis.upstream")
_C = grpc.StatusCode

CONNECT_TIMEOUT_S = 10.0
# Reconnect backoff per address: grpc's shape (x1.6, 20 % jitter) with a short ceiling, since a
# gateway wants a restarted backend back within seconds.
BACKOFF_INITIAL_S = 0.25
BACKOFF_MULTIPLIER = 1.6
BACKOFF_MAX_S = 5.0
BACKOFF_JITTER = 0.2
KEEPALIVE_IDLE_S = 30  # like the grpc.aio channels' keepalive_time_ms
HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"


class _Address:
    """One backend address and its connect backoff, shared by the address's connection slots."""

    __slots__ = ("address", "error", "failures", "host", "port", "retry_at")

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.host = host.strip("[]")
        self.port = int(port)
        self.failures = 0
        self.retry_at = 0.0
        self.error = ""


class _Slot:
    """One connection's place: its live connection, or the task opening it."""

    __slots__ = ("address", "conn", "connecting")

    def __init__(self, address: _Address) -> None:
        self.address = address
        self.conn: H2Connection | None = None
        self.connecting: asyncio.Task[H2Connection] | None = None


class H2Upstream:
    """A backend: its HTTP/2 connections, round robin, and its last known health."""

    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        self.config = config
        self.addresses: tuple[str, ...] = config.addresses
        self._ssl = tls_context(config.tls) if config.tls is not None else None
        self._server_name = config.tls.server_name if config.tls is not None else None
        self._scheme = "https" if self._ssl is not None else "http"
        addresses = [_Address(a) for a in config.addresses]
        self._slots = [_Slot(a) for a in addresses for _ in range(config.channels_per_address)]
        self._next = itertools.cycle(self._slots)
        self._conns: set[H2Connection] = set()
        self._connects: set[asyncio.Task[H2Connection]] = set()
        self._closed = False
        self._health: dict[str, bool] = dict.fromkeys(config.addresses, not config.health.enabled)
        self._health_request = health_pb2.HealthCheckRequest(
            service=config.health.service
        ).SerializeToString()

    def unary(
        self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float, observe: Observer | None = None
    ) -> Coroutine[Any, Any, UnaryResult]:
        # Not a coroutine itself: with a live connection the caller awaits the connection's own
        # call, one coroutine fewer to create and to pass through on every request. `observe`
        # hears how the call ended (`BalancedUpstream` passes its bookkeeping, instead of wrapping
        # the call in a coroutine of its own).
        slot = next(self._next)
        conn = slot.conn
        if conn is None or not conn.usable:
            return self._unary_connecting(slot, rpc_path, request, metadata, timeout, observe)
        deadline = None if timeout is None else conn.loop.time() + timeout
        return conn.unary(rpc_path, request, metadata, deadline, observe)

    async def _unary_connecting(
        self, slot: _Slot, rpc_path: str, request: bytes, metadata: Metadata, timeout: float, observe: Observer | None
    ) -> UnaryResult:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            conn = await self._connection(slot, deadline)
        except GatewayError as exc:
            if observe is not None:
                observe(exc)
            raise
        return await conn.unary(rpc_path, request, metadata, deadline, observe)

    async def server_stream(
        self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]:
        slot = next(self._next)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        conn = slot.conn
        if conn is None or not conn.usable:
            conn = await self._connection(slot, deadline)
        call = await conn.open_stream(rpc_path, request, metadata, deadline)
        refused = 0
        try:
            while True:
                try:
                    message = await conn.next_message(call)
                except RefusedStream:  # only ever before the first message: nothing was processed
                    refused += 1
                    if refused > REFUSED_RETRIES:
                        raise
                    await conn.after_refusal(refused, deadline)
                    call = await conn.open_stream(rpc_path, request, metadata, deadline, admitted=True)
                    continue
                if message is None:
                    return
                yield message
        finally:
            conn.cancel(call)  # the client went away or the stream ended: never leave the call running

    async def client_stream(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> UnaryResult:
        conn, deadline = await self._for_call(timeout)
        call = await conn.open_call(rpc_path, metadata, deadline, unary=True)
        # The writer belongs to this call: cancelled and awaited below, whatever happens.
        writer = asyncio.get_running_loop().create_task(conn.send_all(call, requests))
        try:
            return await call.future  # type: ignore[misc]
        except GatewayError:
            failure = writer_failure(writer)
            if failure is not None:
                raise failure from None
            raise
        finally:
            conn.cancel(call)
            await stop_writer(writer)

    async def bidi(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]:
        # A refused stream is not sent again, unlike unary and server-streaming calls: its request
        # messages were taken from `requests` and cannot be replayed; it fails with UNAVAILABLE.
        conn, deadline = await self._for_call(timeout)
        call = await conn.open_call(rpc_path, metadata, deadline, unary=False)
        writer = asyncio.get_running_loop().create_task(conn.send_all(call, requests))
        try:
            while (message := await conn.next_message(call)) is not None:
                yield message
        except GatewayError:
            failure = writer_failure(writer)
            if failure is not None:
                raise failure from None
            raise
        finally:
            conn.cancel(call)  # the client went away or the stream ended: never leave the call running
            await stop_writer(writer)

    async def _for_call(self, timeout: float) -> tuple[H2Connection, float | None]:
        slot = next(self._next)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        conn = slot.conn
        if conn is None or not conn.usable:
            conn = await self._connection(slot, deadline)
        return conn, deadline

    def healthy(self) -> bool:
        return any(self._health.values())

    def health_report(self) -> dict[str, bool]:
        return dict(self._health)

    async def check_health_forever(self) -> None:
        """Poll grpc.health.v1 on each address; runs under the lifecycle's TaskGroup until cancelled."""
        first: dict[str, _Slot] = {}
        for slot in self._slots:
            first.setdefault(slot.address.address, slot)
        while True:
            await asyncio.gather(*(self._check(address, slot) for address, slot in first.items()))
            await asyncio.sleep(self.config.health.interval_s)

    async def _check(self, address: str, slot: _Slot) -> None:
        deadline = asyncio.get_running_loop().time() + self.config.health.timeout_s
        try:
            conn = slot.conn
            if conn is None or not conn.usable:
                conn = await self._connect(slot, deadline)
            result = await conn.unary(HEALTH_CHECK_PATH, self._health_request, [], deadline)
            reply = health_pb2.HealthCheckResponse.FromString(result.body)
            ok = reply.status == health_pb2.HealthCheckResponse.SERVING
        except (GatewayError, DecodeError):
            ok = False
        if ok != self._health.get(address):
            log.info("backend %s address %s is %s", self.name, address, "healthy" if ok else "unhealthy")
        self._health[address] = ok

    async def close(self) -> None:
        self._closed = True
        for task in list(self._connects):
            task.cancel()
        conns = list(self._conns)
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([conn.closed for conn in conns], timeout=2.0)

    # ---- connections -------------------------------------------------------------------------------

    async def _connection(self, slot: _Slot, deadline: float | None) -> H2Connection:
        """A usable connection, starting at `slot` and trying the others when its address is down."""
        slots = self._slots
        start = slots.index(slot)
        error: GatewayError | None = None
        for offset in range(len(slots)):
            candidate = slots[(start + offset) % len(slots)]
            conn = candidate.conn
            if conn is not None and conn.usable:
                return conn
            try:
                return await self._connect(candidate, deadline)
            except GatewayError as exc:
                if exc.code is not _C.UNAVAILABLE:
                    raise
                error = exc
        assert error is not None
        raise error

    async def _connect(self, slot: _Slot, deadline: float | None) -> H2Connection:
        if self._closed:
            raise GatewayError(_C.UNAVAILABLE, f"backend {self.name} unavailable: upstream closed")
        loop = asyncio.get_running_loop()
        task = slot.connecting
        if task is None:
            address = slot.address
            if loop.time() < address.retry_at:
                raise GatewayError(_C.UNAVAILABLE, f"backend {self.name} unavailable: {address.error}")
            task = slot.connecting = loop.create_task(self._open(slot))
            self._connects.add(task)
            task.add_done_callback(self._connect_done)
        try:
            if deadline is None:
                return await asyncio.shield(task)
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            raise GatewayError(_C.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED) from None

    def _connect_done(self, task: asyncio.Task[H2Connection]) -> None:
        self._connects.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have given up waiting

    async def _open(self, slot: _Slot) -> H2Connection:
        address = slot.address
        loop = asyncio.get_running_loop()
        authority = self._server_name or address.address
        conn: H2Connection | None = None

        def protocol() -> H2Connection:
            nonlocal conn
            conn = H2Connection(self.name, address.address, self._scheme, authority, self._lost)
            self._conns.add(conn)
            return conn

        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                transport, _ = await loop.create_connection(
                    protocol,
                    address.host,
                    address.port,
                    ssl=self._ssl,
                    server_hostname=(self._server_name or address.host) if self._ssl is not None else None,
                )
                _keep_alive(transport.get_extra_info("socket"))
                ssl_object = transport.get_extra_info("ssl_object")
                alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else "h2"
                if alpn not in ("h2", None):
                    raise ConnectionError(f"server chose ALPN {alpn!r}, not h2")
                assert conn is not None
                await conn.ready
        except (OSError, TimeoutError) as exc:
            if conn is not None:
                conn.close()
            address.failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * BACKOFF_MULTIPLIER ** (address.failures - 1))
            address.retry_at = loop.time() + delay * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
            address.error = f"cannot connect to {address.address}: {_reason(exc)}"
            raise GatewayError(_C.UNAVAILABLE, f"backend {self.name} unavailable: {address.error}") from None
        finally:
            slot.connecting = None
        address.failures = 0
        slot.conn = conn
        return conn

    def _lost(self, conn: H2Connection) -> None:
        self._conns.discard(conn)
        for slot in self._slots:
            if slot.conn is conn:
                slot.conn = None


def _keep_alive(sock: socket.socket | None) -> None:
    """TCP keepalive finds a peer host that vanished (no FIN, no RST) within about a minute, in the
    kernel: no HTTP/2 PINGs, which grpc servers answer with GOAWAY when they come too often."""
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if exc.errno:  # asyncio's text for a refused connect hides the errno's own words
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def tls_context(tls: BackendTLS) -> ssl.SSLContext:
    """Verify the backend against `ca_file` (system roots if None), present a client cert for mTLS."""
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file is not None else None)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    context.set_alpn_protocols(["h2"])
    return context
