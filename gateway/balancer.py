"""A backend of several addresses: round robin, health-aware, with outlier ejection.

`BalancedUpstream` composes one single-address `Upstream` per address (either client
implementation) and is itself an `Upstream`. It picks addresses round robin, skipping those its
health checks mark down (unless all are down: then it tries them anyway, Envoy's panic mode) and
those the outlier detector ejected. An address that fails `consecutive_failures` times in a row
with UNAVAILABLE (the connection-level failure) is ejected for `base_ejection_s` times the number of
its ejections, at most `max_ejection_percent` of the addresses at once. When every address is
ejected the call fails at once with UNAVAILABLE and `Retry-After` (the time until the first one
returns). It also holds the backend's retry budget (see `gateway.resilience`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway.config import BackendConfig, OutlierConfig
from gateway.resilience import RetryBudget
from gateway.upstream import Observer, UnaryResult, Upstream
from gateway.upstreams.h2 import H2Upstream
from translators.errors import GatewayError
from translators.metadata import Metadata

_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


@dataclass(slots=True)
class _Address:
    address: str
    upstream: Upstream
    failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    # The member's unary call, told to report its outcome to `record` (set by BalancedUpstream).
    unary: Callable[[str, bytes, Metadata, float, Observer], Coroutine[Any, Any, UnaryResult]] = field(init=False)
    record: Observer = field(init=False)


async def _observed_unary(
    upstream: Upstream, rpc_path: str, request: bytes, metadata: Metadata, timeout: float, observe: Observer
) -> UnaryResult:
    """A member's unary call with its outcome reported, for members that cannot report it themselves."""
    try:
        result = await upstream.unary(rpc_path, request, metadata, timeout)
    except GatewayError as err:
        observe(err)
        raise
    observe(None)
    return result


async def _fail(error: GatewayError) -> UnaryResult:
    raise error


class OutlierDetector:
    """Consecutive-failure ejection over a fixed list of addresses; pure bookkeeping, no I/O."""

    def __init__(self, config: OutlierConfig, count: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.count = count
        self.clock = clock

    def ejected(self, entry: _Address, now: float) -> bool:
        return entry.ejected_until > now

    def record(self, entry: _Address, ok: bool, entries: Sequence[_Address]) -> None:
        if ok:
            entry.failures = 0
            return
        entry.failures += 1
        cfg = self.config
        if not cfg.enabled or entry.failures < cfg.consecutive_failures:
            return
        now = self.clock()
        ejected_now = sum(1 for e in entries if e.ejected_until > now)
        if ejected_now + 1 > max(1, math.floor(self.count * cfg.max_ejection_percent / 100)):
            return
        entry.ejections += 1
        entry.ejected_until = now + cfg.base_ejection_s * min(entry.ejections, cfg.max_ejection_multiplier)
        entry.failures = 0


class BalancedUpstream:
    def __init__(
        self, name: str, config: BackendConfig, members: Sequence[Upstream], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.config = config
        self.addresses = config.addresses
        self._entries = [_Address(a, u) for a, u in zip(config.addresses, members, strict=True)]
        self._detector = OutlierDetector(config.outlier, len(self._entries), clock)
        self._clock = clock
        self._next = 0
        self.retry_budget = RetryBudget(config.retry_budget)
        for entry in self._entries:
            entry.record = self._recorder(entry)
            # The lean client reports outcomes itself (one coroutine fewer per call); others are wrapped.
            entry.unary = (
                entry.upstream.unary
                if isinstance(entry.upstream, H2Upstream)
                else functools.partial(_observed_unary, entry.upstream)
            )

    def _choose(self) -> _Address:
        entries = self._entries
        now = self._clock()
        n = len(entries)
        if n == 1 and entries[0].ejected_until <= now:  # one address: healthy or not, it is the one
            return entries[0]
        candidates = [e for e in entries if e.ejected_until <= now]
        if not candidates:
            wait = min(e.ejected_until for e in entries) - now
            raise GatewayError(
                _UNAVAILABLE,
                f"backend {self.name}: every address is ejected after repeated failures",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        healthy = [e for e in candidates if e.upstream.healthy()] or candidates  # all down: panic, try anyway
        start = self._next
        self._next = (start + 1) % n
        # Round robin over the whole list keeps the spread even as addresses come and go.
        for offset in range(n):
            entry = entries[(start + offset) % n]
            if entry in healthy:
                return entry
        return healthy[0]

    def _recorder(self, entry: _Address) -> Observer:
        """`entry`'s observer: a plain function, so a call's outcome costs one Python call."""
        budget = self.retry_budget
        ceiling = budget.config.max_tokens  # frozen config
        record = self._record

        def observe(error: GatewayError | None) -> None:
            if error is None and not entry.failures and budget.tokens >= ceiling:
                return  # a success that changes nothing (RetryBudget.record caps at the ceiling)
            record(entry, error)

        return observe

    def _record(self, entry: _Address, error: GatewayError | None) -> None:
        ok = error is None or error.code is not _UNAVAILABLE
        self._detector.record(entry, ok, self._entries)
        self.retry_budget.record(ok)

    def unary(
        self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float
    ) -> Coroutine[Any, Any, UnaryResult]:
        # Not a coroutine: the member's call records its own outcome through `entry.record`, so the
        # caller awaits that call directly. Errors still surface when awaited, as from a coroutine.
        entries = self._entries
        if len(entries) == 1 and entries[0].ejected_until <= self._clock():  # `_choose`'s first case
            entry = entries[0]
        else:
            try:
                entry = self._choose()
            except GatewayError as err:
                return _fail(err)
        return entry.unary(rpc_path, request, metadata, timeout, entry.record)

    async def server_stream(
        self, rpc_path: str, request: bytes, metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]:
        entry = self._choose()
        stream = entry.upstream.server_stream(rpc_path, request, metadata, timeout)
        recorded = False
        try:
            async for message in stream:
                if not recorded:
                    self._record(entry, None)
                    recorded = True
                yield message
        except GatewayError as err:
            if not recorded:
                self._record(entry, err)
                recorded = True
            raise
        finally:
            await stream.aclose()
        if not recorded:
            self._record(entry, None)

    async def client_stream(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> UnaryResult:
        entry = self._choose()
        try:
            result = await entry.upstream.client_stream(rpc_path, requests, metadata, timeout)
        except GatewayError as err:
            self._record(entry, err)
            raise
        self._record(entry, None)
        return result

    async def bidi(
        self, rpc_path: str, requests: AsyncIterable[bytes], metadata: Metadata, timeout: float
    ) -> AsyncGenerator[bytes, None]:
        entry = self._choose()
        stream = entry.upstream.bidi(rpc_path, requests, metadata, timeout)
        error: GatewayError | None = None
        try:
            async for message in stream:
                yield message
        except GatewayError as err:
            error = err
            raise
        finally:
            await stream.aclose()
            self._record(entry, error)

    def healthy(self) -> bool:
        return any(e.upstream.healthy() for e in self._entries)

    def health_report(self) -> dict[str, bool]:
        now = self._clock()
        return {e.address: e.upstream.healthy() and e.ejected_until <= now for e in self._entries}

    def ejections(self) -> dict[str, int]:
        return {e.address: e.ejections for e in self._entries}

    async def check_health_forever(self) -> None:
        await asyncio.gather(
            *(e.upstream.check_health_forever() for e in self._entries if e.upstream.config.health.enabled)
        )

    async def close(self) -> None:
        await asyncio.gather(*(e.upstream.close() for e in self._entries))


def build_balanced(
    backends: dict[str, BackendConfig], make_member: Callable[[str, BackendConfig], Upstream]
) -> dict[str, BalancedUpstream]:
    """One `BalancedUpstream` per backend, each address served by its own single-address member."""
    out = {}
    for name, config in backends.items():
        members = [make_member(name, config.model_copy(update={"addresses": (address,)})) for address in config.addresses]
        out[name] = BalancedUpstream(name, config, members)
    return out
