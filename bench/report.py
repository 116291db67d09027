"""From measured samples to `docs/benchmarks.md`: ratios against targets, tables, markdown.

Owns, from the medians of `bench/samples.py`, the three ratios of issue 2 (CPU per request
against grpc-gateway, p50 added over direct gRPC, workers-2 over workers-1 throughput) with their
targets, the page around the issue-3 figures (those are `bench/policy_report.py`), the tables,
and rewriting the report file. Everything above the `## Optimisation log` heading is
regenerated on every run; that section and what follows it is hand-written history and is
carried over unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.policy_report import pair_table, policy_lines, verdict
from bench.samples import (
    DIRECT,
    PC1,
    PC2,
    PEER,
    SCENARIO_LABELS,
    UNENFORCED_TOLERANCE,
    Cell,
    Sample,
    cells,
)

CPU_RATIO_TARGET = 1.6
ADDED_P50_TARGET_MS = 1.0
LOG_HEADING = "## Optimisation log"
_DEFAULT_LOG = (
    f"{LOG_HEADING}\n\n"
    "Hand-written, newest first: what changed, why, and the before/after medians. `make bench` keeps this\n"
    "section as it is.\n"
)


@dataclass(slots=True)
class RunInfo:
    """What the report says about the run itself."""

    date: str
    command: str
    machine: str
    tools: str
    settings: str
    disturbed_pct: float
    elapsed_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def _f(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _verdict(ok: bool, *cells_used: Cell) -> str:
    return verdict(
        ok,
        sum(c.errors for c in cells_used),
        sum(c.unenforced for c in cells_used),
        sum(c.requests for c in cells_used),
    )


def ratio_lines(table: Sequence[Cell]) -> list[str]:
    """The issue-2 ratios from the medians of one run, each with its verdict (or `n/a`)."""
    by_key = {(c.scenario, c.endpoint, c.conns): c for c in table}
    endpoints = sorted({c.endpoint for c in table}, key=lambda e: (e != "echo", e))
    conns = sorted({c.conns for c in table})
    lines = [
        f"**CPU per request, Portcullis `--workers 1` ÷ grpc-gateway** (target ≤ {CPU_RATIO_TARGET}):",
        "",
    ]
    for ep in endpoints:
        for n in conns:
            pc, peer = by_key.get((PC1, ep, n)), by_key.get((PEER, ep, n))
            if pc is None or peer is None or not pc.gw_cpu_us or not peer.gw_cpu_us:
                lines.append(f"- `{ep}` c{n}: n/a (cell missing)")
                continue
            ratio = pc.gw_cpu_us / peer.gw_cpu_us
            lines.append(
                f"- `{ep}` c{n}: {pc.gw_cpu_us:.1f} µs ÷ {peer.gw_cpu_us:.1f} µs = **{ratio:.2f}** "
                f"— {_verdict(ratio <= CPU_RATIO_TARGET, pc, peer)}"
            )
    base = 16 if 16 in conns else (conns[0] if conns else 16)
    lines += [
        "",
        (
            f"**p50 added over direct gRPC (h2load) at {base} connections** "
            f"(target ≤ {ADDED_P50_TARGET_MS:g} ms; grpc-gateway shown for reference):"
        ),
        "",
    ]
    for ep in endpoints:
        direct = by_key.get((DIRECT, ep, base))
        for scenario in (PC1, PC2, PEER):
            cell = by_key.get((scenario, ep, base))
            if cell is None or direct is None:
                lines.append(f"- `{ep}` {SCENARIO_LABELS[scenario]}: n/a (cell missing)")
                continue
            added = cell.p50_ms - direct.p50_ms
            verdict = _verdict(added <= ADDED_P50_TARGET_MS, cell, direct)
            if scenario == PEER:
                verdict = f"reference, {verdict.lower()}"
            lines.append(
                f"- `{ep}` {SCENARIO_LABELS[scenario]}: {cell.p50_ms:.2f} ms − {direct.p50_ms:.2f} ms = "
                f"**{added:+.2f} ms** — {verdict}"
            )
    lines += [
        "",
        "**Throughput, Portcullis `--workers 2` ÷ `--workers 1`** (no target; 2 cores shared with wrk and the backend):",
        "",
    ]
    for ep in endpoints:
        for n in conns:
            w1, w2 = by_key.get((PC1, ep, n)), by_key.get((PC2, ep, n))
            if w1 is None or w2 is None or not w1.rps:
                lines.append(f"- `{ep}` c{n}: n/a (cell missing)")
                continue
            flag = " (errors in a cell)" if w1.errors or w2.errors else ""
            lines.append(
                f"- `{ep}` c{n}: {w2.rps:,.0f} ÷ {w1.rps:,.0f} req/s = **{w2.rps / w1.rps:.2f}×**{flag}"
            )
    return lines


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text_columns: set[int]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i in text_columns else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _errors(n: int) -> str:
    return f"**{n:,} ⚠**" if n else "0"


def median_table(table: Sequence[Cell]) -> list[str]:
    """Markdown table of the medians."""
    header = [
        "scenario",
        "endpoint",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "gateway CPU µs/req",
        "gateway RSS MiB",
        "backend CPU µs/req",
        "others CPU %",
        "runs",
    ]
    rows = (
        [
            SCENARIO_LABELS[c.scenario],
            f"`{c.endpoint}`",
            str(c.conns),
            _f(c.rps, 0),
            _f(c.p50_ms, 2),
            _f(c.p99_ms, 2),
            _errors(c.errors),
            _f(c.gw_cpu_us),
            _f(c.gw_rss_mib),
            _f(c.backend_cpu_us),
            _f(c.others_pct, 0),
            str(c.runs),
        ]
        for c in table
    )
    return _table(header, rows, {0, 1})


def raw_table(samples: Sequence[Sample]) -> list[str]:
    """Markdown table of every measured run, in the order they ran."""
    header = [
        "#",
        "scenario",
        "endpoint",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "requests",
        "gateway CPU µs/req",
        "gateway CPU %",
        "gateway RSS MiB",
        "backend CPU µs/req",
        "loadgen CPU %",
        "others CPU %",
    ]
    rows = (
        [
            str(s.repeat + 1),
            SCENARIO_LABELS[s.scenario],
            f"`{s.endpoint}`",
            str(s.conns),
            _f(s.rps, 0),
            _f(s.p50_ms, 2),
            _f(s.p99_ms, 2),
            _errors(s.errors),
            f"{s.requests:,}",
            _f(s.gw_cpu_us),
            _f(s.gw_cpu_pct, 0),
            _f(s.gw_rss_mib),
            _f(s.backend_cpu_us),
            _f(s.loadgen_pct, 0),
            _f(s.others_pct, 0),
        ]
        for s in samples
    )
    return _table(header, rows, {1, 2})


def render(info: RunInfo, samples: Sequence[Sample]) -> str:
    """The generated part of the report (everything above the optimisation log)."""
    table = cells(samples)
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/`); everything above **Optimisation log** is regenerated on each run.",
        "All scenarios below ran in one run, against one backend process, under the same wrk settings (the",
        "issue-3 paired block's samples are shorter; see Settings).",
        "",
        f"- **Date:** {info.date} (whole run {info.elapsed_s / 60:.1f} min)",
        f"- **Command:** `{info.command}`",
        f"- **Machine:** {info.machine}",
        f"- **Tools:** {info.tools}",
        f"- **Settings:** {info.settings}",
        "",
        "## Core transcoding (issue 2)",
        "",
        "The same Go echo backend (grpc-go, the peer's `build/bin/backend`) behind grpc-gateway 1.6.4 and behind",
        'Portcullis, loaded with wrk on 127.0.0.1: `POST /v1/echo` with `{"message":"hello world","repeat":1}`',
        "and `GET /v1/items/item-1`. The baseline is the backend alone, over gRPC with h2load (`-m1`, one",
        "stream per connection, so it is as closed-loop as wrk). Gateway CPU is utime+stime from `/proc` of the",
        "gateway process and all its children, divided by the requests wrk completed; RSS is the peak sum of",
        "VmRSS during the run.",
        "",
        "### Ratios",
        "",
        *ratio_lines(table),
        "",
        "## Policy cost (issue 3)",
        "",
        "Portcullis `--workers 1` with the offloaded policies on, in this order: `metrics`; `access_log`, one",
        "JSON line per request to a file in the run folder (default 0.2 s flush); `api_key`, a key file written",
        "by `portcullis keys add`, wrk sending `X-API-Key`; `rate_limit` keyed by consumer, burst and refill",
        "1,000,000 (the largest allowed; it never triggers), `policy: local` or `policy: redis` (Redis on",
        "127.0.0.1:6379, a key prefix of the run's own, default `timeout_ms` and `fail_open`).",
        "",
        "**Paired measurement.** Throughput on this shared machine moves by ±20% between runs minutes apart, so",
        "each policy sample is compared with a no-policy sample taken right next to it. Per repeat, one block",
        "starts the policy gateways and a no-policy `--workers 1` (the same config without `policies:`) together",
        "and keeps them up, each idle but the one under load; per endpoint, after a short warm-up of each, the",
        "samples run in turns, B L R B R L B ... (B no policies, L and R the local and Redis limiters, their",
        "order reversed every other round), so each policy sample has a base next to it, run before it in one",
        "round and after it in the next. A pair's ratio is the policy sample's req/s over its adjacent base's",
        "(the mean of both when it sits between two); the verdict is the median of the pairs' ratios, and the",
        "spread is their min–max. Disturbed samples are not re-measured in a block (a re-run would no longer",
        "sit next to its pair); others CPU % per pair is in the table below.",
        "",
        "A policy gateway is measured only after a pre-check:",
        "401 without the key and with a wrong one; 200 with it, carrying the limiter's `RateLimit-Limit` (the",
        "Redis limiter leaves it out when Redis did not answer); access lines for both; both counted on the",
        "admin `/metrics`. After every measured run, each request wrk counted must have an access line naming",
        "the key's consumer and must not have been admitted by the limiter's `fail_open` fallback (a Redis",
        f"reply slower than `timeout_ms`, or the breaker open after one); when more than {UNENFORCED_TOLERANCE:.0%}",
        "of a figure's policy requests fail this, it is INVALID.",
        "",
        "The CPU-implied ratio (gateway CPU µs/req without ÷ with) is what the throughput ratio would be for a",
        "gateway bound by its one core; it moves less with the other load than throughput does. Redis's own",
        "CPU per request is shown apart, and left out of others CPU %, when the run can see the Redis process.",
        "",
        "### Against the no-policy gateway",
        "",
        *policy_lines(samples),
        "",
        (
            "<details><summary>Every pair, in the order it ran (order: B·P base first, P·B policy first, B·P·B "
            "between two bases)</summary>"
        ),
        "",
        *pair_table(samples),
        "",
        "</details>",
        "",
        "## Measurements",
        "",
        "### Medians",
        "",
        *median_table(table),
        "",
        "Errors are non-2xx answers plus socket errors (h2load: failed, errored and timed-out streams), summed",
        "over the runs; a cell with errors is marked ⚠ and its ratios are INVALID. Others CPU % is the CPU the",
        "rest of the machine (not the gateway, backend or load generator) used during the run, in % of one core:",
        "the machine is shared, and a high figure means the cell competed for its two cores.",
        "",
    ]
    disturbed = [s for s in samples if s.others_pct > info.disturbed_pct]
    if disturbed:
        worst = max(s.others_pct for s in disturbed)
        lines += [
            (
                f"**Noise:** {len(disturbed)} of {len(samples)} kept runs had other processes using more than "
                f"{info.disturbed_pct:g}% of a core (worst {worst:.0f}%); treat differences smaller than the "
                "spread of the per-run numbers below as noise."
            ),
            "",
        ]
    if info.problems:
        lines += ["### Problems in this run", "", *(f"- {p}" for p in info.problems), ""]
    lines += [
        "### Per-run numbers",
        "",
        (
            "<details><summary>Every measured run, in the order it ran (others CPU % = machine CPU not used by "
            "the gateway, backend or load generator, in % of one core)</summary>"
        ),
        "",
        *raw_table(samples),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def existing_log(path: Path) -> str:
    """The `## Optimisation log` section (to the end of the file) of an existing report, or a stub."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return _DEFAULT_LOG
    for i, line in enumerate(text.splitlines(keepends=True)):
        if line.rstrip() == LOG_HEADING:
            return "".join(text.splitlines(keepends=True)[i:])
    return _DEFAULT_LOG


def write(path: Path, generated: str, log: Callable[[Path], str] = existing_log) -> None:
    """Rewrite `path`: the generated part, then the preserved optimisation log; atomic rename."""
    text = generated.rstrip("\n") + "\n\n" + log(path).rstrip("\n") + "\n"
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text)
    tmp.replace(path)
