"""The demo echo.v1.EchoService backend: the benchmark contract, served on grpc.aio behind the gateway.

Owns the Python implementation of `protos/echo/v1/echo.proto`. Ordinary requests get exactly what the Go
peer's backend gives (shared/peers/grpc-gateway, `backend_py.py`), so figures taken against either compare
the same work:
  Echo         `message` repeated max(1, repeat) times, `labels` echoed, received_at_unix_nanos = now.
  GetItem      Item(id, name="item " + id, price=9.99, tags=["a", "b"]).
  StreamItems  `count` items (none when count <= 0) with ids prefix + i; the prefix defaults to "item-".
  Chat         one EchoResponse, as Echo gives, for each EchoRequest.

Test hooks, for gateway tests; none of them fires on ordinary requests:
  "__error__:<CODE>"   in Echo's or a Chat message's `message`, or in GetItem's `id`: abort with
                       grpc.StatusCode.<CODE> (e.g. "__error__:NOT_FOUND"), without status details. In
                       Chat the stream ends there. In StreamItems' `prefix`: send the `count` items
                       first, then abort (an error in mid-stream). An unknown or OK code name gives
                       INVALID_ARGUMENT.
  "__sleep__:<ms>"     in the same fields: wait that many milliseconds, then answer as usual (the text
                       is echoed unchanged). In StreamItems' `prefix`: wait before each item. Useful for
                       deadline, cancellation and graceful-shutdown tests. A malformed or negative
                       number gives INVALID_ARGUMENT.
                       StreamItems with either hook as its prefix names its items "item-<i>".
  "__metadata__"       as Echo's or a Chat message's `message`: the response labels also hold every
                       request metadata entry (binary `-bin` values base64-encoded; repeated keys
                       joined with ","), to check which headers the gateway forwards.
  `Stats`                  pass one to `serve(stats=...)` to count what the streaming RPCs did:
                       messages StreamItems and Chat sent, and RPCs cancelled by the client (with
                       the loop time of each cancellation), for cancellation and backpressure tests.
  metadata `x-echo-metadata: <v>` on any RPC: the server sends initial metadata `x-echo-header: <v>`
                       and trailing metadata `x-echo-trailer: <v>`; `x-echo-metadata-bin` gives
                       `x-echo-header-bin` and `x-echo-trailer-bin` the same way. Each value is sent
                       once for each time it was received, errors included.

Run it with `python -m tests.support.echo_backend [--address 127.0.0.1:50061]`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc

import protos

# The generated stubs live in protos/_gen, which is importable only after this call.
protos.add_generated_path()

from echo.v1 import echo_pb2, echo_pb2_grpc

from tests.support.serving import RunningServer, run_main, start_server

SERVICE_NAME = echo_pb2.DESCRIPTOR.services_by_name["EchoService"].full_name
DEFAULT_ADDRESS = "127.0.0.1:50061"

ERROR_HOOK = "__error__:"
SLEEP_HOOK = "__sleep__:"
METADATA_HOOK = "__metadata__"
# Request metadata key -> (initial metadata key, trailing metadata key) it is echoed under.
ECHO_METADATA_KEYS = {
    "x-echo-metadata": ("x-echo-header", "x-echo-trailer"),
    "x-echo-metadata-bin": ("x-echo-header-bin", "x-echo-trailer-bin"),
}
DEFAULT_PREFIX = "item-"


@dataclass(frozen=True, slots=True)
class Hook:
    """What a hook text asks for: an error to end the RPC with, or a delay before answering."""

    error: grpc.StatusCode | None = None
    delay_s: float = 0.0


@dataclass
class Stats:
    """What the streaming RPCs did; only the test that made it reads it."""

    sent: int = 0  # messages StreamItems and Chat yielded (handed to grpc)
    cancelled: int = 0  # streaming RPCs the client cancelled
    cancelled_at: list[float] = field(default_factory=list)  # loop time of each cancellation


class HookError(ValueError):
    """A hook text that names no status code or no valid number of milliseconds."""


def parse_hook(text: str) -> Hook | None:
    """The hook `text` asks for, or None when it is ordinary text."""
    if text.startswith(ERROR_HOOK):
        name = text.removeprefix(ERROR_HOOK)
        code = grpc.StatusCode.__members__.get(name)
        if code is None or code is grpc.StatusCode.OK:
            raise HookError(f"test hook {text!r}: {name!r} is not a non-OK grpc.StatusCode name")
        return Hook(error=code)
    if text.startswith(SLEEP_HOOK):
        millis = text.removeprefix(SLEEP_HOOK)
        if not millis.isdigit():
            raise HookError(f"test hook {text!r}: {millis!r} is not a whole number of milliseconds")
        return Hook(delay_s=int(millis) / 1000)
    return None


async def _read_hook(text: str, context: grpc.aio.ServicerContext) -> Hook | None:
    try:
        return parse_hook(text)
    except HookError as error:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        raise AssertionError("unreachable: context.abort always raises") from error


async def _echo_metadata(context: grpc.aio.ServicerContext) -> None:
    """Send back x-echo-metadata(-bin) values as initial and trailing metadata."""
    initial: list[tuple[str, str | bytes]] = []
    trailing: list[tuple[str, str | bytes]] = []
    for key, value in context.invocation_metadata() or ():
        keys = ECHO_METADATA_KEYS.get(key)
        if keys is not None:
            initial.append((keys[0], value))
            trailing.append((keys[1], value))
    if initial:
        await context.send_initial_metadata(initial)
        # abort() keeps trailing metadata set here, so errors carry the echo too.
        context.set_trailing_metadata(trailing)


def _metadata_labels(metadata: Sequence[tuple[str, str | bytes]]) -> dict[str, str]:
    labels: dict[str, list[str]] = {}
    for key, value in metadata:
        text = base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        labels.setdefault(key, []).append(text)
    return {key: ",".join(values) for key, values in labels.items()}


def _echo(request: echo_pb2.EchoRequest) -> echo_pb2.EchoResponse:
    return echo_pb2.EchoResponse(
        message=request.message * max(1, request.repeat),
        received_at_unix_nanos=time.time_ns(),
        labels=request.labels,
    )


def _item(item_id: str) -> echo_pb2.Item:
    return echo_pb2.Item(id=item_id, name="item " + item_id, price=9.99, tags=["a", "b"])


async def _answer(request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext) -> echo_pb2.EchoResponse:
    """Echo one request, as Echo and each Chat message do, after running its hook."""
    hook = await _read_hook(request.message, context)
    if hook is not None:
        await asyncio.sleep(hook.delay_s)
        if hook.error is not None:
            await context.abort(hook.error, f"test hook {request.message!r}")
    response = _echo(request)
    if request.message == METADATA_HOOK:
        response.labels.update(_metadata_labels(context.invocation_metadata() or ()))
    return response


class EchoService(echo_pb2_grpc.EchoServiceServicer):
    """EchoService as the Go peer serves it, plus the hooks above."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats or Stats()

    def _cancelled(self) -> None:
        self.stats.cancelled += 1
        self.stats.cancelled_at.append(asyncio.get_running_loop().time())

    async def Echo(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoResponse:
        await _echo_metadata(context)
        return await _answer(request, context)

    async def GetItem(
        self, request: echo_pb2.GetItemRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.Item:
        await _echo_metadata(context)
        hook = await _read_hook(request.id, context)
        if hook is not None:
            await asyncio.sleep(hook.delay_s)
            if hook.error is not None:
                await context.abort(hook.error, f"test hook {request.id!r}")
        return _item(request.id)

    async def StreamItems(
        self, request: echo_pb2.StreamItemsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[echo_pb2.Item]:
        await _echo_metadata(context)
        hook = await _read_hook(request.prefix, context)
        prefix = DEFAULT_PREFIX if hook is not None or not request.prefix else request.prefix
        delay_s = hook.delay_s if hook is not None else 0.0
        try:
            for i in range(max(0, request.count)):
                if delay_s:
                    await asyncio.sleep(delay_s)
                yield _item(f"{prefix}{i}")
                self.stats.sent += 1
        except asyncio.CancelledError:
            self._cancelled()
            raise
        if hook is not None and hook.error is not None:
            await context.abort(hook.error, f"test hook {request.prefix!r} after {request.count} items")

    async def Chat(
        self, request_iterator: AsyncIterator[echo_pb2.EchoRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[echo_pb2.EchoResponse]:
        await _echo_metadata(context)
        try:
            async for request in request_iterator:
                yield await _answer(request, context)
                self.stats.sent += 1
        except asyncio.CancelledError:
            self._cancelled()
            raise


async def serve(address: str = "127.0.0.1:0", stats: Stats | None = None) -> RunningServer:
    """Start the echo backend with health and reflection; the caller stops it. `stats` counts the
    streaming RPCs' messages and cancellations."""

    def register(server: grpc.aio.Server) -> None:
        echo_pb2_grpc.add_EchoServiceServicer_to_server(EchoService(stats), server)

    return await start_server(address, register, (SERVICE_NAME,))


async def start(address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int]:
    """Start the echo backend on `address` (port 0 picks one); return the server and its bound port."""
    running = await serve(address)
    return running.server, running.port


def main() -> None:
    run_main("Portcullis demo echo.v1.EchoService backend", DEFAULT_ADDRESS, serve)


if __name__ == "__main__":
    main()
