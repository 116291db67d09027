"""What a run measured: the scenarios' names, one measured run of a cell, and a cell's medians.

Owns the scenario names (also the names `BENCH_PHASES` takes and the report's order), the
`Sample` of one timed run, and `cells`, the medians of each metric over a cell's repeats. The
runner makes samples; the report reads cells.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PEER = "grpc-gateway"
PC1 = "portcullis-w1"
PC2 = "portcullis-w2"
POLICIES_BASE = "policies-base"
POLICIES_LOCAL = "policies-local"
POLICIES_REDIS = "policies-redis"
DIRECT = "direct"
SCENARIO_LABELS = {
    PEER: "grpc-gateway 1.6.4 (Go)",
    PC1: "Portcullis `--workers 1`",
    PC2: "Portcullis `--workers 2`",
    POLICIES_BASE: "Portcullis `--workers 1`, no policies (the policy scenarios' paired baseline)",
    POLICIES_LOCAL: "Portcullis `--workers 1` + policies, local limiter",
    POLICIES_REDIS: "Portcullis `--workers 1` + policies, Redis limiter",
    DIRECT: "direct gRPC, h2load (baseline)",
}
# Issue 3: the no-policy PC1 with the policies on, each measured in turns with POLICIES_BASE (the
# same gateway as PC1, started for the paired block; see bench/pairs.py).
POLICY_SCENARIOS = (POLICIES_LOCAL, POLICIES_REDIS)
# Share of a cell's requests that may go without proof of enforcement before its figures are
# INVALID: a Redis reply slower than `timeout_ms` on a busy machine admits a few by `fail_open`,
# which is the limiter working as configured and moves the throughput by less than this.
UNENFORCED_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run of one cell (scenario, endpoint, connections)."""

    scenario: str
    endpoint: str
    conns: int
    repeat: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    gw_cpu_us: float | None
    gw_cpu_pct: float | None
    gw_rss_mib: float | None
    backend_cpu_us: float
    loadgen_pct: float
    others_pct: float
    redis_cpu_us: float | None = None  # Redis's CPU per request (policies-redis), when its process is visible
    unenforced: int = 0  # requests without an access line for the key's consumer, or admitted by a fallback


@dataclass(frozen=True, slots=True)
class Cell:
    """Medians of one cell over its repeats; `errors` is the total over all of them."""

    scenario: str
    endpoint: str
    conns: int
    runs: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    gw_cpu_us: float | None
    gw_rss_mib: float | None
    backend_cpu_us: float
    others_pct: float
    redis_cpu_us: float | None = None
    unenforced: int = 0
    requests: int = 0  # total over the runs, the base of UNENFORCED_TOLERANCE


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cells(samples: Sequence[Sample]) -> list[Cell]:
    """Median of each metric per cell, ordered by scenario, endpoint, then connections."""
    order = list(SCENARIO_LABELS)
    groups: dict[tuple[str, str, int], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.scenario, s.endpoint, s.conns), []).append(s)
    out = []
    for (scenario, endpoint, conns), group in groups.items():
        out.append(
            Cell(
                scenario=scenario,
                endpoint=endpoint,
                conns=conns,
                runs=len(group),
                rps=statistics.median(s.rps for s in group),
                p50_ms=statistics.median(s.p50_ms for s in group),
                p99_ms=statistics.median(s.p99_ms for s in group),
                errors=sum(s.errors for s in group),
                gw_cpu_us=_median(s.gw_cpu_us for s in group),
                gw_rss_mib=_median(s.gw_rss_mib for s in group),
                backend_cpu_us=statistics.median(s.backend_cpu_us for s in group),
                others_pct=statistics.median(s.others_pct for s in group),
                redis_cpu_us=_median(s.redis_cpu_us for s in group),
                unenforced=sum(s.unenforced for s in group),
                requests=sum(s.requests for s in group),
            )
        )
    endpoint_rank = {"echo": 0, "item": 1}
    out.sort(key=lambda c: (order.index(c.scenario), endpoint_rank.get(c.endpoint, 9), c.conns))
    return out
