"""Paired measurement: a policy sample against the no-policy sample measured right next to it.

Owns the maths of issue 3's verdict. On a shared machine throughput drifts by ±20% over minutes,
so a ratio of medians taken minutes apart measures the drift as much as the policies. The paired
block (`bench/paired.py`) keeps a no-policy gateway and the policy gateways up together and
measures them in turns, base first: B P1 P2 B P2 P1 B ... (`block_order`). Each policy sample is
paired with the base sample(s) next to it in that order, with the mean of both when it sits
between two, and gives one throughput ratio (policy req/s ÷ base req/s) and one CPU-implied
ratio (base gateway CPU µs/req ÷ policy µs/req). The verdict is the median of the per-pair
ratios; their min–max is the spread. Everything here is pure: samples in, pairs and summaries out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.samples import POLICIES_BASE, POLICY_SCENARIOS, Sample


def block_order(policies: Sequence[str], rounds: int, flip: bool = False) -> list[str]:
    """The run order of one paired block: a base sample, then per round the policies and a base.

    The policies' order is reversed on every other round (and all of it when `flip`), so each
    policy is measured base-first and policy-first equally often over two rounds:
    `block_order(["l", "r"], 2)` is B l r B r l B.
    """
    order = [POLICIES_BASE]
    for r in range(rounds):
        forward = (r % 2 == 0) != flip
        order += [*(policies if forward else reversed(policies)), POLICIES_BASE]
    return order


@dataclass(frozen=True, slots=True)
class Pair:
    """One policy sample and the base it is compared with (the mean of its base neighbours)."""

    policy: Sample
    before: Sample | None  # the no-policy sample run right before it, if any
    after: Sample | None  # the no-policy sample run right after it, if any

    @property
    def bases(self) -> tuple[Sample, ...]:
        return tuple(b for b in (self.before, self.after) if b is not None)

    @property
    def order(self) -> str:
        """Which ran first: `B·P`, `P·B`, or `B·P·B` between two bases."""
        return {(True, False): "B·P", (False, True): "P·B"}.get(
            (self.before is not None, self.after is not None), "B·P·B"
        )

    @property
    def base_rps(self) -> float:
        return statistics.fmean(b.rps for b in self.bases)

    @property
    def base_cpu_us(self) -> float | None:
        values = [b.gw_cpu_us for b in self.bases]
        return (
            None if any(v is None for v in values) else statistics.fmean(v for v in values if v is not None)
        )

    @property
    def ratio(self) -> float:
        """Throughput with the policies ÷ without."""
        return self.policy.rps / self.base_rps if self.base_rps else float("nan")

    @property
    def cpu_ratio(self) -> float | None:
        """Gateway CPU µs/req without ÷ with: the throughput ratio of a gateway bound by its core."""
        base = self.base_cpu_us
        return base / self.policy.gw_cpu_us if base is not None and self.policy.gw_cpu_us else None

    @property
    def others_pct(self) -> float:
        """The most CPU others used during any sample of the pair, in % of one core."""
        return max(s.others_pct for s in (self.policy, *self.bases))

    @property
    def errors(self) -> int:
        return sum(s.errors for s in (self.policy, *self.bases))


def pairs(samples: Sequence[Sample]) -> list[Pair]:
    """Every pair in `samples`, which must be in run order (as the runner appends them).

    A block is the samples of one (repeat, endpoint, connections) among the base and policy
    scenarios; other scenarios' samples are ignored. A policy sample with no base next to it
    (its neighbour failed to measure) makes no pair.
    """
    blocks: dict[tuple[int, str, int], list[Sample]] = {}
    for s in samples:
        if s.scenario == POLICIES_BASE or s.scenario in POLICY_SCENARIOS:
            blocks.setdefault((s.repeat, s.endpoint, s.conns), []).append(s)
    out = []
    for block in blocks.values():
        for i, s in enumerate(block):
            if s.scenario == POLICIES_BASE:
                continue
            before = block[i - 1] if i > 0 and block[i - 1].scenario == POLICIES_BASE else None
            after = block[i + 1] if i + 1 < len(block) and block[i + 1].scenario == POLICIES_BASE else None
            if before is not None or after is not None:
                out.append(Pair(s, before, after))
    return out


def _spread(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


@dataclass(frozen=True, slots=True)
class PairSummary:
    """The pairs of one policy scenario at one endpoint and connection count, over all repeats."""

    scenario: str
    endpoint: str
    conns: int
    pairs: tuple[Pair, ...]

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def ratio(self) -> tuple[float, float, float]:
        """Median, min and max of the per-pair throughput ratios."""
        return _spread([p.ratio for p in self.pairs])

    @property
    def cpu_ratio(self) -> tuple[float, float, float] | None:
        """Median, min and max of the per-pair CPU-implied ratios; None when a pair has no CPU figure."""
        values = [p.cpu_ratio for p in self.pairs]
        return None if any(v is None for v in values) else _spread([v for v in values if v is not None])

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.pairs)

    @property
    def unenforced(self) -> int:
        return sum(p.policy.unenforced for p in self.pairs)

    @property
    def requests(self) -> int:
        return sum(p.policy.requests for p in self.pairs)


def summaries(all_pairs: Sequence[Pair]) -> list[PairSummary]:
    """Pairs grouped by (policy scenario, endpoint, connections), in first-seen order."""
    groups: dict[tuple[str, str, int], list[Pair]] = {}
    for p in all_pairs:
        groups.setdefault((p.policy.scenario, p.policy.endpoint, p.policy.conns), []).append(p)
    return [PairSummary(s, e, c, tuple(g)) for (s, e, c), g in groups.items()]
