"""A circuit breaker in front of the limiter backend, so a dead Redis costs nothing per request.

Closed: every request asks the backend; `failures` failures in a row open the breaker. Open: for
`cooldown_s` nobody asks, the policy applies its failure mode at once (no timeout is waited).
Then half-open: exactly one request probes the backend while the others keep the failure mode;
a success closes the breaker, a failure opens it for another cool-down. A probe that ends without
an answer (the client went away) hands the probe to the next request. Single event loop, so no
locks: state changes happen between awaits.

`quiet` says the breaker is closed with no failure counted, the state of a healthy backend: then
`allow()` is True and `success()` changes nothing, so a caller per request may test the attribute
and skip both calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self.opened = 0  # times the breaker opened, for logs and metrics
        # Invariant: quiet == (state is CLOSED and _consecutive == 0); _probing is False then.
        self.quiet = True

    def allow(self) -> bool:
        """May this request ask the backend? At most one may while half-open."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock() - self._opened_at < self.cooldown_s:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def retry_after_s(self) -> float:
        """How long until the backend is asked again (0 when closed)."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def success(self) -> None:
        self._consecutive = 0
        self._probing = False
        self.state = BreakerState.CLOSED
        self.quiet = True

    def failure(self) -> None:
        self._probing = False
        self.quiet = False
        if self.state is BreakerState.HALF_OPEN:
            self._open()
            return
        self._consecutive += 1
        if self.state is BreakerState.CLOSED and self._consecutive >= self.failures:
            self._open()

    def abandon(self) -> None:
        """The request that was let through ended without an answer: free the probe slot."""
        self._probing = False

    def _open(self) -> None:
        self.state = BreakerState.OPEN
        self._opened_at = self.clock()
        self._consecutive = 0
        self.opened += 1
