"""The paired measurement of issue 3 (`bench/pairs.py`, `bench/policy_report.py`, the block order in
`bench/settings.py`): which samples pair up, the per-pair ratios, and the median verdict."""

from __future__ import annotations

import statistics

from hypothesis import given
from hypothesis import strategies as st

from bench.pairs import block_order, pairs, summaries
from bench.policy_report import pair_table, paired_lines, policy_lines
from bench.samples import (
    DIRECT,
    PC1,
    PC2,
    PEER,
    POLICIES_BASE,
    POLICIES_LOCAL,
    POLICIES_REDIS,
    Sample,
)
from bench.settings import PAIRED_BLOCK, Settings

B, L, R = POLICIES_BASE, POLICIES_LOCAL, POLICIES_REDIS


def sample(
    scenario: str,
    rps: float,
    cpu: float | None = 50.0,
    repeat: int = 0,
    endpoint: str = "echo",
    errors: int = 0,
    unenforced: int = 0,
) -> Sample:
    return Sample(
        scenario=scenario,
        endpoint=endpoint,
        conns=32,
        repeat=repeat,
        requests=int(rps * 4),
        rps=rps,
        p50_ms=1.0,
        p99_ms=2.0,
        errors=errors,
        gw_cpu_us=cpu,
        gw_cpu_pct=90.0,
        gw_rss_mib=100.0,
        backend_cpu_us=30.0,
        loadgen_pct=50.0,
        others_pct=5.0,
        unenforced=unenforced,
    )


def test_block_order_alternates_the_policies_and_puts_a_base_between_rounds() -> None:
    assert block_order([L, R], 2) == [B, L, R, B, R, L, B]
    assert block_order([L, R], 2, flip=True) == [B, R, L, B, L, R, B]
    assert block_order([L], 3) == [B, L, B, L, B, L, B]


@given(st.lists(st.sampled_from([L, R]), min_size=1, max_size=2, unique=True), st.integers(1, 6))
def test_every_policy_sample_of_a_block_order_has_a_base_next_to_it(policies: list[str], rounds: int) -> None:
    order = block_order(policies, rounds)
    assert order.count(B) == rounds + 1
    for i, name in enumerate(order):
        if name != B:
            assert B in (order[i - 1], order[i + 1] if i + 1 < len(order) else None)


def test_each_policy_sample_pairs_with_its_adjacent_base() -> None:
    run = [
        sample(B, 100),
        sample(L, 90),
        sample(R, 70),
        sample(B, 120),
        sample(R, 84),
        sample(L, 96),
        sample(B, 80),
    ]
    found = pairs(run)
    assert [(p.policy.scenario, p.order, round(p.ratio, 3)) for p in found] == [
        (L, "B·P", 0.9),  # 90 / 100
        (R, "P·B", round(70 / 120, 3)),
        (R, "B·P", 0.7),  # 84 / 120
        (L, "P·B", 1.2),  # 96 / 80
    ]


def test_a_policy_sample_between_two_bases_is_compared_with_their_mean() -> None:
    (pair,) = pairs([sample(B, 100, cpu=40), sample(L, 90, cpu=60), sample(B, 80, cpu=50)])
    assert pair.order == "B·P·B"
    assert pair.base_rps == 90 and pair.ratio == 1.0
    assert pair.cpu_ratio == 45 / 60


def test_blocks_are_per_repeat_and_endpoint_and_other_scenarios_are_ignored() -> None:
    run = [
        sample(PEER, 500),
        sample(B, 100, repeat=0),
        sample(L, 90, repeat=0),
        sample(PC1, 999),  # not a block member: never a base
        sample(B, 100, repeat=1),  # another block: not a neighbour of the repeat-0 sample
        sample(L, 80, repeat=1, endpoint="item"),  # no base in its own block
        sample(DIRECT, 1),
    ]
    (pair,) = pairs(run)
    assert pair.policy.repeat == 0 and pair.before is not None and pair.after is None


def test_a_missing_base_drops_the_pairs_it_would_have_made() -> None:
    # B L R [B failed] R L B: the first R and the second R have no base next to them.
    run = [sample(B, 100), sample(L, 90), sample(R, 70), sample(R, 75), sample(L, 95), sample(B, 100)]
    assert [(p.policy.scenario, p.policy.rps) for p in pairs(run)] == [(L, 90), (L, 95)]


def test_the_verdict_is_the_median_of_the_pair_ratios_not_the_ratio_of_medians() -> None:
    # Drift: the base falls from 200 to 100 over the run; the policy costs 10% throughout.
    run: list[Sample] = []
    for repeat, base in enumerate((200, 150, 100)):
        run += [sample(B, base, repeat=repeat), sample(L, 0.9 * base, repeat=repeat)]
    (summary,) = summaries(pairs(run))
    assert summary.n == 3
    assert [round(x, 6) for x in summary.ratio] == [0.9, 0.9, 0.9]
    ratio_of_medians = statistics.median([135, 180, 90]) / statistics.median([200, 150, 100])
    assert round(ratio_of_medians, 6) == 0.9  # here too, but the pairs do not need the drift to cancel
    lines = paired_lines(run)
    assert any("median of 3 pair(s) **0.90** (0.90–0.90) — PASS" in line for line in lines)


@given(st.lists(st.tuples(st.floats(50, 500), st.floats(0.3, 1.5)), min_size=1, max_size=12))
def test_summary_is_median_min_and_max_of_the_pairs(runs: list[tuple[float, float]]) -> None:
    samples: list[Sample] = []
    for repeat, (base, cost) in enumerate(runs):
        samples += [sample(B, base, repeat=repeat), sample(L, base * cost, repeat=repeat)]
    (summary,) = summaries(pairs(samples))
    ratios = [p.ratio for p in summary.pairs]
    assert summary.ratio == (statistics.median(ratios), min(ratios), max(ratios))
    assert all(abs(r - c) < 1e-9 for r, (_, c) in zip(ratios, runs, strict=True))


def test_verdicts_fail_and_are_invalid_on_errors_or_unenforced_requests() -> None:
    base = sample(B, 100)
    assert "— FAIL" in paired_lines([base, sample(L, 80)])[-1]  # local target 0.85
    assert "— PASS" in paired_lines([base, sample(R, 71)])[-1]  # Redis target 0.70
    assert "INVALID (errors" in paired_lines([base, sample(L, 90, errors=3)])[-1]
    assert "INVALID (policies not shown" in paired_lines([base, sample(L, 90, unenforced=40)])[-1]
    assert "CPU-implied 1.00 (1.00–1.00)" in paired_lines([base, sample(L, 90)])[-1]


def test_the_report_shows_the_ratio_of_medians_and_every_pair() -> None:
    run = [sample(PC1, 150), sample(B, 100, cpu=40), sample(L, 90, cpu=50), sample(B, 100, cpu=40)]
    text = "\n".join(policy_lines(run))
    assert "90 ÷ 100 req/s = 0.90; ÷ 150 = 0.60" in text
    assert "50.0 − 40.0 µs = **+10.0 µs/req**" in text
    table = pair_table(run)
    assert len(table) == 3 and "| B·P·B |" in table[2] and "| 0.80 |" in table[2]


def test_settings_run_the_policy_scenarios_as_one_block_in_the_scenario_order() -> None:
    settings = Settings.from_env({})
    assert settings.run_order(0) == (PEER, PC1, PC2, PAIRED_BLOCK, DIRECT)
    assert settings.run_order(1) == (DIRECT, PAIRED_BLOCK, PC2, PC1, PEER)
    assert settings.conns_for(PC1) == (16, 32) and settings.conns_for(L) == (32,)
    only = Settings.from_env({"BENCH_PHASES": "policies-redis", "BENCH_QUICK": "1"})
    assert only.run_order(0) == (PAIRED_BLOCK,) and only.policy_scenarios == (R,)
    assert (only.pair_dur_s, only.pair_rounds) == (2.0, 1)
