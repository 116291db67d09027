"""The deadlines of one connection's calls, behind one timer armed for the earliest live deadline.

A layer of `H2Connection` (connection.py), above `Session` (session.py): `Caller._start` files
each new call's deadline here inline (it sits on the per-call path), and when the timer fires the
calls past their deadline are reset and finished with DEADLINE_EXCEEDED. One timer per connection,
because a loop timer per call cost more than the rest of `_start`. Deadlines wait in a FIFO of
(deadline, stream id) while each is no earlier than the last (calls to one route share a timeout,
so nearly always), the others in a heap; finished calls leave both lazily: from the head (every
64th call, and when the timer fires), or in a rebuild when one outgrows the open calls.

Invariants: an entry whose stream id is not in `_calls` is dead and is never acted on; the timer,
when set, fires at `_timer_at`, no later than the earliest live deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from heapq import heapify, heappop, heappush

import grpc

from gateway.upstreams import frames as F
from gateway.upstreams.calls import DEADLINE_EXCEEDED
from gateway.upstreams.session import Session
from translators.errors import GatewayError

_C = grpc.StatusCode
# The deadline timer fires when the loop's clock says so; an entry this close to its deadline then
# counts as due (libuv timers have millisecond resolution and may wake a little early).
_DEADLINE_SLACK_S = 0.001
_NEVER = float("inf")


class Deadlines(Session):
    """The deadline FIFO and heap of the open calls and the one timer that expires them."""

    def __init__(self, backend: str, address: str) -> None:
        super().__init__(backend, address)
        self._deadlines: deque[tuple[float, int]] = deque()  # (deadline, stream id), non-decreasing
        self._early: list[tuple[float, int]] = []  # heap: deadlines earlier than the FIFO's last
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timer_at = _NEVER  # when `_deadline_timer` fires

    def _arm(self, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._timer_at = when
        self._deadline_timer = self._loop.call_at(when, self._expire_due)

    def _prune_deadlines(self) -> None:
        """Drop finished calls' entries from the FIFO's head (calls end roughly in the order they
        began), and rebuild it if finished calls still wait behind a long-lived one."""
        fifo = self._deadlines
        calls = self._calls
        while fifo and fifo[0][1] not in calls:
            fifo.popleft()
        if len(fifo) > 64 + 2 * len(calls):
            self._deadlines = deque(entry for entry in fifo if entry[1] in calls)

    def _push_early(self, deadline: float, sid: int) -> None:
        heap = self._early
        calls = self._calls
        while heap and heap[0][1] not in calls:
            heappop(heap)
        heappush(heap, (deadline, sid))
        if len(heap) > 64 + 2 * len(calls):
            heap[:] = [entry for entry in heap if entry[1] in calls]
            heapify(heap)

    def _expire_due(self) -> None:
        """The deadline timer: reset and fail every call past its deadline, re-arm for the next."""
        self._deadline_timer = None
        self._timer_at = _NEVER
        calls = self._calls
        due = self._loop.time() + _DEADLINE_SLACK_S
        fifo, heap = self._deadlines, self._early
        while True:
            while fifo and fifo[0][1] not in calls:
                fifo.popleft()
            while heap and heap[0][1] not in calls:
                heappop(heap)
            from_fifo = bool(fifo) and (not heap or fifo[0] <= heap[0])
            if from_fifo:
                when, sid = fifo[0]
            elif heap:
                when, sid = heap[0]
            else:
                return
            if when > due:  # the earliest live deadline is still ahead
                self._arm(when)
                return
            if from_fifo:
                fifo.popleft()
            else:
                heappop(heap)
            self._write(F.rst_stream(sid, F.CANCEL))
            self._finish(calls[sid], None, GatewayError(_C.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED))

    def _stop_deadlines(self) -> None:
        """The connection is gone and no call is left to expire: drop the timer and every entry."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._deadlines.clear()
        self._early.clear()
