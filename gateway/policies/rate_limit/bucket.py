"""The token bucket, as pure math, and the types every limiter backend speaks.

A bucket holds at most `burst` tokens and gains `rate` tokens per second; a request takes one. Its
state is `(tokens, ts)`: the tokens it held at time `ts`. Refill is computed lazily when the bucket
is next read, `min(burst, tokens + (now - ts) * rate)`, so nothing runs between requests, a bucket
nobody stored is a full one, and a bucket idle for `burst / rate` seconds is full again and can be
forgotten without changing any answer. The Redis backend runs the same formulas in Lua (its
contract test holds the two to the same answers).

A request is admitted only if *every* limit that applies to it has a token; then each of them
gives one. A refused request takes nothing, so a client kept out by one limit does not drain the
others.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Sequence
from typing import NamedTuple, Protocol

# NamedTuples rather than frozen dataclasses: a few are made per request, and a frozen dataclass's
# __init__ sets each field through object.__setattr__, several times slower than a tuple.


class Bucket(NamedTuple):
    """One limit applied to one request: where its state lives and its (tier-resolved) parameters."""

    limit: str  # the limit's name, reported in errors and metrics
    key: str  # the backend key of this bucket: limit name plus the value counted by
    burst: int
    rate: float  # tokens per second


class Level(NamedTuple):
    """What one bucket looks like after the decision."""

    limit: str
    burst: int
    remaining: int  # whole tokens left
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: float  # seconds until it holds one token (0 if it holds one now)


class Verdict(NamedTuple):
    allowed: bool
    levels: tuple[Level, ...]

    def binding(self) -> Level:
        """The level to report: the limit that refused (the longest wait), else the lowest remaining."""
        levels = self.levels
        if len(levels) == 1:
            return levels[0]
        if not self.allowed:
            return max((lv for lv in levels if lv.retry_after_s > 0), key=lambda lv: lv.retry_after_s)
        return min(levels, key=lambda lv: (lv.remaining, -lv.reset_s))


class Backend(Protocol):
    """Where buckets live. `take` decides for all buckets of one request atomically."""

    def take(self, buckets: Sequence[Bucket]) -> Awaitable[Verdict]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class LimiterUnavailable(Exception):
    """The backend could not decide (timeout, connection refused, server error)."""


def refill(tokens: float, ts: float, now: float, burst: int, rate: float) -> float:
    """Tokens at `now` of a bucket that held `tokens` at `ts` (a clock going back adds nothing)."""
    return min(float(burst), tokens + max(0.0, now - ts) * rate)


def level(limit: str, tokens: float, burst: int, rate: float) -> Level:
    """Report a bucket holding `tokens` (after the decision)."""
    # Positional, and min/max written out: this runs once per request with the Redis limiter.
    remaining = math.floor(tokens)
    reset_s = (burst - tokens) / rate
    return Level(
        limit,
        burst,
        remaining if remaining > 0 else 0,  # noqa: FURB136  # builtin max() parses keywords: slower
        reset_s if reset_s > 0.0 else 0.0,  # noqa: FURB136
        0.0 if tokens >= 1.0 else (1.0 - tokens) / rate,
    )


def full_after(tokens: float, burst: float, rate: float) -> float:
    """Seconds until a bucket holding `tokens` is full, i.e. indistinguishable from a missing one."""
    return max(0.0, (burst - tokens) / rate)
