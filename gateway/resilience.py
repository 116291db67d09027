"""Retries towards backends: which calls may be retried, when, how often, and the budget that
keeps retries from multiplying an outage.

A call is retried only when it failed with a retryable code (UNAVAILABLE by default: the backend
was not reached or refused the stream), its method is idempotent (its HTTP method is GET, HEAD,
PUT, DELETE or OPTIONS, or the route says `idempotent: true`), attempts remain, the backend's retry
budget allows it, and the route's deadline leaves room for the backoff and another try. Backoff is
exponential with full jitter. The budget is gRPC's retry throttling: a token bucket per backend
that failures drain (1 each) and successes refill (`token_ratio` each); retries stop while it is at
or below half, so a backend that is down gets roughly one try per request, not `attempts`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from pydantic import BaseModel, ConfigDict, Field

from translators.errors import GatewayError

T = TypeVar("T")
IDEMPOTENT_HTTP = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(2, ge=1, le=10, description="Total tries, the first included; 1 disables retries.")
    backoff_base_ms: int = Field(25, ge=1, description="First backoff; doubles per retry (full jitter).")
    backoff_max_ms: int = Field(250, ge=1, description="Largest backoff.")
    codes: tuple[str, ...] = Field(("UNAVAILABLE",), description="gRPC codes that may be retried.")
    idempotent: bool | None = Field(
        None, description="Retry whatever the HTTP method (true), never (false), or by HTTP method (unset)."
    )


class RetryBudgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: float = Field(10.0, gt=0, le=1000, description="Size of the backend's retry token bucket.")
    token_ratio: float = Field(0.1, gt=0, le=1, description="Tokens a success gives back.")


class RetryBudget:
    def __init__(self, config: RetryBudgetConfig) -> None:
        self.config = config
        self.tokens = config.max_tokens
        self.denied = 0

    def record(self, ok: bool) -> None:
        if ok:
            self.tokens = min(self.config.max_tokens, self.tokens + self.config.token_ratio)
        else:
            self.tokens = max(0.0, self.tokens - 1)

    def allows(self) -> bool:
        if self.tokens > self.config.max_tokens / 2:
            return True
        self.denied += 1
        return False


def retries_possible(config: RetryConfig, http_method: str) -> bool:
    idempotent = config.idempotent if config.idempotent is not None else http_method in IDEMPOTENT_HTTP
    return idempotent and config.attempts > 1


async def retry_after(
    failed: GatewayError,
    attempt: Callable[[float], Awaitable[T]],
    config: RetryConfig,
    deadline: float,
    budget: RetryBudget | None,
) -> T:
    """The tries after a first one that failed with `failed`, for a call that may be retried, until
    `deadline` (`time.monotonic()`); re-raise the last error. A caller on the hot path makes the first
    try itself and comes here only when it failed, so a call that succeeds pays nothing for retries."""
    error = failed
    for number in range(1, config.attempts):  # `number` tries made so far
        if error.code.name not in config.codes:
            raise error
        if budget is not None and not budget.allows():
            raise error
        cap = min(config.backoff_max_ms, config.backoff_base_ms * 2 ** (number - 1)) / 1000
        pause = random.uniform(0, cap)
        if time.monotonic() + pause >= deadline:
            raise error
        await asyncio.sleep(pause)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the backend answered")
        try:
            return await attempt(remaining)
        except GatewayError as err:
            error = err
    raise error
