"""Access log: one JSON line per request, written by this policy and nothing else.

It reads the finished `Call` in `on_complete` (which always runs, errors and disconnects included):
request id, route, method, path (never the query, which may carry keys), consumer, client IP,
status, gRPC code, upstream, latencies, bytes, trace id, and the notes other policies left in
`call.attributes` (screening verdict and score, rate-limit decisions). Never credentials or bodies.
Lines are buffered and flushed by a background loop, so a request never waits on a write.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Callable
from math import floor
from pathlib import Path
from time import perf_counter
from typing import IO, Literal

import orjson
from pydantic import Field, model_validator

from gateway.call import Call
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs

log = logging.getLogger("portcullis.access_log")


class AccessLogConfig(PolicyConfig):
    enabled: bool = Field(True, description="Write access lines for these routes.")
    sink: Literal["stdout", "file"] = Field("stdout", description="Where lines go.")
    path: Path | None = Field(None, description="File to append to when sink is 'file'.")
    sample_rate: float = Field(1.0, ge=0.0, le=1.0, description="Share of successful requests logged.")
    always_log_errors: bool = Field(True, description="Log every request answered >= 400, whatever the sampling.")
    flush_interval_s: float = Field(0.2, gt=0, le=10, description="How often buffered lines are written.")

    @model_validator(mode="after")
    def _path_for_file(self) -> AccessLogConfig:
        if self.sink == "file" and self.path is None:
            raise ValueError("sink 'file' needs a path")
        return self


class AccessLog(BasePolicy):
    name = "access_log"

    def __init__(self, configs: RouteConfigs[AccessLogConfig]) -> None:
        self.configs = configs
        self._buffer: list[bytes] = []
        self._append = self._buffer.append  # the buffer is only ever cleared, never replaced
        self._out: IO[bytes] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._interval = configs.default.flush_interval_s
        # One config, enabled, unsampled (the usual case): every request's line, nothing to look up.
        default = configs.default
        self._every_line = not configs.by_route and default.enabled and default.sample_rate >= 1.0
        self._lines = _Lines(self._append)
        if self._every_line:
            # The hook is then the writer's own method: one Python frame per line, not
            # on_complete's and then the builder's (a bound method is called inline, a partial not).
            self.on_complete = self._lines.write  # type: ignore[method-assign]

    async def start(self) -> None:
        cfg = self.configs.default
        if cfg.sink == "file":
            assert cfg.path is not None
            cfg.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = cfg.path.open("ab")
        else:
            self._out = sys.stdout.buffer
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self._out is not None and self._out is not sys.stdout.buffer:
            self._out.close()

    def _tick(self) -> None:
        # The flush loop as a timer that re-arms itself: a wake-up is one callback, not a task
        # step, a future and a coroutine resumed. A failed write is logged and the loop goes on.
        try:
            self.flush()
        except Exception:
            log.exception("access log: writing buffered lines failed")
        finally:
            if self._timer is not None:
                self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def flush(self) -> None:
        if self._buffer and self._out is not None:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._out.write(data)
            self._out.flush()

    def on_complete(self, call: Call) -> None:
        # Every line (the usual case) is written by `_Lines.write` itself: see __init__.
        cfg = self.configs.for_call(call)
        if not cfg.enabled:
            return
        sampled_out = cfg.sample_rate < 1.0 and random.random() >= cfg.sample_rate
        if sampled_out and not (cfg.always_log_errors and call.status >= 400):
            return
        self._lines.write(call)


_dumps, _NEWLINE = orjson.dumps, orjson.OPT_APPEND_NEWLINE  # positional: no keyword parsing per line
_second: list[object] = [-2.0, ""]  # the last whole second formatted (as a float), reused within it
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))  # the fraction, formatted once


class _Fields:
    """One line's fields as attributes, set in line order.

    Fifteen attribute stores and one `__dict__` (a dict over the class's shared keys, made without
    inserting anything) cost a third of building the same dict from a literal; orjson writes it
    like any dict, in that order. The annotations are for the type checker; the values live on the
    instance.
    """

    ts: str
    request_id: str
    route: str | None
    method: str
    path: str
    consumer: str | None
    client_ip: str
    status: int
    grpc_code: str | None
    upstream: str | None
    latency_ms: float
    upstream_ms: float
    bytes_in: int
    bytes_out: int
    trace_id: str | None


class _Lines:
    """Writes each call's access line (JSON, newline-terminated) with `append`."""

    __slots__ = ("append",)

    def __init__(self, append: Callable[[bytes], object]) -> None:
        self.append = append

    def write(self, call: Call) -> None:
        # Written out (this runs once per request): the timestamp to the millisecond, formatted once per
        # second; milliseconds to the microsecond, rounded half up (`round(x, 3)` formats and parses a
        # string). `floor` is `int` for these positive numbers, at half the cost of calling the type.
        # Within the second formatted last, its fraction is found without flooring `unix` (the same
        # difference: the whole second as a float is exact, and so is the subtraction).
        unix = call.started_unix
        fraction = unix - _second[0]  # type: ignore[operator]
        if not 0.0 <= fraction < 1.0:
            whole = floor(unix)
            _second[0], _second[1] = whole + 0.0, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            fraction = unix - whole
        fields = _Fields()
        fields.ts = _second[1] + _MILLIS[floor(fraction * 1000)]  # type: ignore[operator]
        fields.request_id = call.request_id
        fields.route = call.route
        fields.method = call.method
        fields.path = call.path
        fields.consumer = call.consumer
        fields.client_ip = call.client_ip
        fields.status = call.status
        fields.grpc_code = call.grpc_code
        fields.upstream = call.upstream
        fields.latency_ms = floor(((call.finished or perf_counter()) - call.started) * 1_000_000.0 + 0.5) / 1000
        fields.upstream_ms = floor(call.upstream_s * 1_000_000.0 + 0.5) / 1000
        fields.bytes_in = call.bytes_in
        fields.bytes_out = call.bytes_out
        fields.trace_id = call.trace_id
        record: dict[str, object] = fields.__dict__
        if call.error is not None:
            record["error"] = call.error.message
        if call.attributes:
            record.update(call.attributes)
        self.append(_dumps(record, None, _NEWLINE))


def build(configs: RouteConfigs[AccessLogConfig]) -> AccessLog:
    return AccessLog(configs)
