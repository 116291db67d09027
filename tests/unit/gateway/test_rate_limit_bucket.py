"""Token bucket math and the in-process backend, on an injected clock: exact refill, the admission
bound over every window, all-or-nothing across limits, and memory that stays bounded."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policies.rate_limit.bucket import Bucket, Verdict, level, refill
from gateway.policies.rate_limit.local import LocalBackend


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def bucket(burst: int, rate: float, key: str = "k", limit: str = "l") -> Bucket:
    return Bucket(limit, f"{limit}:{key}", burst, rate)


def test_refill_formula() -> None:
    assert refill(0.0, 10.0, 10.5, 5, 2.0) == 1.0
    assert refill(0.0, 10.0, 100.0, 5, 2.0) == 5.0  # capped at burst
    assert refill(3.0, 10.0, 9.0, 5, 2.0) == 3.0  # a clock going back adds nothing
    lv = level("l", 0.25, 4, 0.5)
    assert (lv.remaining, lv.reset_s, lv.retry_after_s) == (0, 7.5, 1.5)


def test_burst_then_exact_refill() -> None:
    clock = FakeClock()
    backend = LocalBackend(clock=clock)
    b = [bucket(5, 2.0)]
    remaining = [backend.take_now(b).levels[0].remaining for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    denied = backend.take_now(b)
    assert not denied.allowed and denied.levels[0].retry_after_s == 0.5
    assert denied.levels[0].reset_s == 2.5  # 5 tokens at 2/s
    clock.advance(0.25)
    assert not backend.take_now(b).allowed  # half a token
    clock.advance(0.25)
    ok = backend.take_now(b)
    assert ok.allowed and ok.levels[0].remaining == 0
    clock.advance(1.0)  # exactly two tokens back
    assert [backend.take_now(b).allowed for _ in range(3)] == [True, True, False]
    clock.advance(3600)
    assert backend.take_now(b).levels[0].remaining == 4  # full, never more than burst


def test_steady_rate_is_admitted_exactly() -> None:
    # Binary fractions, so the clock and the tokens are exact: one token every 64 steps of 1/256 s.
    clock = FakeClock()
    backend = LocalBackend(clock=clock)
    b = [bucket(1, 4.0)]
    admitted = []
    for step in range(2560):  # 10 s
        if backend.take_now(b).allowed:
            admitted.append(step)
        clock.advance(1 / 256)
    assert admitted == list(range(0, 2560, 64))  # 40 = the first token + one per 0.25 s after it


@settings(max_examples=200, deadline=None)
@given(
    burst=st.integers(1, 20),
    rate=st.floats(0.01, 50.0, allow_nan=False),
    gaps=st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=1, max_size=150),
)
def test_never_more_than_burst_plus_rate_times_elapsed(burst: int, rate: float, gaps: list[float]) -> None:
    clock = FakeClock()
    backend = LocalBackend(clock=clock)
    b = [bucket(burst, rate)]
    admitted_at: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        if backend.take_now(b).allowed:
            admitted_at.append(clock.now)
    # Over every window [t_i, t_j] between two admissions, at most burst + rate * (t_j - t_i) pass.
    for i, start in enumerate(admitted_at):
        for j in range(i, len(admitted_at)):
            count = j - i + 1
            assert count <= burst + rate * (admitted_at[j] - start) + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    burst=st.integers(1, 10),
    rate=st.floats(0.1, 10.0),
    gaps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
)
def test_refused_request_spends_nothing(burst: int, rate: float, gaps: list[float]) -> None:
    # Two limits: a tight one and a loose one. The loose bucket only pays for admitted requests.
    clock = FakeClock()
    backend = LocalBackend(clock=clock)
    tight, loose = bucket(burst, rate, limit="tight"), bucket(1000, 0.001, limit="loose")
    admitted = 0
    last: Verdict | None = None
    for gap in gaps:
        clock.advance(gap)
        last = backend.take_now([tight, loose])
        admitted += last.allowed
    assert last is not None
    assert last.levels[1].remaining == 1000 - admitted


@given(
    burst=st.integers(1, 10),
    rate=st.floats(0.1, 10.0),
    gaps=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
)
def test_one_bucket_reports_what_the_general_path_reports(burst: int, rate: float, gaps: list[float]) -> None:
    # The one-bucket path (take_one) against the general one (a second, never binding bucket),
    # on the same clock: the same verdicts and the same levels to the last bit, refusals too.
    clock = FakeClock()
    one, general = LocalBackend(clock=clock), LocalBackend(clock=clock)
    b, loose = bucket(burst, rate, key="y"), bucket(1000, 0.001, limit="loose")
    for gap in gaps:
        clock.advance(gap)
        alone, paired = one.take_now([b]), general.take_now([b, loose])
        assert alone.allowed == paired.allowed
        assert alone.levels[0] == paired.levels[0]


def test_verdict_reports_the_most_restrictive() -> None:
    clock = FakeClock()
    backend = LocalBackend(clock=clock)
    per_ip, shared = bucket(10, 1.0, limit="per_ip"), bucket(3, 0.5, limit="shared")
    first = backend.take_now([per_ip, shared])
    assert first.binding().limit == "shared" and first.binding().remaining == 2
    for _ in range(2):
        backend.take_now([per_ip, shared])
    refused = backend.take_now([per_ip, shared])
    assert not refused.allowed
    assert refused.binding().limit == "shared" and refused.binding().retry_after_s == 2.0
    assert refused.levels[0].remaining == 7  # per_ip was not charged for the refusal


def test_idle_full_buckets_are_forgotten() -> None:
    clock = FakeClock()
    backend = LocalBackend(max_keys=1000, clock=clock)
    for i in range(500):
        backend.take_now([bucket(2, 1.0, key=str(i))])
    assert len(backend) == 500
    clock.advance(1.0 + 1e-6)  # 1 token back: every bucket is full again
    for i in range(200):
        backend.take_now([bucket(2, 1.0, key=f"new{i}")])
    assert len(backend) < 500  # swept from the cold end as new keys arrive, nothing lost
    assert backend.evicted_early == 0


def test_100k_distinct_keys_stay_bounded() -> None:
    clock = FakeClock()
    backend = LocalBackend(max_keys=10_000, clock=clock)
    tracemalloc.start()
    try:
        for i in range(10_000):
            backend.take_now([bucket(100, 0.001, key=f"warm{i}")])
        warm, _ = tracemalloc.get_traced_memory()
        for i in range(100_000):  # a flood of distinct keys, none ever full again within the test
            backend.take_now([bucket(100, 0.001, key=f"flood{i}")])
            clock.advance(1e-6)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(backend) == 10_000
    assert backend.evicted_early == 100_000
    assert after < warm * 1.5  # ten times the keys, the same memory


@pytest.mark.parametrize("burst", [1, 3])
async def test_async_take_matches_sync(burst: int) -> None:
    clock = FakeClock()
    backend = LocalBackend(clock=clock)
    results = [(await backend.take([bucket(burst, 1.0)])).allowed for _ in range(burst + 1)]
    assert results == [True] * burst + [False]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("one"), st.sampled_from("abcde")),
            st.tuples(st.just("many"), st.lists(st.sampled_from("abcde"), min_size=1, max_size=3, unique=True)),
            st.tuples(st.just("stop"), st.just("")),
        ),
        max_size=60,
    ),
    st.integers(1, 4),
)
async def test_held_keys_are_in_least_recently_used_order(steps: list[tuple[str, object]], max_keys: int) -> None:
    """Skipping the move of a key already at the hot end keeps the store in exact LRU order, so the
    bound drops the least recently used key; checked against a list kept by the plain rule."""
    clock = FakeClock()
    backend = LocalBackend(max_keys=max_keys, clock=clock)
    interned = {k: f"l:{k}" for k in "abcde"}  # one object per key, as the consumer's remembered key
    for kind, arg in steps:
        clock.advance(1e-4)  # buckets of burst 3 at 1/s stay below full: only the bound evicts
        if kind == "stop":
            await backend.stop()
            continue
        keys = [interned[arg]] if kind == "one" else [interned[k] for k in arg]  # type: ignore[union-attr]
        held = list(backend._buckets)
        if kind == "one":
            backend.take_one(keys[0], 3, 1.0)  # a missing key is full: always admitted
            allowed = True
        else:
            allowed = backend.take_now([Bucket("l", k, 3, 1.0) for k in keys]).allowed
        expected = [k for k in held if k not in keys] + [k for k in keys if k in held]
        if allowed:  # a refusal inserts nothing
            expected += [k for k in keys if k not in held]
        expected = expected[max(0, len(expected) - max_keys):]
        assert list(backend._buckets) == expected
