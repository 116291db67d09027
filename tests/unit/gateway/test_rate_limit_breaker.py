"""The limiter backend's circuit breaker, on an injected clock."""

from __future__ import annotations

from gateway.policies.rate_limit.breaker import BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_only() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, cooldown_s=5.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # the streak is broken
    for _ in range(2):
        breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN and breaker.opened == 1
    assert not breaker.allow()
    assert breaker.retry_after_s() == 5.0


def test_half_open_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=5.0, clock=clock)
    breaker.failure()
    clock.now = 4.9
    assert not breaker.allow()
    clock.now = 5.0
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow() and not breaker.allow()  # the others keep the failure mode
    breaker.failure()  # the probe failed: another full cool-down
    assert breaker.state is BreakerState.OPEN and breaker.opened == 2
    assert breaker.retry_after_s() == 5.0
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()
    assert breaker.retry_after_s() == 0.0


def test_abandoned_probe_hands_over() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=1.0, clock=clock)
    breaker.failure()
    clock.now = 1.0
    assert breaker.allow()
    breaker.abandon()  # e.g. the client disconnected mid-probe
    assert breaker.allow()  # the next request probes
