"""The screening benchmark's pairs: Portcullis with screening `block` next to the same with `off`.

Owns which of the two modes runs first in a pair, and the maths of the throughput target
("with screening on, at least 85% of the throughput with it off"): per repeat and workload, the
`block` cell and the `off` cell measured right before or after it make one pair, with a
throughput ratio (block req/s ÷ off req/s) and a CPU-implied one (off CPU µs/req ÷ block). The
verdict is the median of the per-pair ratios, their min–max the spread. A disturbed cell that is
measured again (BENCH_RETRIES) is re-run straight after its first try, so the kept one stays within
one cell of its pair. Pure: samples in, ratios out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.screening_cells import Sample

OFF, BLOCK = "off", "block"
MODES = (OFF, BLOCK)


def pair_order(repeat: int, index: int) -> tuple[str, str]:
    """The two modes in run order for the `index`-th workload of `repeat`: off first on even sums."""
    return MODES if (repeat + index) % 2 == 0 else (BLOCK, OFF)


@dataclass(frozen=True, slots=True)
class Pairs:
    """The per-pair ratios of one workload (or its "+big" variant), one pair per repeat."""

    ratios: tuple[float, ...]
    cpu_ratios: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.ratios)

    @staticmethod
    def spread(values: Sequence[float]) -> tuple[float, float, float]:
        """Median, min and max; NaNs when there is none."""
        if not values:
            return (float("nan"),) * 3
        return statistics.median(values), min(values), max(values)


def pairs(samples: Sequence[Sample], workload: str, suffix: str = "") -> Pairs:
    """Pair `block{suffix}` with `off{suffix}` of the same repeat and workload (both measured at most
    once per repeat, back to back); a repeat missing either makes no pair."""
    by_repeat: dict[int, dict[str, Sample]] = {}
    for s in samples:
        if s.workload == workload and s.system in (OFF + suffix, BLOCK + suffix):
            by_repeat.setdefault(s.repeat, {})[s.system.removesuffix(suffix)] = s
    ratios, cpu = [], []
    for repeat in sorted(by_repeat):
        pair = by_repeat[repeat]
        off, block = pair.get(OFF), pair.get(BLOCK)
        if off is None or block is None or not off.rps:
            continue
        ratios.append(block.rps / off.rps)
        if block.cpu_us:
            cpu.append(off.cpu_us / block.cpu_us)
    return Pairs(tuple(ratios), tuple(cpu) if len(cpu) == len(ratios) else ())
