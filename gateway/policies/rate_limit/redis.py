"""The Redis limiter backend: buckets shared by a fleet of gateways, one round trip per request at most.

One Lua script decides for all the limits of a request at once (EVALSHA, loaded on first use and
again after a Redis restart): it reads every bucket, admits only if all hold a token, then writes
them all, inside Redis's single-threaded script execution, so two gateways can never both spend
the last token (no read-then-write race) and a refused request spends nothing anywhere. Each
bucket is a hash `{tk, ts}` with a PEXPIRE of its time-to-full, so idle keys vanish exactly when
forgetting them changes nothing.

Requests share script calls: `take` queues the request; the queue is sent in the next event-loop
iteration, or, while a call is out (`IN_FLIGHT`), as soon as it returns. The script decides the
requests of a batch one after the other, in arrival order, each with the same all-or-nothing rule,
so a batch answers exactly as the same requests sent one by one, and each request still costs at
most one round trip (its batch's). A round trip through redis.asyncio costs the gateway ~80-100 µs
of CPU whatever it carries (measured: 32 concurrent callers, thread CPU per decision ~100 µs one
by one, ~20 µs batched; hiredis parses replies ~20% cheaper), so under load the batches grow by
themselves and that cost is shared (~13 requests per call at 32 wrk connections), and one call
out at a time keeps replies well inside `timeout_ms`. `MAX_BATCH` bounds the work of one call.

The clock is Redis's own (`TIME` inside the script), not the gateway's: every gateway of the fleet
then refills the same bucket from one clock, so a gateway whose clock is skewed, or stepped by
NTP, cannot mint tokens (ahead) or freeze refills (behind). The cost is that "now" is the instant
the script runs, which is what the decision needs anyway. Redis >= 5 replicates scripts by effect,
so calling TIME before writing is allowed. The script accepts an explicit time only so the contract
test can hold it to the same answers as `bucket.py`.

Every failure (refused connection, timeout, server error) leaves this module as
`LimiterUnavailable`; the policy decides, by config, whether that admits or refuses. The client is
made in `start()` and closed in `stop()`, never at import, with no retries; each call runs under one
deadline, `timeout_ms` after its oldest request asked (so no request waits longer, queueing
included), covering the wait for a connection, connecting and the reply, so a dead or hung Redis
costs at most that per request (and nothing once the breaker is open). A
request given up on may still run in a slow Redis later and spend its tokens; its connection is
dropped on the timeout (redis-py disconnects a cancelled command), so no late reply is ever read
as another request's answer. The pool is small on purpose: a script is ~0.1 ms, and a burst that
opens dozens of connections at once on a cold pool can outlast `timeout_ms` by itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.policies.rate_limit.bucket import Bucket, LimiterUnavailable, Verdict, level

# KEYS: the buckets of every request of the batch, request after request. ARGV[1]: now in seconds
# ('' = the server's TIME); then per request its bucket count n and n (burst, rate) pairs. Returns,
# per request, {allowed, tokens_1, ..., tokens_n}, all flat; tokens after the decision as exact
# "%.17g" strings (a Lua number returned to Redis would be truncated to integer). Requests are
# decided in order, so a later one reads what an earlier one wrote.
TAKE_LUA = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local out = {}
local k = 0
local a = 2
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local tokens = {}
  local allowed = 1
  for i = 1, n do
    local burst = tonumber(ARGV[a + 2 * i - 1])
    local rate = tonumber(ARGV[a + 2 * i])
    local state = redis.call('HMGET', KEYS[k + i], 'tk', 'ts')
    local tk = tonumber(state[1])
    local ts = tonumber(state[2])
    if tk == nil or ts == nil then
      tk = burst
    else
      tk = math.min(burst, tk + math.max(0, now - ts) * rate)
    end
    tokens[i] = tk
    if tk < 1 then allowed = 0 end
  end
  out[#out + 1] = allowed
  for i = 1, n do
    local tk = tokens[i]
    if allowed == 1 then
      local burst = tonumber(ARGV[a + 2 * i - 1])
      local rate = tonumber(ARGV[a + 2 * i])
      tk = tk - 1
      redis.call('HSET', KEYS[k + i], 'tk', string.format('%.17g', tk), 'ts', string.format('%.17g', now))
      redis.call('PEXPIRE', KEYS[k + i], string.format('%d', math.ceil((burst - tk) / rate * 1000) + 1))
    end
    out[#out + 1] = string.format('%.17g', tk)
  end
  k = k + n
  a = a + 1 + 2 * n
end
return out
"""

# Per request: its buckets, the future its verdict goes to, and when it asked (loop time).
_Batch = list[tuple[Sequence[Bucket], "asyncio.Future[Verdict]", float]]
MAX_BATCH = 256  # requests per script call
IN_FLIGHT = 1  # script calls out at once; requests asking meanwhile form the next batch

CLIENT_NAME = "portcullis-ratelimit"


class RedisBackend:
    def __init__(self, url: str, key_prefix: str, timeout_s: float, max_connections: int = 8) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pool: aioredis.ConnectionPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._pending: _Batch = []  # the requests that asked in this loop iteration
        self._batches: dict[asyncio.Task[None], _Batch] = {}  # script calls in flight, cancelled by stop()
        self._params: dict[tuple[int, float], tuple[int, str]] = {}  # (burst, rate) as script arguments
        self.round_trips = 0  # script calls sent; fewer than requests when batches form

    async def start(self) -> None:
        # redis-py's BlockingConnectionPool wakes waiters through a Condition, which is not fair: under
        # steady load one waiter can starve past any timeout. A FIFO semaphore in front of a plain pool
        # of the same size is fair, and waiting for it counts against the request's timeout.
        self._slots = asyncio.Semaphore(self.max_connections)
        self._pool = aioredis.ConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            socket_connect_timeout=self.timeout_s,  # no socket_timeout: the request's timeout covers reads
            retry=Retry(NoBackoff(), 0),  # a retry would spend the timeout the request is waiting on
            client_name=CLIENT_NAME,  # who holds these connections, in CLIENT LIST
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._script = self._client.register_script(TAKE_LUA)
        try:  # warm the script cache; a Redis down at start-up is the breaker's business, not ours
            async with asyncio.timeout(self.timeout_s):
                await self._client.script_load(TAKE_LUA)
        except (RedisError, OSError, TimeoutError):
            pass

    async def stop(self) -> None:
        # Requests still queued, or in a script call cut short here, fail rather than hang.
        stranded = self._pending
        self._pending = []
        for task, batch in tuple(self._batches.items()):
            task.cancel()
            stranded += batch
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        for _, future, _ in stranded:
            if not future.done():
                future.set_exception(LimiterUnavailable("redis limiter stopped"))
        if self._client is not None:
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.aclose()
        self._client = self._pool = self._script = self._slots = None

    @property
    def started(self) -> bool:
        return self._client is not None

    def take(self, buckets: Sequence[Bucket]) -> asyncio.Future[Verdict]:
        """Queue the request; the future it returns (awaitable, not a coroutine: one hop less) answers."""
        if self._script is None or self._slots is None:
            raise LimiterUnavailable("redis limiter used before start()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Verdict] = loop.create_future()
        pending = self._pending
        pending.append((buckets, future, loop.time()))
        if len(pending) == 1 and len(self._batches) < IN_FLIGHT:
            loop.call_soon(self._send)  # next iteration: every request of this one has asked by then
        return future

    def _send(self) -> None:
        """Send what has queued, unless IN_FLIGHT calls are out: their end sends it then."""
        if not self._pending or len(self._batches) >= IN_FLIGHT:
            return
        batch = self._pending[:MAX_BATCH]
        del self._pending[:MAX_BATCH]
        deadline = batch[0][2] + self.timeout_s  # the oldest request waits timeout_s at most
        task = asyncio.get_running_loop().create_task(self._run(batch, None, deadline))
        self._batches[task] = batch
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._batches.pop(task, None)
        if self._pending and self._client is not None:
            self._send()

    async def take_at(self, buckets: Sequence[Bucket], now: float | None) -> Verdict:
        """One request decided alone with an explicit clock (the contract test); `None` is Redis's TIME."""
        if self._script is None or self._slots is None:
            raise LimiterUnavailable("redis limiter used before start()")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Verdict] = loop.create_future()
        await self._run([(buckets, future, 0.0)], now, loop.time() + self.timeout_s)
        return await future

    async def _run(self, batch: _Batch, now: float | None, deadline: float) -> None:
        """One script call for `batch`; every future gets its verdict or `LimiterUnavailable`."""
        keys: list[str] = []
        args: list[str | int] = ["" if now is None else repr(now)]
        prefix, params = self.key_prefix, self._params
        for buckets, _, _ in batch:
            args.append(len(buckets))
            for b in buckets:
                keys.append(prefix + b.key)
                pair = params.get((b.burst, b.rate))
                if pair is None:
                    pair = params[(b.burst, b.rate)] = (b.burst, repr(float(b.rate)))
                args += pair
        failure: LimiterUnavailable
        self.round_trips += 1
        try:
            assert self._slots is not None
            async with asyncio.timeout_at(deadline), self._slots:
                reply = await self._script(keys=keys, args=args)
        except TimeoutError:
            failure = LimiterUnavailable(f"redis did not answer within {self.timeout_s * 1000:.0f} ms")
        except (RedisError, OSError) as exc:
            failure = LimiterUnavailable(f"redis: {exc}")
        else:
            at = 0
            for buckets, future, _ in batch:
                allowed = int(reply[at]) == 1
                levels = tuple(
                    level(b.limit, float(reply[at + 1 + i]), b.burst, b.rate) for i, b in enumerate(buckets)
                )
                at += 1 + len(buckets)
                if not future.done():  # a request given up on (client gone) is not answered
                    future.set_result(Verdict(allowed, levels))
            return
        for _, future, _ in batch:
            if not future.done():
                future.set_exception(failure)

    async def delete_prefix(self) -> int:
        """Drop every bucket under this prefix (tests and operators; SCAN, so never blocks Redis)."""
        if self._client is None or self._slots is None:
            return 0
        removed = 0
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.key_prefix) + "*"  # the prefix is literal
        async with self._slots:  # one connection of the pool, like any request
            async for key in self._client.scan_iter(match=pattern, count=500):
                removed += await self._client.delete(key)
        return removed
