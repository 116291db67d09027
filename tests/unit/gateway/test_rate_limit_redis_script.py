"""The Redis limiter's wire format without a Redis: how a batch is packed into runs, and how a reply
becomes one verdict per request (the script itself is held to `bucket.py` by the integration
contract test)."""

from __future__ import annotations

import asyncio

import hiredis

from gateway.policies.rate_limit.bucket import Bucket, Verdict, level
from gateway.policies.rate_limit.redis_script import TAKE_SHA, Batch, Packer, resolve

A = Bucket("a", "a:k", 3, 0.5)
B = Bucket("b", "b:k", 10, 2.0)


def parse(packed: bytes) -> list[bytes]:
    reader = hiredis.Reader()
    reader.feed(packed)
    command = reader.gets()
    assert isinstance(command, list) and reader.gets() is False  # exactly one command
    return command


async def test_repeated_bucket_lists_are_sent_once_as_runs() -> None:
    loop = asyncio.get_running_loop()
    asks = [[A], [A], [A, B], [A, B], [B], [A]]
    batch: Batch = [(ask, loop.create_future()) for ask in asks]
    packed, runs = Packer("p:").pack(batch, 12.5)
    assert runs == [2, 2, 1, 1]
    args = parse(packed)
    assert args[:5] == [b"EVALSHA", TAKE_SHA.encode(), b"2", b"p:a:k", b"p:b:k"]
    # now, two (burst, rate) pairs, then per run: m, n, (key, pair) indexes
    assert args[5:] == [b"12.5", b"2", b"3", b"0.5", b"10", b"2.0",
                        b"2", b"1", b"1", b"1",
                        b"2", b"2", b"1", b"1", b"2", b"2",
                        b"1", b"1", b"2", b"2",
                        b"1", b"1", b"1", b"1"]  # fmt: skip


async def test_a_request_naming_one_key_twice_never_joins_a_run() -> None:
    loop = asyncio.get_running_loop()
    twice = [A, A._replace(limit="a2")]
    batch: Batch = [(twice, loop.create_future()) for _ in range(3)]
    _, runs = Packer("p:").pack(batch, None)
    assert runs == [1, 1, 1]


async def test_a_run_admits_k_then_refuses_with_the_tokens_left() -> None:
    loop = asyncio.get_running_loop()
    batch: Batch = [([A], loop.create_future()) for _ in range(4)] + [([A, B], loop.create_future())]
    cancelled = batch[1][1]
    cancelled.cancel()  # its client went away: not answered, and no error
    # Run 1: 4 requests, 2.25 tokens before it: two admitted (1.25, 0.25), two refused at 0.25.
    # Run 2: refused at once (A holds 0.25); tokens as they were.
    resolve(batch, [4, 1], [2, b"2.25", 0, b"0.25", b"9"])
    answers = [future.result() for _, future in batch if not future.cancelled()]
    assert answers == [
        Verdict(True, (level("a", 1.25, 3, 0.5),)),
        Verdict(False, (level("a", 0.25, 3, 0.5),)),
        Verdict(False, (level("a", 0.25, 3, 0.5),)),
        Verdict(False, (level("a", 0.25, 3, 0.5), level("b", 9.0, 10, 2.0))),
    ]
    assert cancelled.cancelled()
