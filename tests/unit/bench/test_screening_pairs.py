"""The screening benchmark's off/block pairs (`bench/screening_pairs.py`): run order and ratios."""

from __future__ import annotations

import math

from bench.screening_cells import Sample
from bench.screening_pairs import BLOCK, OFF, Pairs, pair_order, pairs


def sample(system: str, rps: float, cpu: float, repeat: int = 0, workload: str = "echo") -> Sample:
    return Sample(
        system=system,
        workload=workload,
        repeat=repeat,
        requests=int(rps * 8),
        rps=rps,
        p50_ms=1.0,
        p99_ms=2.0,
        non2xx=0,
        socket_errors=0,
        cpu_us=cpu,
        backend_cpu_us=30.0,
        others_pct=0.0,
    )


def test_which_mode_goes_first_alternates_by_workload_and_repeat() -> None:
    assert [pair_order(0, i) for i in range(3)] == [(OFF, BLOCK), (BLOCK, OFF), (OFF, BLOCK)]
    assert [pair_order(1, i) for i in range(3)] == [(BLOCK, OFF), (OFF, BLOCK), (BLOCK, OFF)]


def test_each_repeat_makes_one_pair_and_the_verdict_is_their_median() -> None:
    # The machine slows by half over the run; screening costs 60% of the throughput throughout.
    run = []
    for repeat, off in enumerate((12_000.0, 9_000.0, 6_000.0)):
        run += [sample(OFF, off, 70, repeat), sample(BLOCK, 0.4 * off, 175, repeat)]
    run += [sample(OFF, 1.0, 70, 0, workload="item"), sample(OFF + "+big", 1.0, 70, 0)]  # not pairs
    found = pairs(run, "echo")
    assert found.n == 3
    assert [round(x, 6) for x in Pairs.spread(found.ratios)] == [0.4, 0.4, 0.4]
    assert [round(x, 6) for x in found.cpu_ratios] == [0.4, 0.4, 0.4]


def test_big_variant_pairs_with_its_own_and_a_lone_cell_makes_no_pair() -> None:
    run = [sample(OFF + "+big", 100, 50), sample(BLOCK + "+big", 50, 100), sample(OFF, 100, 50, repeat=1)]
    assert pairs(run, "echo", "+big").ratios == (0.5,)
    assert pairs(run, "echo").n == 0
    assert all(math.isnan(x) for x in Pairs.spread(()))
