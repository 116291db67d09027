"""Backends behind one small interface, and the one place `grpc.aio` errors become `GatewayError`.

`GrpcUpstream` owns long-lived `grpc.aio` channels (one set per backend, round robin over its
addresses) and the grpc.health.v1 view that feeds `/readyz`. Calls carry already serialized
protobuf bytes: the translators own the messages, the upstream only moves bytes. It is created and
closed by `lifecycle.py`, never at module level.

Client and bidirectional streams take their requests as an async iterable. One writer task per
call, owned by the call (cancelled and awaited when it ends), moves them to the backend as fast as
the backend's flow control allows, then half-closes. An exception raised by the iterable ends the
call (the backend sees a cancellation) and is what the caller gets. Closing a response stream
early (`aclose`) cancels the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import BackendConfig
from translators.errors import GatewayError
from translators.metadata import Metadata
from translators.status import details_from_trailers

log = logging.getLogger("portcullis.upstream")
_CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.enable_retries", 0),  # retries are the gateway's policy, not the channel's
]


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 2.5x the cost
# of a plain one (about 3k instructions, on every unary call). Nothing mutates a result.
@dataclass(slots=True)
class UnaryResult:
    body: bytes
    initial_metadata: Metadata
    trailing_metadata: Metadata


# Told how a unary call ended (None: it got a reply) before its caller is; see `BalancedUpstream`.
Observer = Callable[[GatewayError | None], None]


class Upstream(Protocol):
    name: str
    addresses: tuple[str, ...]

    async def unary(self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float) -> UnaryResult: ...

    def server_stream(
        self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]: ...

    async def client_stream(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> UnaryResult: ...

    def bidi(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]: ...

    def healthy(self) -> bool: ...

    config: BackendConfig

    def health_report(self) -> dict[str, bool]: ...

    async def check_health_forever(self) -> None: ...

    async def close(self) -> None: ...


def _identity(data: bytes) -> bytes:
    return data


async def stop_writer(writer: asyncio.Task[None]) -> BaseException | None:
    """Cancel a call's writer task if it still runs, wait for it, and return what it failed with."""
    if not writer.done():
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        return None
    if writer.cancelled():
        return None
    return writer.exception()


def writer_failure(writer: asyncio.Task[None]) -> BaseException | None:
    """The exception a finished writer task raised (the requests iterable failed), if any."""
    if writer.done() and not writer.cancelled():
        return writer.exception()
    return None


def translate_rpc_error(exc: grpc.aio.AioRpcError, backend: str) -> GatewayError:
    """The gRPC status a backend (or the channel) returned, with its decoded details."""
    trailers = list(exc.trailing_metadata() or ())
    message = exc.details() or exc.code().name
    if exc.code() is grpc.StatusCode.UNAVAILABLE:
        message = f"backend {backend} unavailable: {message}"
    return GatewayError(exc.code(), message, details_from_trailers(trailers))


class GrpcUpstream:
    """A backend: its channels, round robin, and its last known health."""

    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        self.config = config
        credentials = _credentials(config)
        options: list[tuple[str, str | int]] = list(_CHANNEL_OPTIONS)
        if config.tls is not None and config.tls.server_name:
            options.append(("grpc.ssl_target_name_override", config.tls.server_name))
        self._channels: list[grpc.aio.Channel] = []
        self.addresses: tuple[str, ...] = config.addresses
        for address in config.addresses:
            for index in range(config.channels_per_address):
                # A distinct channel arg keeps grpc from sharing one subchannel between them.
                opts = [*options, ("grpc.channel_pooling_index", index)]
                if credentials is None:
                    self._channels.append(grpc.aio.insecure_channel(address, options=opts))
                else:
                    self._channels.append(grpc.aio.secure_channel(address, credentials, options=opts))
        self._next = itertools.cycle(range(len(self._channels)))
        self._unary: dict[tuple[int, str], grpc.aio.UnaryUnaryMultiCallable] = {}
        self._health: dict[str, bool] = dict.fromkeys(config.addresses, not config.health.enabled)

    def _pick(self) -> tuple[int, grpc.aio.Channel]:
        index = next(self._next)
        return index, self._channels[index]

    async def unary(self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float) -> UnaryResult:
        index, channel = self._pick()
        key = (index, rpc_path)
        callable_ = self._unary.get(key)
        if callable_ is None:
            callable_ = self._unary[key] = channel.unary_unary(
                rpc_path, request_serializer=_identity, response_deserializer=_identity
            )
        call = callable_(request, metadata=metadata, timeout=timeout)
        try:
            body = await call
            return UnaryResult(body, list(await call.initial_metadata() or ()), list(await call.trailing_metadata() or ()))
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, self.name) from None

    async def server_stream(
        self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]:
        _, channel = self._pick()
        call = channel.unary_stream(rpc_path, request_serializer=_identity, response_deserializer=_identity)(
            request, metadata=metadata, timeout=timeout
        )
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, self.name) from None
        finally:
            call.cancel()  # the client went away or the stream ended: never leave the call running

    async def client_stream(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> UnaryResult:
        _, channel = self._pick()
        call = channel.stream_unary(rpc_path, request_serializer=_identity, response_deserializer=_identity)(
            metadata=metadata, timeout=timeout
        )
        writer = asyncio.get_running_loop().create_task(_write_all(call, requests))
        try:
            body = await call
            return UnaryResult(body, list(await call.initial_metadata() or ()), list(await call.trailing_metadata() or ()))
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            raise _stream_error(exc, writer, self.name) from None
        finally:
            call.cancel()
            await stop_writer(writer)

    async def bidi(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]:
        _, channel = self._pick()
        call = channel.stream_stream(rpc_path, request_serializer=_identity, response_deserializer=_identity)(
            metadata=metadata, timeout=timeout
        )
        writer = asyncio.get_running_loop().create_task(_write_all(call, requests))
        try:
            async for message in call:
                yield message
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            raise _stream_error(exc, writer, self.name) from None
        finally:
            call.cancel()  # the client went away or the stream ended: never leave the call running
            await stop_writer(writer)

    def healthy(self) -> bool:
        return any(self._health.values())

    def health_report(self) -> dict[str, bool]:
        return dict(self._health)

    async def check_health_forever(self) -> None:
        """Poll grpc.health.v1 on each address; runs under the lifecycle's TaskGroup until cancelled."""
        cfg = self.config.health
        channels = {a: c for a, c in zip(self.addresses, self._channels[:: self.config.channels_per_address])}
        while True:
            await asyncio.gather(*(self._check(a, c) for a, c in channels.items()))
            await asyncio.sleep(cfg.interval_s)

    async def _check(self, address: str, channel: grpc.aio.Channel) -> None:
        cfg = self.config.health
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=cfg.service), timeout=cfg.timeout_s)
            ok = reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            ok = False
        if ok != self._health.get(address):
            log.info("backend %s address %s is %s", self.name, address, "healthy" if ok else "unhealthy")
        self._health[address] = ok

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels))


def _stream_error(
    exc: grpc.aio.AioRpcError | asyncio.CancelledError, writer: asyncio.Task[None], backend: str
) -> BaseException:
    """What a client or bidi stream fails with: the requests' own failure first (the writer cancelled
    the call for it, which grpc.aio reports as CancelledError), else the backend's status."""
    task = asyncio.current_task()
    if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
        return exc  # our caller is being cancelled: let that through
    failure = writer_failure(writer)
    if failure is not None:
        return failure
    if isinstance(exc, asyncio.CancelledError):
        return GatewayError(grpc.StatusCode.CANCELLED, "call cancelled")
    return translate_rpc_error(exc, backend)


async def _write_all(
    call: grpc.aio.StreamUnaryCall | grpc.aio.StreamStreamCall, requests: AsyncIterable[bytes]
) -> None:
    """Send every request, then half-close; a failing iterable cancels the call and re-raises."""
    try:
        async for message in requests:
            await call.write(message)
        await call.done_writing()
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
        return  # the call ended first: its status says why, and the reader reports it
    except Exception:
        call.cancel()
        raise


def _credentials(config: BackendConfig) -> grpc.ChannelCredentials | None:
    tls = config.tls
    if tls is None:
        return None

    def read(path: object) -> bytes | None:
        return path.read_bytes() if path is not None else None  # type: ignore[attr-defined]

    return grpc.ssl_channel_credentials(
        root_certificates=read(tls.ca_file),
        private_key=read(tls.key_file),
        certificate_chain=read(tls.cert_file),
    )


def build_upstreams(backends: dict[str, BackendConfig]) -> dict[str, Upstream]:
    """One upstream per backend, of the client its config names: "h2" (gateway/upstreams/) or "grpcio"."""
    from gateway.upstreams.h2 import H2Upstream  # it imports this module: bind at call time

    return {
        name: H2Upstream(name, cfg) if cfg.client == "h2" else GrpcUpstream(name, cfg)
        for name, cfg in backends.items()
    }


__all__: Sequence[str] = (
    "GrpcUpstream", "Observer", "UnaryResult", "Upstream", "build_upstreams", "stop_writer", "translate_rpc_error", "writer_failure",
)
