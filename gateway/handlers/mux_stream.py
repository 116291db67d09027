"""One gRPC stream of a multiplexed WebSocket (`handlers/multiplex.py`): its request queue, its credits.

The socket's reader feeds a `MuxStream` (`put`, `half_close`, `add_credit`, `fail`); the stream's own
task, run by the socket, takes its request messages (`requests`: screened by the policies, counted,
serialized) and spends a response credit before each response message (`spend_credit`). Without a
window at open the queue is bounded and `put` waits when it is full; with one (flow control,
docs/websocket.md) the client's grants bound the queue instead, a message beyond them ends the
stream, and the slots the backend frees are granted back half a queue at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf.message import DecodeError

from gateway.call import Call
from gateway.handlers.sockets import SocketMeter
from gateway.pipeline import Pipeline
from gateway.runtime import RouteSettings
from translators.errors import BadRequest, GatewayError
from translators.mux_framing import MAX_WINDOW
from translators.request import build_request, make_plan
from translators.routes import Binding

log = logging.getLogger("portcullis.websocket")
_C = grpc.StatusCode
_JSON = "application/json"


class MuxStream:
    """One gRPC call on a multiplexed socket; the reader feeds it, its own task runs it."""

    def __init__(
        self, stream_id: int, call: Call, binding: Binding, settings: RouteSettings, pipeline: Pipeline,
        meter: SocketMeter, *, window: int = 0, binary: bool = False,
        grant: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> None:
        self.id = stream_id
        self.call = call
        self.binding = binding
        self.settings = settings
        self.pipeline = pipeline
        self.meter = meter
        self.binary = binary  # messages are protobuf bytes, not JSON
        plan = binding.request  # a frame's message is a whole request message, whatever the body rule
        self.plan = plan if plan.body == "*" else make_plan(plan.message_class, plan.path_fields, "*", plan.options)
        queued = settings.websocket.inbound_queue
        # Flow control (a window at open): the client's grants bound the queue, the reader never waits on it.
        self.flow = window > 0
        self.queue_size = queued
        # (message JSON or protobuf, frame size), None at half-close
        self.queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(0 if self.flow else queued)
        self.send_credit = window  # response messages the client still takes (flow control)
        self.credited = asyncio.Event()
        self.recv_credit = queued if self.flow else 0  # request messages the client may still send
        self.taken = 0  # request messages the backend took since the last grant
        self.grant = grant  # sends the client a grant of request messages
        self.half_closed = False
        self.ended = asyncio.Event()  # the call is over: nothing is taken from the queue any more
        self.started = False  # its task began (a task cancelled before its first step runs no code)
        self.stopping = False  # the reader or the socket ended it early
        self.failure: GatewayError | None = None  # why, sent as its status (None: the socket is ending)
        self.task: asyncio.Task[None] | None = None
        self.messages_in = 0
        self.messages_out = 0

    async def put(self, body: bytes, size: int) -> None:
        if self.flow:
            if self.recv_credit <= 0:
                self.fail(GatewayError(_C.RESOURCE_EXHAUSTED, "a request message beyond the stream's credit"))
                return
            self.recv_credit -= 1
        await self._enqueue((body, size))
        if not self.binding.client_streaming:  # a server-streaming method takes one message
            await self.half_close()

    def add_credit(self, count: int) -> None:
        """The client takes `count` more response messages (ignored without flow control)."""
        if self.flow:
            self.send_credit = min(MAX_WINDOW, self.send_credit + count)
            self.credited.set()

    async def spend_credit(self) -> None:
        """Wait until the client takes one more response message (flow control only)."""
        if self.flow:
            while self.send_credit <= 0:
                self.credited.clear()
                await self.credited.wait()
            self.send_credit -= 1

    async def half_close(self) -> None:
        if not self.half_closed:
            self.half_closed = True
            await self._enqueue(None)

    async def _enqueue(self, item: tuple[bytes, int] | None) -> None:
        """Queue for the backend, waiting while the queue is full (backpressure) unless the call ends."""
        if self.ended.is_set():
            return
        try:
            self.queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        put = asyncio.ensure_future(self.queue.put(item))
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait((put, ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            put.cancel()
            ended.cancel()

    def fail(self, error: GatewayError | None) -> None:
        """End the call early: for `error` (sent as the stream's status), or silently (None: the socket is ending)."""
        if self.ended.is_set() or self.stopping:
            return
        self.stopping, self.failure = True, error
        if self.started and self.task is not None:
            self.task.cancel()

    async def screen(self, item: tuple[bytes, int]) -> bytes:
        """One request message from its JSON, passed through the policies, counted, serialized."""
        raw, size = item
        if self.binary:
            try:
                message = self.binding.request.message_class.FromString(raw)
            except DecodeError:
                raise BadRequest("the request message does not decode") from None
        else:
            message = build_request(self.plan, {}, (), _JSON, raw)
        try:
            await self.pipeline.on_message(self.call, message)
        except GatewayError as err:
            log.info("request %s: a policy refused a WebSocket message: %s", self.call.request_id, err.message)
            raise
        self.messages_in += 1
        self.call.bytes_in += size
        self.meter.inbound(size)
        return message.SerializeToString()

    async def requests(self) -> AsyncIterator[bytes]:
        while (item := await self.queue.get()) is not None:
            if self.flow:  # the slot is free: grant it back, by half a queue at a time
                self.taken += 1
                if self.taken >= max(1, self.queue_size // 2) and self.grant is not None:
                    count, self.taken = self.taken, 0
                    self.recv_credit += count
                    await self.grant(self.id, count)
            yield await self.screen(item)
