"""The Redis limiter's Lua script and its wire format: a batch of requests packed into one EVALSHA,
and the script's reply turned back into one answer per request: a `Verdict` for a request that
named its `Bucket`s, the tokens it found for one that asked for one bucket by its parts (`One`,
the policy's usual case: no Bucket, Level or Verdict made per request, as the local backend's
`take_one`). Pure (no I/O); `redis.py` sends what `Packer.pack` makes and hands the reply to
`resolve`.

The script decides the requests of a batch one after the other, in arrival order, each with the
all-or-nothing rule of `bucket.py`, so a batch answers exactly as the same requests sent one by one.
It keeps each bucket in Lua memory as Redis would hold it between the requests, read once (HMGET)
and written once at the end (HSET and PEXPIRE with the last admitted request's values), so the
stored state too is that of one by one, at three Redis commands per bucket instead of three per
request. Consecutive requests asking for the same buckets (one consumer's burst: the common case
under load) travel as one run, `m` times the same bucket list: the script decides the run in one
step, since after the first request of a run no time passes (one `now` per batch) and no other
request intervenes, so each later request finds the buckets exactly as the previous one left them
(refill `tk + 0 * rate` is `tk`): the run admits `k` requests while every bucket holds a token,
each taking one, then refuses the rest. The reply carries, per run, `k` and each bucket's tokens
before the run as exact "%.17g" strings ("%.17g" round-trips a double; a Lua number returned to
Redis would be truncated to integer), and `resolve` repeats the same subtractions in Python
(IEEE doubles both) to give each request its own tokens, bit for bit as the script had them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, cast

from gateway.policies.rate_limit.bucket import Bucket, Level, Verdict, level

# KEYS: the distinct buckets of the batch. ARGV[1]: now in seconds ('' = the server's TIME);
# ARGV[2]: P, the number of distinct (burst, rate) pairs, then those P pairs; then per run: m (its
# requests), n (their buckets) and n (key index, pair index) pairs. Returns, per run, {k, tokens_1,
# ..., tokens_n}, flat: how many of its requests were admitted (the first k) and each bucket's
# tokens before the run. A bucket appears at most once per request (the packer never runs
# requests whose keys repeat), so a run's buckets are independent of each other.
TAKE_LUA = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local np = tonumber(ARGV[2])
local bursts, rates = {}, {}
for p = 1, np do
  bursts[p] = tonumber(ARGV[1 + 2 * p])
  rates[p] = tonumber(ARGV[2 + 2 * p])
end
local tks, tss, loaded, written = {}, {}, {}, {}
local kis, pis, tokens, left = {}, {}, {}, {}  -- the current run's, by position; reused (1..n)
local out = {}
local o = 0
local a = 3 + 2 * np
local nargs = #ARGV
while a <= nargs do
  local m = tonumber(ARGV[a])
  local n = tonumber(ARGV[a + 1])
  local low = math.huge
  for i = 1, n do
    local ki = tonumber(ARGV[a + 2 * i])
    local pi = tonumber(ARGV[a + 2 * i + 1])
    if not loaded[ki] then
      local state = redis.call('HMGET', KEYS[ki], 'tk', 'ts')
      tks[ki] = tonumber(state[1])
      tss[ki] = tonumber(state[2])
      loaded[ki] = true
    end
    local tk = tks[ki]
    local ts = tss[ki]
    if tk == nil or ts == nil then
      tk = bursts[pi]
    else
      tk = math.min(bursts[pi], tk + math.max(0, now - ts) * rates[pi])
    end
    kis[i] = ki
    pis[i] = pi
    tokens[i] = tk
    left[i] = tk
    if tk < low then low = tk end
  end
  local k = 0
  while k < m and low >= 1 do
    low = math.huge
    for i = 1, n do
      local tk = left[i] - 1
      left[i] = tk
      if tk < low then low = tk end
    end
    k = k + 1
  end
  if k > 0 then
    for i = 1, n do
      local ki = kis[i]
      tks[ki] = left[i]
      tss[ki] = now
      written[ki] = pis[i]
    end
  end
  o = o + 1
  out[o] = k
  for i = 1, n do
    o = o + 1
    out[o] = string.format('%.17g', tokens[i])
  end
  a = a + 2 + 2 * n
end
local ts = string.format('%.17g', now)
for ki, pi in pairs(written) do
  local tk = tks[ki]
  redis.call('HSET', KEYS[ki], 'tk', string.format('%.17g', tk), 'ts', ts)
  redis.call('PEXPIRE', KEYS[ki], string.format('%d', math.ceil((bursts[pi] - tk) / rates[pi] * 1000) + 1))
end
return out
"""

TAKE_SHA = hashlib.sha1(TAKE_LUA.encode()).hexdigest()  # what EVALSHA names, as SCRIPT LOAD answers

# One bucket by its parts, (key, burst, rate): its future answers the tokens the bucket held before
# the request (at least one: admitted, and one taken), as `LocalBackend.take_one` returns them. Its
# first item is a str, a Bucket's is a Bucket: that tells the two apart, once per run.
One = tuple[str, int, float]
# Per request: what it asks (its buckets, or One) and the future its answer goes to.
Batch = list[tuple[Sequence[Bucket] | One, "asyncio.Future[Any]"]]
MAX_BATCH = 256  # requests per script call
FRAMES_CACHED = 4096  # RESP-framed keys and parameters kept; past it the table starts over


def frame(value: bytes) -> bytes:
    """One RESP bulk string: `$<len>\\r\\n<value>\\r\\n`."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command(*args: bytes) -> bytes:
    """One RESP command."""
    return b"*%d\r\n%s" % (len(args), b"".join(frame(a) for a in args))


SCRIPT_LOAD = command(b"SCRIPT", b"LOAD", TAKE_LUA.encode())
# EVALSHA and the script's hash, framed once; then numkeys, KEYS and ARGV follow.
_EVALSHA = frame(b"EVALSHA") + frame(TAKE_SHA.encode())
_INTS = tuple(frame(b"%d" % n) for n in range(MAX_BATCH + 1))  # counts and indexes, framed
_SERVER_TIME = frame(b"")  # ARGV[1] when the script reads Redis's TIME


def _int(n: int) -> bytes:
    return _INTS[n] if n <= MAX_BATCH else frame(b"%d" % n)


class Packer:
    """Packs batches for one key prefix; keys and parameters are framed once and kept."""

    def __init__(self, key_prefix: str) -> None:
        self.key_prefix = key_prefix
        self._keys: dict[str, bytes] = {}
        self._params: dict[tuple[int, float], bytes] = {}
        self._alone: dict[One, tuple[bytes, bytes]] = {}  # a batch of one One run: RESP around its m

    def pack(self, batch: Batch, now: float | None) -> tuple[bytes, list[int]]:
        """EVALSHA of the script for `batch` in RESP, and the length of each run (what `resolve`
        needs). redis-py would encode and frame each argument per call; here each distinct key and
        (burst, rate) pair is framed once and sent once per batch, and a run once."""
        first = batch[0][0]
        if now is None and type(first[0]) is str:
            # The usual batch: every request asks for the same One (a single request, or one
            # consumer's burst). One run, whose RESP is made once per One; only its m changes.
            for asked, _ in batch:
                if asked != first:
                    break
            else:
                one = cast(One, first)
                around = self._alone.get(one)
                if around is None:
                    around = self._around(one)
                m = len(batch)
                return around[0] + _int(m) + around[1], [m]
        key_at: dict[str, int] = {}
        pair_at: dict[tuple[int, float], int] = {}
        keys: list[bytes] = []
        pairs: list[bytes] = []
        args: list[bytes] = []
        runs: list[int] = []
        previous: object = None
        at_m = 0  # where the current run's m goes in `args`
        for asked, _ in batch:
            if asked == previous:  # One: the same key object, burst and rate; or equal Bucket lists
                runs[-1] += 1
                continue
            parts: Sequence[One]
            if type(asked[0]) is str:
                parts = (cast(One, asked),)
                previous = asked
            else:
                parts = [(b.key, b.burst, b.rate) for b in cast(Sequence[Bucket], asked)]
                n = len(parts)
                # A request naming one key twice is a run of its own: its buckets are not independent.
                previous = asked if n == 1 or len({key for key, _, _ in parts}) == n else None
            if runs:
                args[at_m] = _int(runs[-1])
            runs.append(1)
            at_m = len(args)
            args.append(b"")
            args.append(_int(len(parts)))
            for key, burst, rate in parts:
                k = key_at.get(key)
                if k is None:
                    k = key_at[key] = len(keys) + 1
                    keys.append(self._key(key))
                p = pair_at.get((burst, rate))
                if p is None:
                    p = pair_at[(burst, rate)] = len(pairs) + 1
                    pairs.append(self._pair(burst, rate))
                args.append(_int(k))
                args.append(_int(p))
        if runs:
            args[at_m] = _int(runs[-1])
        np = len(pairs)
        head = b"*%d\r\n%s%s" % (5 + len(keys) + 2 * np + len(args), _EVALSHA, _int(len(keys)))
        now_arg = _SERVER_TIME if now is None else frame(repr(now).encode())
        return b"".join((head, *keys, now_arg, _int(np), *pairs, *args)), runs

    def _around(self, one: One) -> tuple[bytes, bytes]:
        """What `pack` makes for a batch of one run of `one` on the server's clock, in the two
        pieces before and after the run's m (one key, one pair, n = 1, key 1, pair 1)."""
        if len(self._alone) >= FRAMES_CACHED:
            self._alone.clear()
        key, burst, rate = one
        before = b"".join(
            (b"*12\r\n", _EVALSHA, _INTS[1], self._key(key), _SERVER_TIME, _INTS[1], self._pair(burst, rate))
        )
        around = self._alone[one] = (before, _INTS[1] * 3)
        return around

    def _key(self, key: str) -> bytes:
        framed = self._keys.get(key)
        if framed is None:
            if len(self._keys) >= FRAMES_CACHED:
                self._keys.clear()
            framed = self._keys[key] = frame((self.key_prefix + key).encode())
        return framed

    def _pair(self, burst: int, rate: float) -> bytes:
        framed = self._params.get((burst, rate))
        if framed is None:
            if len(self._params) >= FRAMES_CACHED:
                self._params.clear()
            framed = self._params[(burst, rate)] = frame(b"%d" % burst) + frame(repr(float(rate)).encode())
        return framed


def resolve(batch: Batch, runs: list[int], reply: list[Any]) -> None:
    """Answer every request of `batch` from the script's reply; a request given up on (its future
    cancelled: the client went away) is skipped."""
    at = 0
    i = 0
    for m in runs:
        admitted = reply[at]
        asked = batch[i][0]
        if type(asked[0]) is str:  # One: each request is told the tokens it found
            held = float(reply[at + 1])
            at += 2
            for j in range(i, i + m):
                future = batch[j][1]
                if not future.done():
                    future.set_result(held)
                if admitted:  # the same subtractions, in the same order, as the script's
                    admitted -= 1
                    held -= 1
            i += m
            continue
        buckets = cast(Sequence[Bucket], asked)
        if len(buckets) == 1:  # without tuples of levels built in a generator
            b = buckets[0]
            limit, burst, rate = b.limit, b.burst, b.rate
            tokens = float(reply[at + 1])
            at += 2
            for j in range(m):
                if j < admitted:
                    tokens -= 1
                future = batch[i + j][1]
                if not future.done():
                    future.set_result(Verdict(j < admitted, (level(limit, tokens, burst, rate),)))
        else:
            n = len(buckets)
            left = [float(t) for t in reply[at + 1 : at + 1 + n]]
            at += 1 + n
            for j in range(m):
                if j < admitted:
                    left = [t - 1 for t in left]
                levels: tuple[Level, ...] = tuple(
                    level(b.limit, t, b.burst, b.rate) for b, t in zip(buckets, left, strict=True)
                )
                future = batch[i + j][1]
                if not future.done():
                    future.set_result(Verdict(j < admitted, levels))
        i += m
