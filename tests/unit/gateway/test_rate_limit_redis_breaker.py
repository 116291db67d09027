"""The breaker's `quiet` flag, which lets the Redis limiter's per-request path skip `allow()` and
`success()`: over any sequence of calls and clock steps, it is set exactly when skipping both
changes nothing (allow() would say yes and leave the breaker as it was; success() too)."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policies.rate_limit.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state_of(breaker: CircuitBreaker) -> dict[str, object]:
    return {k: v for k, v in vars(breaker).items() if k != "clock"}


ops = st.lists(
    st.one_of(
        st.sampled_from(["allow", "success", "failure", "abandon"]),
        st.floats(0.0, 4.0),  # the clock steps forward
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(ops=ops, failures=st.integers(1, 3))
def test_quiet_means_allow_and_success_would_change_nothing(ops: list[str | float], failures: int) -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=failures, cooldown_s=2.0, clock=clock)
    for op in ops:
        if isinstance(op, float):
            clock.now += op
        else:
            getattr(breaker, op)()
        clean = breaker.state is BreakerState.CLOSED and breaker._consecutive == 0
        assert breaker.quiet == clean
        if breaker.quiet:
            before = state_of(breaker)
            probe = copy.copy(breaker)
            assert probe.allow()
            assert state_of(probe) == before
            probe.success()
            assert state_of(probe) == before


def test_a_failure_breaks_the_quiet_and_a_success_restores_it() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=5.0, clock=Clock())
    assert breaker.quiet
    breaker.failure()
    assert not breaker.quiet and breaker.state is BreakerState.CLOSED
    breaker.success()
    assert breaker.quiet
