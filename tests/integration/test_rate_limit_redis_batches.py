"""The Redis limiter's batched script and its own connection, against a real Redis on 127.0.0.1:6379.

The contract: a batch whose requests share buckets (read once and written once by the script),
or repeat the same buckets (sent and decided as one run), answers, and leaves Redis, exactly as
the same requests sent one by one, and both answer as `bucket.py` does; a bucket asked for by its
parts (`take_one`) shares calls and buckets with named ones. Then the connection the batches use: a
flushed script, a killed connection, a hung server, a database from the URL and a refused
handshake. Each test keeps to its own key prefix.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.policies.rate_limit.bucket import Bucket, LimiterUnavailable, Verdict, level, refill
from gateway.policies.rate_limit.redis import CLIENT_NAME, RedisBackend
from tests.support import redis_server as redis_server_support


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server_support.running() as url:
        yield url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
async def prefixes(client: aioredis.Redis) -> AsyncIterator[list[str]]:
    made: list[str] = []
    yield made
    for prefix in made:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)


async def started(url: str, prefixes: list[str], timeout_s: float = 1.0) -> RedisBackend:
    prefix = f"portcullis:test:{uuid.uuid4().hex}:"
    prefixes.append(prefix)
    backend = RedisBackend(url, prefix, timeout_s=timeout_s)
    await backend.start()
    return backend


def one_by_one(store: dict[str, tuple[float, float]], buckets: list[Bucket], now: float) -> Verdict:
    """`bucket.py`'s rule, spelled out: refill each, admit if all hold a token, then each gives one."""
    tokens = [
        refill(*store[b.key], now, b.burst, b.rate) if b.key in store else float(b.burst) for b in buckets
    ]
    allowed = all(t >= 1.0 for t in tokens)
    if allowed:
        tokens = [t - 1.0 for t in tokens]
        store.update((b.key, (t, now)) for b, t in zip(buckets, tokens, strict=True))
    return Verdict(
        allowed, tuple(level(b.limit, t, b.burst, b.rate) for b, t in zip(buckets, tokens, strict=True))
    )


async def assert_same_state(client: aioredis.Redis, prefixes: tuple[str, str], keys: list[str]) -> None:
    """Redis holds the same hashes under both prefixes, expiring at the same time give or take the
    real time between the two writes (the test's clock is not Redis's)."""
    for key in keys:
        first, second = (prefix + key for prefix in prefixes)
        assert await client.hgetall(first) == await client.hgetall(second)
        ttls = [await client.pttl(first), await client.pttl(second)]
        assert ttls[0] == ttls[1] == -2 or (min(ttls) > 0 and abs(ttls[0] - ttls[1]) < 250)


@pytest.mark.parametrize("seed", range(4))
async def test_a_batch_sharing_buckets_answers_and_stores_as_one_by_one(
    redis_url: str, client: aioredis.Redis, prefixes: list[str], seed: int
) -> None:
    batched = await started(redis_url, prefixes)
    alone = await started(redis_url, prefixes)
    clock = [7000.0]
    store: dict[str, tuple[float, float]] = {}
    rng = random.Random(seed)
    # Few keys and small bursts, so batches reuse buckets, drain them and get refused; two limits
    # with the same (burst, rate) share one parameter pair in the script's arguments. Rates are slow
    # enough that no key expires (PEXPIRE runs on Redis's real clock) while the test runs.
    limits = [
        Bucket("a", "a:x", 3, 0.7),
        Bucket("b", "b:x", 10, 2.5),
        Bucket("c", "c:y", 1, 0.1),
        Bucket("d", "d:y", 3, 0.7),
        Bucket("e", "e:z", 2, 0.05),
    ]
    keys = [b.key for b in limits]
    try:
        for _ in range(60):
            clock[0] += rng.choice([0.0, 0.0, 0.01, 0.4, 1.0, 5.0])
            asks: list[list[Bucket]] = []
            for _ in range(rng.randint(1, 16)):  # half repeat the one before: runs of one bucket list
                repeat = asks and rng.random() < 0.5
                asks.append(list(asks[-1]) if repeat else rng.sample(limits, rng.randint(1, 3)))
            verdicts = await batched.take_all_at(asks, clock[0])
            assert verdicts == [await alone.take_at(ask, clock[0]) for ask in asks]
            assert verdicts == [one_by_one(store, ask, clock[0]) for ask in asks]
            await assert_same_state(client, (batched.key_prefix, alone.key_prefix), keys)
    finally:
        await batched.stop()
        await alone.stop()


async def test_requests_of_one_loop_iteration_on_one_bucket_share_a_call(
    redis_url: str, prefixes: list[str]
) -> None:
    backend = await started(redis_url, prefixes)
    try:
        bucket = [Bucket("s", "s:k", 20, 0.001)]
        verdicts = await asyncio.gather(*(backend.take(bucket) for _ in range(25)))
        assert backend.round_trips == 1
        assert [v.levels[0].remaining for v in verdicts[:20]] == list(range(19, -1, -1))
        assert [v.allowed for v in verdicts] == [True] * 20 + [False] * 5
    finally:
        await backend.stop()


async def test_one_bucket_by_its_parts_shares_the_call_and_the_bucket_with_named_buckets(
    redis_url: str, prefixes: list[str]
) -> None:
    """`take_one` (the policy's usual case) and `take` of the same bucket, interleaved in one call:
    each request finds one token fewer than the one before, in arrival order, the same bucket."""
    backend = await started(redis_url, prefixes)
    try:
        bucket = Bucket("s", "s:one", 12, 0.001)
        asks = [
            backend.take_one(bucket.key, bucket.burst, bucket.rate) if i % 3 else backend.take([bucket])
            for i in range(15)
        ]
        answers = await asyncio.gather(*asks)
        assert backend.round_trips == 1
        found = [a if isinstance(a, float) else None for a in answers]
        # Named requests (every third) report the level after their take; the others the tokens found.
        for i, answer in enumerate(answers):
            before = max(12.0 - i, 0.0)
            if isinstance(answer, float):
                assert answer == before
            else:
                assert answer == Verdict(before >= 1, (level("s", max(before - 1, 0.0), 12, 0.001),))
        assert found[1:3] == [11.0, 10.0]
    finally:
        await backend.stop()


async def our_connections(client: aioredis.Redis) -> list[dict[str, str]]:
    return [c for c in await client.client_list() if c.get("name") == CLIENT_NAME]


async def test_a_killed_connection_fails_its_call_and_the_next_one_reconnects(
    redis_url: str, client: aioredis.Redis, prefixes: list[str]
) -> None:
    backend = await started(redis_url, prefixes)
    try:
        bucket = [Bucket("l", "l:k", 100, 1.0)]
        assert (await backend.take(bucket)).levels[0].remaining == 99
        before = {c["id"] for c in await our_connections(client)}
        for conn in await our_connections(client):
            await client.execute_command("CLIENT", "KILL", "ID", conn["id"])
        await asyncio.sleep(0.05)  # the close reaches the gateway
        assert (await backend.take(bucket)).levels[0].remaining == 98
        after = {c["id"] for c in await our_connections(client)}
        assert after and not after & before
    finally:
        await backend.stop()


async def test_scripts_flushed_under_the_connection_are_loaded_again(
    redis_url: str, client: aioredis.Redis, prefixes: list[str]
) -> None:
    backend = await started(redis_url, prefixes)
    try:
        bucket = [Bucket("f", "f:k", 5, 1.0)]
        await backend.take(bucket)
        await client.script_flush()
        verdicts = await asyncio.gather(*(backend.take(bucket) for _ in range(3)))
        assert [v.levels[0].remaining for v in verdicts] == [3, 2, 1]
        assert backend.round_trips == 2  # the reload rode along with the resent call
    finally:
        await backend.stop()


async def test_one_bucket_by_its_parts_survives_a_flush_and_a_killed_connection(
    redis_url: str, client: aioredis.Redis, prefixes: list[str]
) -> None:
    backend = await started(redis_url, prefixes)
    try:
        assert await backend.take_one("o:k", 5, 0.001) == 5.0
        await client.script_flush()
        assert 4.0 <= await backend.take_one("o:k", 5, 0.001) < 4.1  # NOSCRIPT: loaded and sent again
        assert backend.round_trips == 2
        for conn in await our_connections(client):
            await client.execute_command("CLIENT", "KILL", "ID", conn["id"])
        await asyncio.sleep(0.05)  # the close reaches the gateway
        assert 3.0 <= await backend.take_one("o:k", 5, 0.001) < 3.1  # a new connection
    finally:
        await backend.stop()


async def test_one_bucket_by_its_parts_from_a_hung_redis_fails_within_the_timeout() -> None:
    """A server that accepts and never answers: the request is unavailable after timeout_s, no later."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0", "portcullis:test:hung:", timeout_s=0.2)
    await backend.start()  # the handshake times out: left to the first request
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(LimiterUnavailable, match="within 200 ms"):
            await backend.take_one("h:k", 5, 1.0)
        assert 0.15 < loop.time() - began < 1.0
    finally:
        await backend.stop()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_each_call_times_out_at_its_own_deadline_after_many_answered_ones(
    redis_url: str, client: aioredis.Redis, prefixes: list[str]
) -> None:
    """One watchdog serves every call: across calls answered in time (which outlive many deadlines
    of the calls before them) none fails, and then a call Redis is too busy to answer fails once
    its own deadline has passed, not at an older call's and not much later."""
    backend = await started(redis_url, prefixes, timeout_s=0.1)
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        answered = 0
        while loop.time() - began < 0.35:  # calls one after the other, past three deadlines
            await backend.take_one("w:k", 1_000_000, 1.0)
            answered += 1
        assert answered > 20
        blocker = asyncio.create_task(client.eval(redis_server_support.BUSY_LUA, 0, 0.4))  # Redis runs one script at a time
        await asyncio.sleep(0.05)
        asked = loop.time()
        with pytest.raises(LimiterUnavailable, match="did not answer within 100 ms"):
            await backend.take_one("w:k", 1_000_000, 1.0)
        assert 0.095 <= loop.time() - asked < 0.2
        await blocker
        assert await backend.take_one("w:late", 5, 1.0) == 5.0  # a new connection, no stale reply
    finally:
        await backend.stop()


async def test_the_database_of_the_url_holds_the_buckets(redis_url: str) -> None:
    prefix = f"portcullis:test:{uuid.uuid4().hex}:"
    backend = RedisBackend(redis_url.rsplit("/", 1)[0] + "/5", prefix, timeout_s=1.0)
    await backend.start()
    db5 = aioredis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/5")
    try:
        await backend.take([Bucket("db", "db:k", 5, 1.0)])
        assert await db5.exists(prefix + "db:k") == 1
    finally:
        await backend.delete_prefix()
        await backend.stop()
        await db5.aclose()


async def test_a_refused_handshake_is_a_limiter_failure(redis_url: str) -> None:
    """AUTH to a Redis without that user: the call fails as unavailable, it does not hang."""
    url = redis_url.replace("redis://", "redis://nobody-here:wrong@")
    backend = RedisBackend(url, "portcullis:test:auth:", timeout_s=1.0)
    await backend.start()
    try:
        with pytest.raises(LimiterUnavailable, match="redis: "):
            await backend.take([Bucket("x", "x:k", 5, 1.0)])
    finally:
        await backend.stop()


async def test_under_load_killed_connections_and_flushed_scripts_leave_no_request_hanging(
    redis_url: str, client: aioredis.Redis, prefixes: list[str]
) -> None:
    """Every request answers, a verdict or unavailable, within its timeout, whatever breaks under it;
    and the tokens a request is told are never another's (one bucket: remaining only goes down)."""
    backend = await started(redis_url, prefixes, timeout_s=0.5)
    bucket = [Bucket("s", "s:load", 1_000_000, 0.001)]
    told: list[int] = []
    failed = 0
    stop = asyncio.Event()

    async def asker() -> None:
        nonlocal failed
        while not stop.is_set():
            try:
                async with asyncio.timeout(2.0):  # well past timeout_s: only a hang trips it
                    verdict = await backend.take(bucket)
            except LimiterUnavailable:
                failed += 1
            else:
                told.append(verdict.levels[0].remaining)

    async def breaker() -> None:
        for i in range(12):
            await asyncio.sleep(0.05)
            if i % 2:
                await client.script_flush()
            else:
                for conn in await our_connections(client):
                    await client.execute_command("CLIENT", "KILL", "ID", conn["id"])
        stop.set()

    try:
        await asyncio.gather(breaker(), *(asker() for _ in range(32)))
        assert len(told) > 100 and len(set(told)) == len(told)  # each token told to one request
        assert sorted(told, reverse=True) == told  # replies reached their own requests, in order
    finally:
        await backend.stop()


async def test_a_password_protected_redis_on_a_unix_socket(tmp_path: Path) -> None:
    """AUTH, SELECT and a unix socket, from the URL, on a private redis-server (the shared one has
    neither a password nor a socket)."""
    exe = redis_server_support.executable()
    sock = tmp_path / "redis.sock"
    server = await asyncio.create_subprocess_exec(
        *(exe, "--port", "0", "--unixsocket", str(sock), "--requirepass", "s3cret"),
        *("--save", "", "--appendonly", "no"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        backend = RedisBackend(f"unix://{sock}?db=3&password=s3cret", "portcullis:test:", timeout_s=1.0)
        await backend.start()
        try:
            verdicts = await asyncio.gather(*(backend.take([Bucket("u", "u:k", 5, 1.0)]) for _ in range(3)))
            assert [v.levels[0].remaining for v in verdicts] == [4, 3, 2]
        finally:
            await backend.stop()
        db3 = aioredis.Redis(unix_socket_path=str(sock), db=3, password="s3cret")
        try:
            assert await db3.exists("portcullis:test:u:k") == 1
        finally:
            await db3.aclose()
    finally:
        server.terminate()
        await server.wait()
