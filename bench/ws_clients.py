"""The WebSocket benchmark's load generator: asyncio clients on uvloop, in a process of their own.

`bench/websocket.py` starts `python -m bench.ws_clients <spec.json>` once per measured cell and
reads the result file the spec names; nothing here knows about the gateway beyond URLs. Each kind
opens `conns` connections (or streams) to 127.0.0.1 only:

  ws_echo      closed-loop ping-pong on a WebSocket: send one text frame, wait for one frame back,
               again. The same client measures the demo chat backend directly and through the
               gateway's passthrough, and gRPC `Chat` through the gateway (one JSON frame per message).
  grpc_bidi    the same loop on direct grpc.aio bidi streams (`EchoService.Chat`), one channel per
               connection, messages pre-serialized and responses not decoded (the cheapest client).
  ndjson       `GET .../items:stream` read as it arrives, messages counted by newline, one request
               after another on each connection.
  grpc_stream  `StreamItems` on direct grpc.aio, responses not decoded.
  idle         open `conns` WebSockets, write the `ready` file, then hold them (answering the
               gateway's pings) until `hold_s` has passed.

Warm-up first, then a measured window: only round trips sent and completed inside it count, and
each one's latency is kept for the percentiles. Marker files tell the orchestrator when the window
opens and closes, so that it reads the servers' CPU over the same window. The result is JSON:
messages, seconds, msgs/s, p50/p99/max in ms, errors, and the client's own CPU seconds in the window.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import uvloop
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

_OPEN_BATCH = 100  # connections opened at once: more would overflow the listen backlog


def _echo_pb2() -> Any:
    """The generated echo.v1 messages (protos/_gen is importable only after `add_generated_path`)."""
    import protos

    protos.add_generated_path()
    from echo.v1 import echo_pb2

    return echo_pb2


@dataclass
class Window:
    """The measured window and what was counted in it."""

    warm_s: float
    measure_s: float
    marks: str = ""  # a path prefix: "<marks>.start" and "<marks>.end" are written as the window opens and closes
    start: float = 0.0
    end: float = 0.0
    stop: bool = False
    messages: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0  # this process's CPU during the window

    def record(self, sent: float, done: float) -> None:
        if sent >= self.start and done <= self.end:
            self.messages += 1
            self.latencies.append(done - sent)

    def record_count(self, count: int, at: float) -> None:
        if self.start <= at <= self.end:
            self.messages += count

    async def run(self) -> None:
        await asyncio.sleep(self.warm_s)
        self._mark("start")
        cpu = _cpu_s()
        self.start = time.perf_counter()  # not loop.time(): uvloop's clock ticks in milliseconds
        self.end = self.start + self.measure_s
        await asyncio.sleep(self.measure_s)
        self.cpu_s = _cpu_s() - cpu
        self._mark("end")
        self.stop = True

    def _mark(self, name: str) -> None:
        """Tell the orchestrator, which reads the servers' CPU when the window opens and closes."""
        if self.marks:
            Path(f"{self.marks}.{name}").write_text(f"{time.time():.3f}\n")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _open_all(count: int, opener: Callable[[int], Awaitable[Any]]) -> list[Any]:
    opened: list[Any] = []
    for first in range(0, count, _OPEN_BATCH):
        opened.extend(await asyncio.gather(*(opener(i) for i in range(first, min(count, first + _OPEN_BATCH)))))
    return opened


async def ws_echo(spec: dict[str, Any], window: Window) -> None:
    url, payload = spec["url"], spec["payload"]
    subprotocols = spec.get("subprotocols") or None

    async def open_one(_i: int) -> Any:
        return await connect(url, subprotocols=subprotocols, ping_interval=None, compression=None, open_timeout=30)

    sockets = await _open_all(spec["conns"], open_one)

    async def loop_one(ws: Any) -> None:
        while not window.stop:
            sent = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            window.record(sent, time.perf_counter())

    try:
        await asyncio.gather(window.run(), *(loop_one(ws) for ws in sockets))
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def grpc_bidi(spec: dict[str, Any], window: Window) -> None:
    request = _echo_pb2().EchoRequest(message=spec["message"]).SerializeToString()
    channels = [grpc.aio.insecure_channel(spec["target"]) for _ in range(spec["conns"])]

    async def loop_one(channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream("/echo.v1.EchoService/Chat")()  # bytes in, bytes out
        try:
            while not window.stop:
                sent = time.perf_counter()
                await call.write(request)
                await call.read()
                window.record(sent, time.perf_counter())
            await call.done_writing()
        finally:
            call.cancel()

    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        await asyncio.gather(window.run(), *(loop_one(c) for c in channels))
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def ndjson(spec: dict[str, Any], window: Window) -> None:
    url = spec["url"]
    connector = aiohttp.TCPConnector(limit=spec["conns"])
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as http:

        async def loop_one(_i: int) -> None:
            while not window.stop:
                async with http.get(url) as response:
                    if response.status != 200:
                        window.errors += 1
                        await asyncio.sleep(0.1)
                        continue
                    async for chunk in response.content.iter_any():
                        window.record_count(chunk.count(b"\n"), time.perf_counter())
                        if window.stop:
                            break

        await asyncio.gather(window.run(), *(loop_one(i) for i in range(spec["conns"])))


async def grpc_stream(spec: dict[str, Any], window: Window) -> None:
    request = _echo_pb2().StreamItemsRequest(count=spec["count"]).SerializeToString()
    channels = [grpc.aio.insecure_channel(spec["target"]) for _ in range(spec["conns"])]

    async def loop_one(channel: grpc.aio.Channel) -> None:
        method = channel.unary_stream("/echo.v1.EchoService/StreamItems")
        while not window.stop:
            call = method(request)
            try:
                async for _ in call:
                    window.record_count(1, time.perf_counter())
                    if window.stop:
                        break
            finally:
                call.cancel()

    try:
        await asyncio.gather(*(c.channel_ready() for c in channels))
        await asyncio.gather(window.run(), *(loop_one(c) for c in channels))
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def idle(spec: dict[str, Any], window: Window) -> None:
    url = spec["url"]
    subprotocols = spec.get("subprotocols") or None
    first = spec.get("first_frame")

    async def open_one(_i: int) -> Any:
        ws = await connect(url, subprotocols=subprotocols, ping_interval=None, compression=None, open_timeout=60)
        if first:  # a gRPC stream is opened by its first message (then it idles, the call open)
            await ws.send(first)
            await ws.recv()
        return ws

    started = time.monotonic()
    sockets = await _open_all(spec["conns"], open_one)
    window.messages = len(sockets)
    Path(spec["ready_file"]).write_text(f"{time.monotonic() - started:.3f}\n")
    try:
        deadline = time.monotonic() + spec["hold_s"]
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        window.errors = sum(1 for ws in sockets if ws.close_code is not None)  # closed under us
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


KINDS: dict[str, Callable[[dict[str, Any], Window], Awaitable[None]]] = {
    "ws_echo": ws_echo,
    "grpc_bidi": grpc_bidi,
    "ndjson": ndjson,
    "grpc_stream": grpc_stream,
    "idle": idle,
}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    window = Window(spec.get("warm_s", 0.0), spec.get("measure_s", 0.0), spec.get("marks", ""))
    try:
        await KINDS[spec["kind"]](spec, window)
    except (OSError, TimeoutError, grpc.RpcError, aiohttp.ClientError, WebSocketException) as exc:
        # reported, not raised: the orchestrator reads the result file
        return {"error": f"{type(exc).__name__}: {exc}"}
    latencies = sorted(window.latencies)
    seconds = window.measure_s or 1.0
    return {
        "messages": window.messages,
        "seconds": seconds,
        "rate": window.messages / seconds,
        "p50_ms": _quantile(latencies, 0.50) * 1000,
        "p99_ms": _quantile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
        "errors": window.errors,
        "client_cpu_s": window.cpu_s,
    }


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = uvloop.run(_main(spec))
    Path(spec["result_file"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
