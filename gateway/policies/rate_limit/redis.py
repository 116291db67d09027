"""The Redis limiter backend: buckets shared by a fleet of gateways, one round trip per request.

One Lua script decides for all the limits of a request at once (EVALSHA, loaded on first use and
again after a Redis restart): it reads every bucket, admits only if all hold a token, then writes
them all, inside Redis's single-threaded script execution, so two gateways can never both spend
the last token (no read-then-write race) and a refused request spends nothing anywhere. Each
bucket is a hash `{tk, ts}` with a PEXPIRE of its time-to-full, so idle keys vanish exactly when
forgetting them changes nothing.

The clock is Redis's own (`TIME` inside the script), not the gateway's: every gateway of the fleet
then refills the same bucket from one clock, so a gateway whose clock is skewed, or stepped by
NTP, cannot mint tokens (ahead) or freeze refills (behind). The cost is that "now" is the instant
the script runs, which is what the decision needs anyway. Redis >= 5 replicates scripts by effect,
so calling TIME before writing is allowed. The script accepts an explicit time only so the contract
test can hold it to the same answers as `bucket.py`.

Every failure (refused connection, timeout, server error) leaves this module as
`LimiterUnavailable`; the policy decides, by config, whether that admits or refuses. The client is
made in `start()` and closed in `stop()`, never at import, with no retries; each request runs under
one `asyncio.timeout(timeout_ms)` covering the wait for a connection, connecting and the reply, so
a dead or hung Redis costs at most that per request (and nothing once the breaker is open). A
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

# KEYS: one bucket per limit of the request. ARGV[1]: now in seconds ('' = the server's TIME),
# then burst and rate for each key. Returns {allowed, tokens_1, ..., tokens_n}, tokens after the
# decision as exact "%.17g" strings (a Lua number returned to Redis would be truncated to integer).
TAKE_LUA = """
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local n = #KEYS
local tokens = {}
local allowed = 1
for i = 1, n do
  local burst = tonumber(ARGV[2 * i])
  local rate = tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 'tk', 'ts')
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
local out = {allowed}
for i = 1, n do
  local tk = tokens[i]
  if allowed == 1 then
    local burst = tonumber(ARGV[2 * i])
    local rate = tonumber(ARGV[2 * i + 1])
    tk = tk - 1
    redis.call('HSET', KEYS[i], 'tk', string.format('%.17g', tk), 'ts', string.format('%.17g', now))
    redis.call('PEXPIRE', KEYS[i], string.format('%d', math.ceil((burst - tk) / rate * 1000) + 1))
  end
  out[i + 1] = string.format('%.17g', tk)
end
return out
"""


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
        if self._client is not None:
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.aclose()
        self._client = self._pool = self._script = self._slots = None

    @property
    def started(self) -> bool:
        return self._client is not None

    async def take(self, buckets: Sequence[Bucket]) -> Verdict:
        return await self.take_at(buckets, None)

    async def take_at(self, buckets: Sequence[Bucket], now: float | None) -> Verdict:
        """`take` with an explicit clock, for the contract test; `None` is the server's TIME."""
        if self._script is None or self._slots is None:
            raise LimiterUnavailable("redis limiter used before start()")
        keys = [self.key_prefix + b.key for b in buckets]
        args: list[str | int] = ["" if now is None else repr(now)]
        for b in buckets:
            args += [b.burst, repr(float(b.rate))]
        try:
            async with asyncio.timeout(self.timeout_s), self._slots:
                reply = await self._script(keys=keys, args=args)
        except TimeoutError:
            raise LimiterUnavailable(f"redis did not answer within {self.timeout_s * 1000:.0f} ms") from None
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(f"redis: {exc}") from None
        allowed = int(reply[0]) == 1
        return Verdict(
            allowed,
            tuple(level(b.limit, float(reply[i + 1]), b.burst, b.rate) for i, b in enumerate(buckets)),
        )

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
