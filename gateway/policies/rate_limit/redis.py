"""The Redis limiter backend: buckets shared by a fleet of gateways, one round trip per request at most.

One Lua script decides for all the limits of a request at once (EVALSHA; loaded on every connect and
again on NOSCRIPT, after a flush): it reads every bucket, admits only if all hold a token, then
writes them all, inside Redis's single-threaded script execution, so two gateways can never both
spend the last token (no read-then-write race) and a refused request spends nothing anywhere. Each
bucket is a hash `{tk, ts}` with a PEXPIRE of its time-to-full, so idle keys vanish exactly when
forgetting them changes nothing.

Requests share script calls: `take` (or `take_one`, one bucket by its parts) queues the request;
the queue is sent in the next event-loop iteration, or, while a call is out (one at a time), as
soon as it returns. The script (`redis_script.py`, with its wire format) decides the requests of a
batch one after the other, in arrival order, so a batch answers, and leaves Redis, exactly as the
same requests sent one by one, and each request still costs at most one round trip (its batch's).
Under load the batches grow by themselves (~13 requests per call at 32 wrk connections), and the
per-call cost is shared.

The clock is Redis's own (`TIME` inside the script), not the gateway's: every gateway of the fleet
then refills the same bucket from one clock, so a gateway whose clock is skewed, or stepped by
NTP, cannot mint tokens (ahead) or freeze refills (behind). Redis >= 5 replicates scripts by effect,
so calling TIME before writing is allowed. The script accepts an explicit time only so the contract
test can hold it to the same answers as `bucket.py`.

The batches go over one connection of their own, an asyncio protocol (`_Link`): the batch is packed
into RESP from framed pieces, written with one `transport.write`, and hiredis parses the reply in
`data_received`, which answers the batch's futures there, with no task, stream reader or timeout
context per call (redis-py's command layer and its stream reads cost the gateway more per call than
the script costs Redis). redis-py still parses the URL (address, TLS context, credentials, db), and
its small pool serves `take_at` and maintenance.

Every failure (refused connection, timeout, server error, lost connection) leaves this module as
`LimiterUnavailable`, one exception object per failed call; the policy decides, by config, whether
that admits or refuses. Nothing connects before `start()`, everything closes in `stop()`, no
retries. Each call runs under one deadline, `timeout_ms` after its oldest request asked (so no
request waits longer, queueing included), covering connecting and the reply, so a dead or hung
Redis costs at most that per request (and nothing once the breaker is open). A call timed out
drops its connection, so no late reply is ever read as another call's answer (a request given up
on may still run in a slow Redis later and spend its tokens).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.policies.rate_limit.bucket import Bucket, LimiterUnavailable, Verdict
from gateway.policies.rate_limit.redis_script import MAX_BATCH, SCRIPT_LOAD, Batch, One, Packer, resolve

CLIENT_NAME = "portcullis-ratelimit"


class _Link(asyncio.Protocol):
    """The batches' connection: every reply, parsed by hiredis, goes to `on_reply`, in order."""

    def __init__(self, on_lost: Callable[[_Link, Exception | None], None]) -> None:
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None
        self.on_reply: Callable[[Any], None] = self._unexpected
        self.on_lost = on_lost
        self.handshaking: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        reply = reader.gets()
        while reply is not False:  # False: the rest of the reply is still on its way
            self.on_reply(reply)
            reply = reader.gets()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.handshaking is not None and not self.handshaking.done():
            self.handshaking.set_exception(LimiterUnavailable(f"redis: connection lost ({exc or 'closed'})"))
        self.on_lost(self, exc)

    def close(self) -> None:
        """Drop the connection now: whatever it would still read belongs to nobody."""
        self.on_reply = self._unexpected
        if self.transport is not None:
            self.transport.abort()

    def _unexpected(self, reply: Any) -> None:
        self.close()

    async def handshake(self, commands: list[bytes]) -> None:
        """Send `commands` at once; raise on the first error reply."""
        assert self.transport is not None
        replies: list[Any] = []
        done = self.handshaking = asyncio.get_running_loop().create_future()

        def collect(reply: Any) -> None:
            replies.append(reply)
            if len(replies) == len(commands) and not done.done():
                done.set_result(None)

        self.on_reply = collect
        self.transport.write(b"".join(commands))
        await done
        self.on_reply = self._unexpected
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise LimiterUnavailable(f"redis: {reply}")


class RedisBackend:
    def __init__(self, url: str, key_prefix: str, timeout_s: float, max_connections: int = 8) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pool: aioredis.ConnectionPool | None = None
        self._slots: asyncio.Semaphore | None = None
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._link: _Link | None = None  # the batches' connection, once connected and named
        self._connecting: asyncio.Task[None] | None = None
        self._pending: Batch = []  # the requests that asked since the last call went out
        self._pending_since = 0.0  # loop time the oldest of them asked
        self._out: Batch | None = None  # the call out (one at a time)
        self._packed = b""  # ... as sent, for a resend after NOSCRIPT
        self._runs: list[int] = []  # ... and its runs, for `resolve`
        self._reloading = False  # ... and the SCRIPT LOAD reply still to skip, if resent
        self._deadline = 0.0  # ... and its deadline, in loop time
        # One watchdog timer for the calls rather than one per call (a TimerHandle made, started
        # and cancelled per call cost ~6k instructions): armed when none is, for the call out's
        # deadline. Deadlines never go back (each call's oldest request asked no earlier than the
        # last call's), so when it fires the call out is the one it was armed for (its deadline has
        # come: fail it), a later one (wait again, for that one's), or none (stop).
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0  # the deadline the watchdog waits for
        self._packer = Packer(key_prefix)
        self.round_trips = 0  # script calls sent; fewer than requests when batches form

    async def start(self) -> None:
        # redis-py's BlockingConnectionPool wakes waiters through a Condition, which is not fair: under
        # steady load one waiter can starve past any timeout. A FIFO semaphore in front of a plain pool
        # of the same size is fair, and waiting for it counts against the caller's timeout.
        self._slots = asyncio.Semaphore(self.max_connections)
        self._pool = aioredis.ConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            socket_connect_timeout=self.timeout_s,  # no socket_timeout: the call's timeout covers reads
            retry=Retry(NoBackoff(), 0),  # a retry would spend the timeout the request is waiting on
            client_name=CLIENT_NAME,  # who holds these connections, in CLIENT LIST
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._loop = asyncio.get_running_loop()
        try:  # connect and load the script; a Redis down at start-up is the breaker's business, not ours
            async with asyncio.timeout(self.timeout_s):
                self._link = await self._open()
        except (LimiterUnavailable, OSError, RedisError, TimeoutError):
            pass

    async def stop(self) -> None:
        # Requests still queued, or in the call cut short here, fail rather than hang.
        stranded = self._pending
        self._pending = []
        if self._out is not None:
            stranded += self._out
            self._out = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        failure = LimiterUnavailable("redis limiter stopped")
        for _, future in stranded:
            if not future.done():
                future.set_exception(failure)
        if self._link is not None:
            self._link.close()
            self._link = None
        if self._client is not None:
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.aclose()
        self._client = self._pool = self._slots = self._loop = None

    @property
    def started(self) -> bool:
        return self._client is not None

    def take(self, buckets: Sequence[Bucket]) -> asyncio.Future[Verdict]:
        """Queue the request; the future it returns (awaitable, not a coroutine: one hop less) answers."""
        return self._queue(buckets)

    def take_one(self, key: str, burst: int, rate: float) -> asyncio.Future[float]:
        """One bucket by its parts (the policy's usual case): the future answers the tokens the bucket
        held before this request, as `LocalBackend.take_one` returns them (at least one: admitted,
        and one taken; less: refused), and no Bucket, Level or Verdict is made for it."""
        return self._queue((key, burst, rate))

    def _queue(self, asked: Sequence[Bucket] | One) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None:
            raise LimiterUnavailable("redis limiter used before start()")
        future: asyncio.Future[Any] = loop.create_future()
        pending = self._pending
        pending.append((asked, future))
        if len(pending) == 1:
            self._pending_since = loop.time()
            if self._out is None:
                loop.call_soon(self._send)  # next iteration: every request of this one has asked by then
        return future

    def _send(self) -> None:
        """Send what has queued, unless a call is out: its end sends it then."""
        loop = self._loop
        if not self._pending or self._out is not None or loop is None:
            return
        batch = self._out = self._pending[:MAX_BATCH]
        # Past MAX_BATCH, the rest keeps `_pending_since`: an earlier deadline, never a later one.
        del self._pending[:MAX_BATCH]
        self._deadline = self._pending_since + self.timeout_s
        if self._timer is None:
            self._armed_for = self._deadline
            self._timer = loop.call_at(self._deadline, self._watch)
        self.round_trips += 1
        self._packed, self._runs = self._packer.pack(batch, None)
        self._reloading = False
        link = self._link
        if link is not None and link.transport is not None:
            link.on_reply = self._answer
            link.transport.write(self._packed)
        else:
            self._connecting = loop.create_task(self._connect_and_send())

    async def _connect_and_send(self) -> None:
        try:
            link = await self._open()
        except (LimiterUnavailable, OSError, RedisError, ValueError) as exc:  # refused, TLS, bad URL
            self._connecting = None
            self._fail(exc if isinstance(exc, LimiterUnavailable) else LimiterUnavailable(f"redis: {exc}"))
            return
        self._connecting = None
        self._link = link
        if self._out is None or link.transport is None:  # nobody waits any more (stop)
            return
        link.on_reply = self._answer
        link.transport.write(self._packed)

    async def _open(self) -> _Link:
        """Connect the batches' link: AUTH, SELECT, name and script in one write, as the URL asks."""
        assert self._pool is not None and self._loop is not None
        spec: Any = self._pool.make_connection()  # redis-py's reading of the URL; never connected
        path = getattr(spec, "path", None)
        if path:
            _, link = await self._loop.create_unix_connection(lambda: _Link(self._lost), path)
        else:
            ssl = spec.ssl_context.get() if getattr(spec, "ssl_context", None) is not None else None
            _, link = await self._loop.create_connection(
                lambda: _Link(self._lost), spec.host, spec.port, ssl=ssl
            )
        try:
            commands: list[bytes] = []
            if spec.password:
                auth = (spec.username, spec.password) if spec.username else (spec.password,)
                commands += spec.pack_command("AUTH", *auth)
            if spec.db:
                commands += spec.pack_command("SELECT", spec.db)
            commands += spec.pack_command("CLIENT", "SETNAME", CLIENT_NAME)
            await link.handshake([*commands, SCRIPT_LOAD])
        except BaseException:
            link.close()
            raise
        return link

    def _lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return
        self._link = None
        if self._out is not None and self._connecting is None:
            self._fail(LimiterUnavailable(f"redis: connection lost ({exc or 'closed by the server'})"))

    def _watch(self) -> None:
        """The watchdog's deadline came: fail the call out if it is the one it waited for, and drop
        its connection (a late reply then has nowhere to go); wait for a later call's deadline."""
        self._timer = None
        loop = self._loop
        if self._out is None or loop is None:
            return
        if self._deadline > self._armed_for:
            self._armed_for = self._deadline
            self._timer = loop.call_at(self._deadline, self._watch)
            return
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._link is not None:
            self._link.close()
            self._link = None
        self._fail(LimiterUnavailable(f"redis did not answer within {self.timeout_s * 1000:.0f} ms"))

    def _fail(self, failure: LimiterUnavailable) -> None:
        """The call out has no answer: every request of it gets `failure` (one object: one failure)."""
        batch, self._out = self._out, None
        for _, future in batch or ():
            if not future.done():
                future.set_exception(failure)
        self._send()

    def _answer(self, reply: Any) -> None:
        """The reply to the call out (from `data_received`)."""
        if self._reloading:  # the SCRIPT LOAD sent after NOSCRIPT; its failure shows in the next reply
            self._reloading = False
            return
        batch = self._out
        if batch is None:
            return
        if isinstance(reply, hiredis.ReplyError):
            link = self._link
            if str(reply).startswith("NOSCRIPT") and not self._packed.startswith(SCRIPT_LOAD) and link:
                # Scripts flushed (or a failover): load it and send again, in one write.
                self._packed = SCRIPT_LOAD + self._packed
                self._reloading = True
                assert link.transport is not None
                link.transport.write(self._packed)
                return
            self._fail(LimiterUnavailable(f"redis: {reply}"))
            return
        self._out = None
        resolve(batch, self._runs, reply)
        if self._pending:
            self._send()

    async def take_at(self, buckets: Sequence[Bucket], now: float | None) -> Verdict:
        """One request decided alone with an explicit clock (the contract test); `None` is Redis's TIME."""
        return (await self.take_all_at([buckets], now))[0]

    async def take_all_at(self, asks: Sequence[Sequence[Bucket]], now: float | None) -> list[Verdict]:
        """Requests decided in one script call, in order, with an explicit clock (the contract test),
        on a connection of the pool."""
        if self._client is None or self._slots is None or self._pool is None:
            raise LimiterUnavailable("redis limiter used before start()")
        loop = asyncio.get_running_loop()
        batch: Batch = [(buckets, loop.create_future()) for buckets in asks]
        packed, runs = self._packer.pack(batch, now)
        try:
            async with asyncio.timeout(self.timeout_s), self._slots:
                conn = await self._pool.get_connection()
                try:
                    reply = await self._evalsha(packed, conn)
                finally:
                    await self._pool.release(conn)
        except TimeoutError:
            raise LimiterUnavailable(f"redis did not answer within {self.timeout_s * 1000:.0f} ms") from None
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(f"redis: {exc}") from exc
        resolve(batch, runs, reply)
        return [future.result() for _, future in batch]

    @staticmethod
    async def _evalsha(packed: bytes, conn: AbstractConnection) -> Any:
        await conn.send_packed_command(packed, check_health=False)
        try:
            return await conn.read_response()
        except NoScriptError:
            await conn.send_packed_command(SCRIPT_LOAD + packed, check_health=False)
            await conn.read_response()
            return await conn.read_response()

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
