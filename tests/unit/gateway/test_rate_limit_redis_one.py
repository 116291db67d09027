"""The Redis limiter's `One` requests (one bucket by its parts, the policy's usual case) without a
Redis: a batch packs to the same bytes as the same requests named by `Bucket`s, and each is told
the tokens it found, from which the policy's rule (admitted at one token or more; the level after
the take) gives the very verdict the `Bucket` form gets."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policies.rate_limit.bucket import Bucket, Verdict, level
from gateway.policies.rate_limit.redis_script import Batch, One, Packer, resolve

# Distinct keys, as the policy makes them (the limit's name is part of the key); two share a pair.
POOL = (
    Bucket("a", "a:k", 3, 0.5),
    Bucket("b", "b:k", 10, 2.0),
    Bucket("c", "c:k", 1, 0.25),
    Bucket("d", "d:k", 3, 0.5),
)

asks_strategy = st.lists(
    st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique=True), min_size=1, max_size=24
)


def as_asked(ask: list[Bucket]) -> Sequence[Bucket] | One:
    """How the policy asks: one bucket by its parts, several as Buckets."""
    if len(ask) == 1:
        b = ask[0]
        return (b.key, b.burst, b.rate)
    return ask


def script_reply(asks: list[list[Bucket]], runs: list[int], tokens: list[float]) -> list[object]:
    """What the script answers for these runs, given each run's tokens (one draw per bucket): k is
    how many of a run's requests find a token in every bucket, as the Lua loop counts them."""
    reply: list[object] = []
    i = 0
    drawn = iter(tokens)
    for m in runs:
        before = [next(drawn) for _ in asks[i]]
        left = list(before)
        k = 0
        while k < m and min(left) >= 1:
            left = [t - 1 for t in left]
            k += 1
        reply += [k, *(b"%.17g" % t for t in before)]
        i += m
    return reply


def verdict_of(held: float, b: Bucket) -> Verdict:
    """The policy's rule for a One answer (rate_limit's usual case, local or Redis)."""
    if held >= 1.0:
        return Verdict(True, (level(b.limit, held - 1.0, b.burst, b.rate),))
    return Verdict(False, (level(b.limit, held, b.burst, b.rate),))


@settings(max_examples=300, deadline=None)
@given(asks=asks_strategy, now=st.one_of(st.none(), st.floats(0, 1e9)))
def test_one_requests_pack_to_the_bytes_of_their_buckets(asks: list[list[Bucket]], now: float | None) -> None:
    loop = asyncio.new_event_loop()
    try:
        named: Batch = [(ask, loop.create_future()) for ask in asks]
        parts: Batch = [(as_asked(ask), loop.create_future()) for ask in asks]
        assert Packer("p:").pack(parts, now) == Packer("p:").pack(named, now)
    finally:
        loop.close()


@settings(max_examples=300, deadline=None)
@given(
    asks=asks_strategy,
    tokens=st.lists(st.floats(0, 12, allow_nan=False), min_size=72, max_size=72),
    gone=st.sets(st.integers(0, 23)),
)
def test_one_requests_are_told_the_tokens_that_give_their_verdicts(
    asks: list[list[Bucket]], tokens: list[float], gone: set[int]
) -> None:
    loop = asyncio.new_event_loop()
    try:
        named: Batch = [(ask, loop.create_future()) for ask in asks]
        parts: Batch = [(as_asked(ask), loop.create_future()) for ask in asks]
        for i in gone & set(range(len(asks))):  # clients that went away: skipped, no error
            named[i][1].cancel()
            parts[i][1].cancel()
        _, runs = Packer("p:").pack(named, None)
        reply = script_reply(asks, runs, tokens)
        resolve(named, runs, list(reply))
        resolve(parts, runs, list(reply))
        for ask, (_, by_name), (asked, by_parts) in zip(asks, named, parts, strict=True):
            if by_name.cancelled():
                assert by_parts.cancelled()
            elif asked is ask:
                assert by_parts.result() == by_name.result()
            else:
                held = by_parts.result()
                assert type(held) is float
                assert verdict_of(held, ask[0]) == by_name.result()
    finally:
        loop.close()


def test_a_run_of_one_tells_each_request_the_tokens_before_it() -> None:
    loop = asyncio.new_event_loop()
    try:
        one: One = ("a:k", 3, 0.5)
        batch: Batch = [(one, loop.create_future()) for _ in range(4)]
        # 2.25 tokens before the run: two admitted (they found 2.25 and 1.25), two refused at 0.25.
        resolve(batch, [4], [2, b"2.25"])
        assert [future.result() for _, future in batch] == [2.25, 1.25, 0.25, 0.25]
    finally:
        loop.close()
