"""`retry_after`: what happens after a first try failed. No sockets: the attempts are coroutines that
fail or succeed as scripted."""

from __future__ import annotations

import time

import grpc
import pytest

from gateway.resilience import RetryBudget, RetryBudgetConfig, RetryConfig, retries_possible, retry_after
from translators.errors import GatewayError

UNAVAILABLE = GatewayError(grpc.StatusCode.UNAVAILABLE, "down")
NOT_FOUND = GatewayError(grpc.StatusCode.NOT_FOUND, "no such thing")
FAST = RetryConfig(attempts=3, backoff_base_ms=1, backoff_max_ms=2)


def _script(*outcomes: object) -> tuple[list[float], object]:
    calls: list[float] = []
    pending = list(outcomes)

    async def attempt(remaining: float) -> str:
        calls.append(remaining)
        outcome = pending.pop(0)
        if isinstance(outcome, GatewayError):
            raise outcome
        return str(outcome)

    return calls, attempt


async def test_a_retryable_failure_is_tried_again_until_it_succeeds() -> None:
    calls, attempt = _script(UNAVAILABLE, "ok")
    assert await retry_after(UNAVAILABLE, attempt, FAST, time.monotonic() + 5, None) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 2 and 0 < calls[0] <= 5  # tries 2 and 3, each with what is left of the deadline


async def test_attempts_count_the_first_try() -> None:
    calls, attempt = _script(UNAVAILABLE, UNAVAILABLE)
    with pytest.raises(GatewayError) as raised:
        await retry_after(UNAVAILABLE, attempt, FAST, time.monotonic() + 5, None)  # type: ignore[arg-type]
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert len(calls) == 2  # 3 attempts in all


async def test_a_code_that_is_not_retryable_is_raised_at_once() -> None:
    calls, attempt = _script()
    with pytest.raises(GatewayError) as raised:
        await retry_after(NOT_FOUND, attempt, FAST, time.monotonic() + 5, None)  # type: ignore[arg-type]
    assert raised.value is NOT_FOUND and calls == []
    calls, attempt = _script(NOT_FOUND)  # nor after a retry
    with pytest.raises(GatewayError) as raised:
        await retry_after(UNAVAILABLE, attempt, FAST, time.monotonic() + 5, None)  # type: ignore[arg-type]
    assert raised.value is NOT_FOUND and len(calls) == 1


async def test_an_empty_budget_or_no_time_left_stops_retries() -> None:
    budget = RetryBudget(RetryBudgetConfig(max_tokens=2))
    budget.record(False)
    budget.record(False)
    calls, attempt = _script("ok")
    with pytest.raises(GatewayError):
        await retry_after(UNAVAILABLE, attempt, FAST, time.monotonic() + 5, budget)  # type: ignore[arg-type]
    assert calls == [] and budget.denied == 1
    with pytest.raises(GatewayError):
        await retry_after(UNAVAILABLE, attempt, FAST, time.monotonic(), None)  # type: ignore[arg-type]
    assert calls == []


def test_which_calls_may_be_retried() -> None:
    assert retries_possible(RetryConfig(), "GET") and not retries_possible(RetryConfig(), "POST")
    assert retries_possible(RetryConfig(idempotent=True), "POST")
    assert not retries_possible(RetryConfig(attempts=1), "GET")
