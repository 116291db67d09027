"""Capture: a redacted sample of real traffic written as dataset rows, for retraining screening on it.

`on_request` draws the sample (`sample_rate`, per route; `routes` limits it to some services or
methods); `on_message` keeps the first message of a sampled call, as the screening policy sees it;
`on_complete` builds the `RequestRecord` that screening scores (method, path, query, the `headers`
it screens, the body's leaves), redacts it (`screening.capture.Redactor`: credential headers and
fields always, plus `redact_headers` and `redact_fields`, plus whatever an auth policy hid from the
backend) and queues one line. Only requests that succeeded (status < 400) and that screening did
not flag or block are kept: the file is meant as benign background (`portcullis screening train
--benign FILE`), and a probe must not become training data for "normal".

A request never waits on the disk: lines go to an in-memory buffer (bounded by `max_buffer`; beyond
it a line is dropped and counted), which a background loop hands to a worker thread every
`flush_interval_s` (sooner when it fills up); the file is appended with whole lines and rotated by
size (`max_bytes`, `backups`). `stop` writes what is left. Counted in `portcullis_capture_records_total`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from gateway.call import Call
from gateway.metrics_registry import CAPTURE_RECORDS
from gateway.policies.base import BasePolicy, PolicyConfig, RouteConfigs
from screening import capture, record

log = logging.getLogger("portcullis.capture")
GLOBAL = ("routes", "path", "max_bytes", "backups", "redact_headers", "redact_fields", "flush_interval_s",
          "max_buffer")
_UNSET = object()  # a sampled call whose message has not come (yet)
_MISSING = object()  # a call that was not sampled


class CaptureConfig(PolicyConfig):
    sample_rate: float = Field(0.01, ge=0.0, le=1.0, description="Share of requests captured on these routes.")
    headers: tuple[str, ...] = Field(
        record.SCREENED_HEADERS, description="Request headers recorded (lower case): the ones screening reads."
    )
    # Global only: one file per gateway process.
    routes: tuple[str, ...] = Field(
        (), description="Routes captured, as 'pkg.Service' or 'pkg.Service.Method'; empty: every route."
    )
    path: Path = Field(
        Path("build/capture/traffic.jsonl"),
        description="Capture file (JSON lines); '{pid}' in it is replaced by the process id (several workers).",
    )
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Size at which the file is rotated.")
    backups: int = Field(3, ge=0, le=100, description="Rotated files kept (path.1 is the newest); 0: none.")
    redact_headers: tuple[str, ...] = Field(
        (), description="Headers redacted besides Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-API-Key."
    )
    redact_fields: tuple[str, ...] = Field(
        (), description="Body or query fields redacted besides password, token, api_key, secret...: a name "
        "(matched anywhere in the key path, case, '_' and '-' ignored) or a key path like user.ssn.",
    )
    flush_interval_s: float = Field(1.0, gt=0, le=60, description="How often buffered lines are written.")
    max_buffer: int = Field(10_000, ge=1, le=1_000_000, description="Lines waiting for a write; beyond: dropped.")

    @field_validator("redact_fields")
    @classmethod
    def _fields_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        capture.Redactor.build((), value)
        return value


class Capture(BasePolicy):
    name = "capture"

    def __init__(self, configs: RouteConfigs[CaptureConfig]) -> None:
        self.configs = configs
        settings = configs.default
        self.routes = frozenset(settings.routes)
        self.redactor = capture.Redactor.build(settings.redact_headers, settings.redact_fields)
        self.file = capture.CaptureFile(Path(str(settings.path).replace("{pid}", str(os.getpid()))),
                                        settings.max_bytes, settings.backups)
        self._calls: dict[int, Any] = {}  # sampled calls: their first message, or _UNSET
        self._buffer: list[bytes] = []
        self._full = asyncio.Event()
        self._stopping = False
        self._flusher: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._flusher = asyncio.create_task(self._flush_forever(self.configs.default.flush_interval_s))

    async def stop(self) -> None:
        if self._flusher is not None:
            self._stopping = True
            self._full.set()
            await self._flusher  # it writes what is left, then ends
            self._flusher = None

    async def _flush_forever(self, interval: float) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._full.wait(), interval)
            except TimeoutError:
                pass
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        try:
            await asyncio.to_thread(self.file.write, lines)
        except OSError as exc:
            CAPTURE_RECORDS.labels("failed").inc(len(lines))
            log.error("capture: %d records not written to %s: %s", len(lines), self.file.path, exc)
        else:
            CAPTURE_RECORDS.labels("written").inc(len(lines))

    # --- phases -------------------------------------------------------------------------------------
    async def on_request(self, call: Call) -> None:
        if self.routes and call.method_name not in self.routes and call.service not in self.routes:
            return
        rate = self.configs.for_call(call).sample_rate
        if rate > 0.0 and (rate >= 1.0 or random.random() < rate):
            self._calls[id(call)] = _UNSET

    async def on_message(self, call: Call, message: Any) -> None:
        key = id(call)
        if self._calls.get(key, _MISSING) is _UNSET:
            # Kept as it is (a reference); only a sampled call that completes is turned into a record.
            self._calls[key] = bytes(message) if isinstance(message, bytearray | memoryview) else message

    async def on_complete(self, call: Call) -> None:
        body = self._calls.pop(id(call), _MISSING)
        if body is _MISSING:
            return
        screened = call.attributes.get("screening") or {}
        if call.status >= 400 or call.error is not None or screened.get("verdict") in ("flag", "block", "error"):
            return
        if len(self._buffer) >= self.configs.default.max_buffer:
            CAPTURE_RECORDS.labels("dropped").inc()
            return
        cfg = self.configs.for_call(call)
        # The same record screening scores (record.from_request), so a model retrained on captured
        # traffic sees what it will be served.
        rec = record.from_request(call.method, call.path, call.query.items(), call.headers,
                                  None if body is _UNSET else body, cfg.headers)
        rec = self.redactor.record(rec, call.hidden_headers, call.hidden_query)
        self._buffer.append(capture.line(rec, call.request_id, call.route, call.started_unix))
        if len(self._buffer) >= 512:
            self._full.set()


def build(configs: RouteConfigs[CaptureConfig]) -> Capture:
    default = configs.default
    for route, cfg in configs.by_route.items():
        for key in GLOBAL:
            if getattr(cfg, key) != getattr(default, key):
                raise ValueError(f"services.{route}.policies.capture.{key}: a global setting only")
    return Capture(configs)
