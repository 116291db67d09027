"""The in-process limiter backend: buckets in one LRU dict, exact within one gateway process.

The default backend, with no dependency: every gateway process (and every worker) counts on its
own, so a fleet of N admits up to N times the limit; use the Redis backend to share. Memory is
bounded: a bucket idle until full is dropped as new keys arrive (losing nothing, since a missing
bucket is a full one), and past `max_keys` the least recently used bucket is dropped even if not
yet full, which hands that key a fresh burst. That is the price of a hard bound when a flood of distinct keys
(spoofed headers, scanning IPs) arrives; `max_keys` should exceed the keys active within the
longest refill time. A decision never awaits, so on one event loop it is atomic across limits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from gateway.policies.rate_limit.bucket import Bucket, Verdict, full_after, level, refill

_SWEEP_PER_CALL = 4  # full buckets dropped from the cold end per key added: amortised, no loop


class LocalBackend:
    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        # key -> [tokens, ts, burst, rate]; order is least recently used first. When a bucket is full
        # again (ts + (burst - tokens) / rate) is worked out by the sweep, for the few buckets it
        # looks at, rather than by every take.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()
        # The key most recently used, or None: when a request's key is it (the same object, as a
        # key remembered per consumer is), it is already at the hot end and is not moved again.
        # Invariant: every insert and move below sets it; clear() resets it.
        self._recent: str | None = None
        self.evicted_early = 0  # buckets dropped before they were full (the bound cost an answer)

    def __len__(self) -> int:
        return len(self._buckets)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._buckets.clear()
        self._recent = None

    async def take(self, buckets: Sequence[Bucket]) -> Verdict:
        return self.take_now(buckets)

    def take_one(self, key: str, burst: float, rate: float) -> float:
        """One bucket, the common case without the objects: the tokens it holds now, before this
        request. At least one: admitted, and one taken. Less: refused, nothing taken.

        The tokens before the take, not after: a refusal reports them as they are, where adding the
        one back (`(t - 1) + 1`) could be an ulp off bucket.py's rule. `refill` written out: this
        runs once per request; when the bucket is full again is left to the sweep. Only a new key
        sweeps (the store grows only then), so a key already held costs no sweep. A held key is
        found by subscript (an OrderedDict's get() costs twice as much) and moved to the hot end
        only when it is not already there. `burst` may come as a float (the policy's usual path):
        the same tokens, compared float with float."""
        now = self.clock()
        store = self._buckets
        if key not in store:
            # burst >= 1 (config): a missing bucket is a full one, and admits
            store[key] = [burst - 1.0, now, burst, rate]
            self._recent = key
            self._sweep(now)
            return burst + 0.0  # float(burst), without a type call
        state = store[key]
        if key is not self._recent:
            store.move_to_end(key)
            self._recent = key
        tk = state[0]
        elapsed = now - state[1]
        if elapsed > 0.0:  # a clock going back adds nothing
            tk += elapsed * rate
            if tk > burst:
                tk = burst + 0.0  # float(burst), without a type call
        if tk >= 1.0:
            state[0] = tk - 1.0
            state[1] = now
            state[2] = burst  # the bucket's own, for the sweep: a tier may change them
            state[3] = rate
        return tk

    def take_now(self, buckets: Sequence[Bucket]) -> Verdict:
        if len(buckets) == 1:
            b = buckets[0]
            held = self.take_one(b.key, b.burst, b.rate)
            if held >= 1.0:
                return Verdict(True, (level(b.limit, held - 1.0, b.burst, b.rate),))
            return Verdict(False, (level(b.limit, held, b.burst, b.rate),))
        now = self.clock()
        store = self._buckets
        tokens: list[float] = []
        for b in buckets:
            state = store.get(b.key)
            if state is None:
                tokens.append(float(b.burst))
            else:
                store.move_to_end(b.key)
                tokens.append(refill(state[0], state[1], now, b.burst, b.rate))
        self._recent = None  # several keys moved, some perhaps inserted below: no one key is sure
        allowed = all(t >= 1.0 for t in tokens)
        if allowed:
            added = False
            for i, b in enumerate(buckets):
                left = tokens[i] - 1.0
                tokens[i] = left
                state = store.get(b.key)
                if state is None:
                    store[b.key] = [left, now, b.burst, b.rate]
                    added = True
                else:
                    state[0], state[1], state[2], state[3] = left, now, b.burst, b.rate
            if added:
                self._sweep(now)
        return Verdict(
            allowed, tuple(level(b.limit, tokens[i], b.burst, b.rate) for i, b in enumerate(buckets))
        )

    def _sweep(self, now: float) -> None:
        store = self._buckets
        for _ in range(_SWEEP_PER_CALL):
            if not store:
                return
            tokens, ts, burst, rate = next(iter(store.values()))
            if ts + full_after(tokens, burst, rate) > now:  # not full yet
                break
            store.popitem(last=False)
        while len(store) > self.max_keys:
            store.popitem(last=False)
            self.evicted_early += 1
