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
as another request's answer. The batches (one out at a time) go over one connection of their own,
packed by hand into RESP from framed pieces and sent below redis-py's command layer, whose
argument encoding, retry wrapper, pool bookkeeping and observability hooks cost the gateway more
than the script costs Redis. The pool serves `take_at` and maintenance; it is small on purpose: a
script is ~0.1 ms, and a burst that opens dozens of connections at once on a cold pool can outlast
`timeout_ms` by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.policies.rate_limit.bucket import Bucket, Level, LimiterUnavailable, Verdict, level

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
TAKE_SHA = hashlib.sha1(TAKE_LUA.encode()).hexdigest()  # what EVALSHA names, as SCRIPT LOAD answers
FRAMES_CACHED = 4096  # RESP-framed keys and parameters kept; past it the table starts over


def _frame(value: bytes) -> bytes:
    """One RESP bulk string: `$<len>\\r\\n<value>\\r\\n`."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


# EVALSHA and the script's hash, framed once; then numkeys, KEYS and ARGV follow.
_EVALSHA = _frame(b"EVALSHA") + _frame(TAKE_SHA.encode())
_COUNTS = tuple(_frame(b"%d" % n) for n in range(64))  # bucket counts per request, framed


class RedisBackend:
    def __init__(self, url: str, key_prefix: str, timeout_s: float, max_connections: int = 8) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pool: aioredis.ConnectionPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._client: aioredis.Redis | None = None
        self._conn: AbstractConnection | None = None  # the batches' own: IN_FLIGHT is 1, never shared
        self._script: Any = None
        self._pending: _Batch = []  # the requests that asked in this loop iteration
        self._batches: dict[asyncio.Task[None], _Batch] = {}  # script calls in flight, cancelled by stop()
        # Framed once: bucket keys (with the prefix) and (burst, rate) pairs as script arguments.
        self._keys: dict[str, bytes] = {}
        self._params: dict[tuple[int, float], bytes] = {}
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
        self._conn = self._pool.make_connection()  # connects on first use, and again after a failure
        try:  # warm the script cache; a Redis down at start-up is the breaker's business, not ours
            async with asyncio.timeout(self.timeout_s):
                await self._conn.send_command("SCRIPT", "LOAD", TAKE_LUA, check_health=False)
                await self._conn.read_response()
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
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None
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
        task = asyncio.get_running_loop().create_task(self._run(batch, None, deadline, self._conn))
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

    def _pack(self, batch: _Batch, now: float | None) -> bytes:
        """EVALSHA of the script for `batch`, in RESP, from framed pieces (redis-py would encode and
        frame each argument per call, about four per request)."""
        keys: list[bytes] = []
        args: list[bytes] = [_frame(b"" if now is None else repr(now).encode())]
        framed_keys, params = self._keys, self._params
        count = 1  # RESP arguments in `args`: a pair is two
        for buckets, _, _ in batch:
            n = len(buckets)
            count += 1 + 2 * n
            args.append(_COUNTS[n] if n < len(_COUNTS) else _frame(b"%d" % n))
            for b in buckets:
                key = framed_keys.get(b.key)
                if key is None:
                    if len(framed_keys) >= FRAMES_CACHED:
                        framed_keys.clear()
                    key = framed_keys[b.key] = _frame((self.key_prefix + b.key).encode())
                keys.append(key)
                pair = params.get((b.burst, b.rate))
                if pair is None:
                    if len(params) >= FRAMES_CACHED:
                        params.clear()
                    pair = params[(b.burst, b.rate)] = _frame(b"%d" % b.burst) + _frame(
                        repr(float(b.rate)).encode()
                    )
                args.append(pair)
        numkeys = b"%d" % len(keys)
        head = b"*%d\r\n%s%s" % (3 + len(keys) + count, _EVALSHA, _frame(numkeys))
        return b"".join((head, *keys, *args))

    async def _evalsha(self, packed: bytes, conn: AbstractConnection) -> Any:
        """One script call, below redis-py's command layer (its retry wrapper and observability hooks
        cost more than the script). A failed or cancelled read drops the connection (redis-py's
        `read_response` does), so a late reply is never read as another request's answer."""
        await conn.send_packed_command(packed, check_health=False)
        try:
            return await conn.read_response()
        except NoScriptError:  # Redis restarted or its scripts were flushed: load, send again
            await conn.send_command("SCRIPT", "LOAD", TAKE_LUA, check_health=False)
            await conn.read_response()
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()

    async def _evalsha_pooled(self, packed: bytes) -> Any:
        pool = self._pool
        assert pool is not None
        conn = await pool.get_connection()
        try:
            return await self._evalsha(packed, conn)
        finally:
            await pool.release(conn)

    async def _run(
        self, batch: _Batch, now: float | None, deadline: float, conn: AbstractConnection | None = None
    ) -> None:
        """One script call for `batch` (on `conn`, else on a connection of the pool); every future gets
        its verdict or `LimiterUnavailable`."""
        packed = self._pack(batch, now)
        failure: LimiterUnavailable
        self.round_trips += 1
        try:
            if conn is not None:
                async with asyncio.timeout_at(deadline):
                    reply = await self._evalsha(packed, conn)
            else:
                assert self._slots is not None
                async with asyncio.timeout_at(deadline), self._slots:
                    reply = await self._evalsha_pooled(packed)
        except TimeoutError:
            failure = LimiterUnavailable(f"redis did not answer within {self.timeout_s * 1000:.0f} ms")
        except (RedisError, OSError) as exc:
            failure = LimiterUnavailable(f"redis: {exc}")
        else:
            at = 0
            for buckets, future, _ in batch:
                allowed = reply[at] == 1
                if len(buckets) == 1:  # the common case, without a generator
                    b = buckets[0]
                    levels: tuple[Level, ...] = (level(b.limit, float(reply[at + 1]), b.burst, b.rate),)
                    at += 2
                else:
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
