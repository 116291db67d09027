"""Issue 3 in the report: the paired verdict, the ratio of medians beside it, and the CPU the policies add.

Owns the issue-3 lines of `docs/benchmarks.md` (and of the run's closing summary). The verdict on
each target ("with the policies, throughput stays at least 85% / 70% of the same gateway without")
is the median of the per-pair ratios of `bench/pairs.py`, with their min–max; the ratio of the
scenarios' medians (how it was reported before the pairing) and the CPU-implied ratio are shown
beside it, without a verdict. A figure is INVALID when any sample behind it had errors, or when
more than UNENFORCED_TOLERANCE of its policy requests were not shown enforced by the audit.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.pairs import PairSummary, pairs, summaries
from bench.samples import (
    PC1,
    POLICIES_BASE,
    POLICIES_LOCAL,
    POLICIES_REDIS,
    POLICY_SCENARIOS,
    UNENFORCED_TOLERANCE,
    Cell,
    Sample,
    cells,
)

# Issue 3: throughput with the policies on ÷ the same gateway without them, at least this.
POLICY_RATIO_TARGETS = {POLICIES_LOCAL: 0.85, POLICIES_REDIS: 0.70}
POLICY_SHORT = {POLICIES_LOCAL: "local limiter", POLICIES_REDIS: "Redis limiter"}


def verdict(ok: bool, errors: int, unenforced: int, requests: int) -> str:
    """PASS or FAIL, or INVALID when errors, or too many requests not shown enforced, stand behind it."""
    if errors:
        return "INVALID (errors in a cell)"
    if unenforced > UNENFORCED_TOLERANCE * requests:
        return (
            f"INVALID (policies not shown enforced on more than {UNENFORCED_TOLERANCE:.0%} of the requests)"
        )
    text = "PASS" if ok else "FAIL"
    if unenforced:
        text += (
            f" ({unenforced:,} requests not shown enforced, within the {UNENFORCED_TOLERANCE:.0%} allowed)"
        )
    return text


def _where(scenario: str, endpoint: str, conns: int) -> str:
    return f"`{endpoint}` c{conns}, {POLICY_SHORT[scenario]}"


def _targets() -> str:
    return ", ".join(f"≥ {POLICY_RATIO_TARGETS[s]:.2f} with the {POLICY_SHORT[s]}" for s in POLICY_SCENARIOS)


def paired_lines(samples: Sequence[Sample]) -> list[str]:
    """The verdicts: per policy scenario, endpoint and connections, the median of the per-pair ratios."""
    lines = [
        f"**Throughput with the policies ÷ without, paired** (target {_targets()}; the verdict):",
        "the median of the per-pair ratios, min–max in brackets; a pair is one policy sample and the no-policy",
        "sample(s) run right next to it. CPU-implied: the same per pair from gateway CPU µs/req (without ÷ with).",
        "",
    ]
    found = summaries(pairs(samples))
    if not found:
        return [*lines, "- n/a (no pair measured)"]
    for s in sorted(found, key=_summary_key):
        med, low, high = s.ratio
        cpu = s.cpu_ratio
        cpu_text = "" if cpu is None else f"; CPU-implied {cpu[0]:.2f} ({cpu[1]:.2f}–{cpu[2]:.2f})"
        lines.append(
            f"- {_where(s.scenario, s.endpoint, s.conns)}: median of {s.n} pair(s) **{med:.2f}** "
            f"({low:.2f}–{high:.2f}) — "
            f"{verdict(med >= POLICY_RATIO_TARGETS[s.scenario], s.errors, s.unenforced, s.requests)}{cpu_text}"
        )
    return lines


def _summary_key(s: PairSummary) -> tuple[bool, str, int, int]:
    return (s.endpoint != "echo", s.endpoint, s.conns, POLICY_SCENARIOS.index(s.scenario))


def median_lines(table: Sequence[Cell]) -> list[str]:
    """Ratios of medians (no verdict), and the CPU per request the policies add."""
    by_key = {(c.scenario, c.endpoint, c.conns): c for c in table}
    endpoints = sorted({c.endpoint for c in table}, key=lambda e: (e != "echo", e))
    conns = sorted({c.conns for c in table if c.scenario in POLICY_SCENARIOS})
    throughput = [
        "**Ratio of the medians** (how it was reported before the pairing; no verdict): the policy scenario's",
        "median req/s ÷ the paired no-policy gateway's median, and ÷ the issue-2 `--workers 1` cell, measured",
        "minutes apart:",
        "",
    ]
    cost = [
        "**CPU per request the policies add** (gateway CPU µs/req with − the paired no-policy gateway's; no",
        "target; the Redis limiter's own Redis CPU shown apart when its process is visible):",
        "",
    ]
    if not conns:
        return [*throughput, "- n/a (no policy scenario measured)"]
    for ep in endpoints:
        for n in conns:
            base, w1 = by_key.get((POLICIES_BASE, ep, n)), by_key.get((PC1, ep, n))
            for scenario in POLICY_SCENARIOS:
                cell = by_key.get((scenario, ep, n))
                where = _where(scenario, ep, n)
                if cell is None or base is None or not base.rps:
                    throughput.append(f"- {where}: n/a (cell missing)")
                    cost.append(f"- {where}: n/a (cell missing)")
                    continue
                unpaired = f"; ÷ {w1.rps:,.0f} = {cell.rps / w1.rps:.2f}" if w1 is not None and w1.rps else ""
                throughput.append(
                    f"- {where}: {cell.rps:,.0f} ÷ {base.rps:,.0f} req/s = {cell.rps / base.rps:.2f}{unpaired}"
                )
                if cell.gw_cpu_us is None or base.gw_cpu_us is None:
                    cost.append(f"- {where}: n/a (no CPU figure)")
                    continue
                redis = "" if cell.redis_cpu_us is None else f", plus {cell.redis_cpu_us:.1f} µs/req in Redis"
                cost.append(
                    f"- {where}: {cell.gw_cpu_us:.1f} − {base.gw_cpu_us:.1f} µs = "
                    f"**{cell.gw_cpu_us - base.gw_cpu_us:+.1f} µs/req**{redis} (CPU-implied throughput ratio "
                    f"of the medians {base.gw_cpu_us / cell.gw_cpu_us:.2f})"
                )
    return [*throughput, "", *cost]


def policy_lines(samples: Sequence[Sample]) -> list[str]:
    """Every issue-3 figure: the paired verdicts, then the ratios of medians and the CPU cost."""
    return [*paired_lines(samples), "", *median_lines(cells(samples))]


def pair_table(samples: Sequence[Sample]) -> list[str]:
    """Markdown table of every pair, in run order."""
    rows = [
        (
            "| # | endpoint | conns | policies | order | without req/s | with req/s | ratio | without µs/req "
            "| with µs/req | CPU-implied | others % (max) | errors |"
        ),
        "|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in pairs(samples):
        s, base_cpu, cpu = p.policy, p.base_cpu_us, p.cpu_ratio
        rows.append(
            f"| {s.repeat + 1} | `{s.endpoint}` | {s.conns} | {POLICY_SHORT[s.scenario]} | {p.order} | "
            f"{p.base_rps:,.0f} | {s.rps:,.0f} | {p.ratio:.2f} | "
            f"{'–' if base_cpu is None else f'{base_cpu:.1f}'} | "
            f"{'–' if s.gw_cpu_us is None else f'{s.gw_cpu_us:.1f}'} | {'–' if cpu is None else f'{cpu:.2f}'} | "
            f"{p.others_pct:.0f} | {p.errors} |"
        )
    return rows
