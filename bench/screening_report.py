"""The screening benchmark's section of `docs/benchmarks.md`: medians, targets, tables.

Owns turning the samples of `bench/screening.py` into markdown, and writing it between
`<!-- screening:start -->` and `<!-- screening:end -->` (appended at the end of the file the first
time), keeping every other byte of the file. Medians are over the repeats of a cell; the per-run
figures follow in a folded table.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.reporting import replace_section
from bench.screening_cells import Sample
from bench.screening_pairs import Pairs, pairs

START, END = "<!-- screening:start -->", "<!-- screening:end -->"
SYSTEMS = {
    "off": "Portcullis, screening `off`",
    "block": "Portcullis, screening `block`",
    "pl0": "nginx alone (PL0, `return 200`)",
    "pl1": "nginx + ModSecurity + CRS PL1",
}
WORKLOAD_LABELS = {
    "echo": "POST /v1/echo",
    "echo-varied": "POST /v1/echo, message varied per request",
    "item": "GET /v1/items/item-1?q=hello",
}
TARGET_WORKLOADS = tuple(WORKLOAD_LABELS)
CPU_TARGET_US, RATIO_TARGET, P99_TARGET_S = 100.0, 0.85, 0.001
BIG_PROBES = 10  # lone 100 KB requests timed one by one per mode (bench/screening.py sends them)


@dataclass(slots=True)
class Report:
    date: str
    command: str
    settings: str
    elapsed_s: float
    model: str
    modsec: str
    samples: Sequence[Sample]
    problems: Sequence[str]
    extra: dict[str, Any] = field(default_factory=dict)
    conns: int = 32


def _median(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else float("nan")


class Cells:
    """Samples grouped by (system, workload)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.groups: dict[tuple[str, str], list[Sample]] = {}
        for s in samples:
            self.groups.setdefault((s.system, s.workload), []).append(s)

    def get(self, system: str, workload: str) -> list[Sample]:
        return self.groups.get((system, workload), [])

    def med(self, system: str, workload: str, metric: Callable[[Sample], float | None]) -> float:
        return _median(metric(s) for s in self.get(system, workload))


def _f(value: float, fmt: str = ".0f", suffix: str = "") -> str:
    return "–" if value is None or math.isnan(value) else f"{value:{fmt}}{suffix}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**PASS**" if ok else "**FAIL**")


def _scr_p99(s: Sample) -> float | None:
    return s.screening.quantile_bound(0.99) if s.screening else None


def _scr_share(s: Sample) -> float | None:
    return s.screening.share_within(P99_TARGET_S) if s.screening else None


def render(r: Report) -> str:
    c = Cells(r.samples)
    lines = [
        START,
        "## Request screening (issue 6)",
        "",
        "Written by `.venv/bin/python -m bench.screening` (`bench/screening.py`); this section is regenerated on each run.",
        "",
        f"- **Date:** {r.date} (whole run {r.elapsed_s / 60:.1f} min)",
        f"- **Command:** `{r.command}`",
        f"- **Model:** `models/{r.model}`; **peer:** {r.modsec or 'not run'}",
        f"- **Settings:** {r.settings}.",
        "- **Setup:** all on 127.0.0.1 of a shared 2-core machine. Portcullis `--workers 1` in front of the Go echo",
        "  backend (policies `metrics` and `screening`, inference `inline`; unknown query parameters passed so that",
        "  `?q=hello` is transcoded and screened). nginx `worker_processes 1`, upstream-free (`start.sh PL PORT nginx`:",
        "  the same nginx answers `return 200`), so PL1 minus PL0 is CRS alone. Every request carries curl-like",
        "  headers and `Host: localhost:PORT`; the POST body is a 315-byte `EchoRequest` (a message and five labels),",
        "  sent unchanged, and as *message varied per request* with a counter in its message (`Bristol1-48211-1`:",
        "  wrk thread, the second of the day its run started, request), so that no cache keyed on a value (screening",
        "  caches the features of values up to 256 characters) sees the same message twice, the warm-up run's",
        "  included.",
        "  CPU is utime+stime of the whole process tree per completed request; *others* is CPU used by processes",
        "  not ours, in % of one core, during the cell.",
        "- **Pairs:** Portcullis with screening `off` and with `block` run side by side (each idle while the other",
        "  is measured); per repeat each workload is measured on one and right after on the other, which first",
        "  alternating. The throughput target is judged on the median of the per-pair ratios (block ÷ off, min–max",
        "  in brackets), since throughput on this shared machine drifts by ±20% over minutes; CPU-implied is the",
        "  same per pair from CPU µs/req (off ÷ block), and the ratio of the medians is shown beside them.",
        "",
        "### Targets",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
    ]
    for wl in TARGET_WORKLOADS:
        off_cpu, blk_cpu = c.med("off", wl, lambda s: s.cpu_us), c.med("block", wl, lambda s: s.cpu_us)
        diff = blk_cpu - off_cpu
        ok = None if math.isnan(diff) else diff <= CPU_TARGET_US
        lines.append(
            f"| screening CPU ≤ {CPU_TARGET_US:.0f} µs/request, {WORKLOAD_LABELS[wl]} | "
            f"{_f(blk_cpu)} − {_f(off_cpu)} = **{_f(diff, '+.0f')} µs** | {_verdict(ok)} |"
        )
    for wl in TARGET_WORKLOADS:
        found = pairs(r.samples, wl)
        med, low, high = Pairs.spread(found.ratios)
        cpu, cpu_low, cpu_high = Pairs.spread(found.cpu_ratios)
        of_medians = c.med("block", wl, lambda s: s.rps) / c.med("off", wl, lambda s: s.rps)
        ok = None if math.isnan(med) else med >= RATIO_TARGET
        lines.append(
            f"| throughput ≥ {RATIO_TARGET:.0%} of screening off, {WORKLOAD_LABELS[wl]} | "
            f"**{_f(med, '.2f')}×**, median of {found.n} adjacent pair(s) ({_f(low, '.2f')}–{_f(high, '.2f')}); "
            f"CPU-implied {_f(cpu, '.2f')}× ({_f(cpu_low, '.2f')}–{_f(cpu_high, '.2f')}); ratio of the medians "
            f"{_f(of_medians, '.2f')}× | {_verdict(ok)} |"
        )
    for wl in TARGET_WORKLOADS:
        share, bound = c.med("block", wl, _scr_share), c.med("block", wl, _scr_p99)
        ok = None if math.isnan(share) else share >= 0.99
        lines.append(
            f"| screening p99 < 1 ms at {r.conns} connections, {WORKLOAD_LABELS[wl]} | "
            f"p99 ≤ **{_f(1e3 * bound, '.2f')} ms** ({_f(100 * share, '.2f')}% within 1 ms); gateway p99 "
            f"{_f(c.med('block', wl, lambda s: s.p99_ms), '.2f')} ms (off "
            f"{_f(c.med('off', wl, lambda s: s.p99_ms), '.2f')} ms) | {_verdict(ok)} |"
        )
    lines += _big_target(c, r)
    lines += _swap_target(c, r)
    lines += [
        "",
        "### Screening off and on, and CRS",
        "",
        "Medians of the repeats. *Cost* is CPU per request over the same server without screening:",
        "Portcullis block − off, ModSecurity PL1 − nginx PL0.",
        "",
        (
            "| system | request | req/s | p50 ms | p99 ms | server CPU µs/req | cost µs/req | backend µs/req "
            "| screening p99 (mean) | others % | errors |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = {"block": "off", "pl1": "pl0"}
    for system, label in SYSTEMS.items():
        for wl in TARGET_WORKLOADS:
            runs = c.get(system, wl)
            if not runs:
                continue
            cpu = c.med(system, wl, lambda s: s.cpu_us)
            cost = cpu - c.med(base[system], wl, lambda s: s.cpu_us) if system in base else float("nan")
            scr = "–"
            if system == "block":
                mean = c.med(system, wl, lambda s: s.screening.mean if s.screening else None)
                scr = f"≤ {_f(1e3 * c.med(system, wl, _scr_p99), '.2f')} ms ({_f(1e6 * mean)} µs)"
            errors = sum(s.non2xx + s.socket_errors for s in runs)
            lines.append(
                f"| {label} | {WORKLOAD_LABELS[wl]} | {_f(c.med(system, wl, lambda s: s.rps), ',.0f')} | "
                f"{_f(c.med(system, wl, lambda s: s.p50_ms), '.2f')} | {_f(c.med(system, wl, lambda s: s.p99_ms), '.2f')} | "
                f"{_f(cpu)} | {_f(cost, '+.0f')} | {_f(c.med(system, wl, lambda s: s.backend_cpu_us))} | {scr} | "
                f"{_f(c.med(system, wl, lambda s: s.others_pct))} | {errors} |"
            )
    lines += [
        "",
        "Screening p99 is the upper bound of the histogram bucket (50, 100, 200, 300, 500, 750 µs, 1 ms, ...)",
        "holding the 99th percentile of `portcullis_screening_duration_seconds` (the policy's own time per request:",
        "record, features, inference, verdict), read from the admin `/metrics` before and after each cell.",
    ]
    lines += _big_table(c, r)
    lines += _swap_table(c, r)
    lines += _quality_table(r)
    lines += ["", "### Problems in this run", ""]
    lines += [f"- {p}" for p in r.problems] or ["None."]
    lines += [
        "",
        "<details><summary>Every measured run</summary>",
        "",
        (
            "| system | request | repeat | req/s | p50 ms | p99 ms | CPU µs/req | screening p99 ≤ | others % | "
            "non-2xx | socket errors | 100 KB req |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in r.samples:
        scr = _f(1e3 * s.screening.quantile_bound(0.99), ".2f", " ms") if s.screening else "–"
        lines.append(
            f"| {s.system} | {s.workload} | {s.repeat + 1} | {s.rps:,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} | "
            f"{s.cpu_us:.0f} | {scr} | {s.others_pct:.0f} | {s.non2xx} | {s.socket_errors} | "
            f"{s.big_requests or ''} |"
        )
    lines += ["", "</details>", "", END]
    return "\n".join(lines)


def _big_target(c: Cells, r: Report) -> list[str]:
    if not c.get("block+big", "echo"):
        return []
    small = c.med("block", "echo", lambda s: s.p99_ms)
    loaded = c.med("block+big", "echo", lambda s: s.p99_ms)
    probe = r.extra.get("big_probe", {}).get("block", [])
    scr = _median(p["screening_ms"] for p in probe)
    return [
        (
            f"| 100 KB bodies do not stall the loop (bounded work per request) | small-request p99 "
            f"{_f(small, '.2f')} → {_f(loaded, '.2f')} ms with a 100 KB client alongside "
            f"(**{_f(loaded - small, '+.2f')} ms**); screening {_f(scr, '.1f')} ms per 100 KB body | reported |"
        )
    ]


def _swap_target(c: Cells, r: Report) -> list[str]:
    runs = c.get("swap", "echo")
    if not runs:
        return []
    swaps = r.extra.get("swaps", [])
    errors = sum(s.non2xx + s.socket_errors for s in runs)
    ok, failed = sum(x["ok"] for x in swaps), sum(len(x["failed"]) for x in swaps)
    return [
        (
            f"| hot swap under load ({r.conns} connections): zero failed or dropped requests | "
            f"**{errors}** non-2xx + socket errors in {sum(s.requests for s in runs):,} requests over **{ok}** "
            f"swaps ({failed} refused or failed) | {_verdict(errors == 0 and failed == 0 and ok > 0)} |"
        )
    ]


def _big_table(c: Cells, r: Report) -> list[str]:
    if not c.get("block+big", "echo") and not c.get("off+big", "echo"):
        return []
    lines = [
        "",
        "### 100 KB bodies beside small requests",
        "",
        f"`POST /v1/echo` with the typical body at {r.conns} connections, without and with one more client",
        "(`wrk -t1 -c1`) posting a benign 100 KB `EchoRequest` (a 15 KB message and ~900 labels) back to back.",
        "Screening bounds its work per request (256 leaves, 32 KiB of text, 4 KiB per value); the lone-request",
        f"columns are medians of {BIG_PROBES} 100 KB requests sent one at a time.",
        "",
        (
            "| screening | small req/s alone → with | small p99 ms alone → with | Δ p99 ms | 100 KB req/s | "
            "100 KB p99 ms | lone 100 KB request ms | screening per 100 KB body ms | others % |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for mode in ("off", "block"):
        if not c.get(f"{mode}+big", "echo"):
            continue
        big = f"{mode}+big"
        p_alone, p_with = c.med(mode, "echo", lambda s: s.p99_ms), c.med(big, "echo", lambda s: s.p99_ms)
        probe = r.extra.get("big_probe", {}).get(mode, [])
        big_rps = c.med(
            big, "echo", lambda s: s.big_requests / max(1e-9, s.requests / s.rps) if s.rps else None
        )
        lines.append(
            f"| {mode} | {_f(c.med(mode, 'echo', lambda s: s.rps), ',.0f')} → {_f(c.med(big, 'echo', lambda s: s.rps), ',.0f')} | "
            f"{_f(p_alone, '.2f')} → {_f(p_with, '.2f')} | {_f(p_with - p_alone, '+.2f')} | {_f(big_rps, '.0f')} | "
            f"{_f(c.med(big, 'echo', lambda s: s.big_p99_ms), '.1f')} | {_f(_median(p['wall_ms'] for p in probe), '.1f')} | "
            f"{_f(_median(p['screening_ms'] for p in probe), '.1f') if mode == 'block' else '–'} | "
            f"{_f(c.med(big, 'echo', lambda s: s.others_pct))} |"
        )
    lines.append("")
    lines.append(
        "100 KB req/s counts the big client's requests over the small client's window (it runs 2 s longer)."
    )
    return lines


def _swap_table(c: Cells, r: Report) -> list[str]:
    runs = c.get("swap", "echo")
    if not runs:
        return []
    swaps = {x["repeat"]: x for x in r.extra.get("swaps", [])}
    lines = [
        "",
        "### Hot swap under load",
        "",
        "Portcullis in `block` mode on a throwaway registry holding the shipped model twice (`swap-a`, `swap-b`,",
        f"each manifest naming its version), wrk `-c{r.conns}` on `POST /v1/echo`; a thread calls",
        "`POST /admin/models/activate` (what `portcullis models activate` does) for the other version every",
        "few seconds. Each activation loads the model in a thread, checks its sha256, feature schema and golden",
        "inputs, then swaps the reference.",
        "",
        "| repeat | requests | req/s | p99 ms | non-2xx | socket errors | swaps | refused/failed | slowest activation ms | others % |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in runs:
        x = swaps.get(s.repeat, {"ok": 0, "failed": [], "slowest_ms": float("nan")})
        lines.append(
            f"| {s.repeat + 1} | {s.requests:,} | {s.rps:,.0f} | {s.p99_ms:.2f} | {s.non2xx} | "
            f"{s.socket_errors} | {x['ok']} | {len(x['failed'])} | {_f(x['slowest_ms'])} | {s.others_pct:.0f} |"
        )
    return lines


def _quality_table(r: Report) -> list[str]:
    q = r.extra.get("quality")
    if not q:
        return []
    pc_out, ms_out = q["portcullis"], q.get("modsec")
    lines = [
        "",
        "### Detection at a glance (the same bodies through both)",
        "",
        f"{q['n']} `POST /v1/echo` bodies, each text in `message`, sent once to Portcullis (`block`, the model's own",
        f"threshold) and to ModSecurity + CRS 3.3.4 at PL1 (anomaly threshold 5); sample: {q['source']}.",
        "Blocked = HTTP 403. A sanity check beside `docs/screening.md`, which has the real evaluation.",
        "",
        "| group | n | Portcullis blocks | CRS PL1 blocks |",
        "| --- | ---: | ---: | ---: |",
    ]
    totals = {"benign": [0, 0, 0], "attack": [0, 0, 0]}
    for g in sorted(pc_out.counts, key=lambda g: (g.startswith("attack"), g)):
        pc, ms = pc_out.counts[g], ms_out.counts.get(g, {}) if ms_out else {}
        n = sum(pc.values())
        kind = "attack" if g.startswith("attack") else "benign"
        totals[kind][0] += n
        totals[kind][1] += pc.get("blocked", 0)
        totals[kind][2] += ms.get("blocked", 0)
        other = [f"{k} ×{v}" for k, v in {**pc, **ms}.items() if k.startswith("other")]
        lines.append(
            f"| {g}{' (' + ', '.join(other) + ')' if other else ''} | {n} | {pc.get('blocked', 0)} | "
            f"{ms.get('blocked', 0) if ms_out else '–'} |"
        )
    for kind, (n, pc_b, ms_b) in totals.items():
        if n:
            word = "false positives" if kind == "benign" else "detected"
            lines.append(
                f"| **all {kind} ({word})** | {n} | **{pc_b} ({pc_b / n:.1%})** | **{ms_b} ({ms_b / n:.1%})** |"
            )
    for name, outcome in (("Portcullis", pc_out), ("CRS PL1", ms_out)):
        if outcome is not None and outcome.false_positives:
            # The written texts come from templates with numbers filled in: one example per template.
            first: dict[str, str] = {}
            for text in outcome.false_positives:
                first.setdefault(re.sub(r"\d+", "#", text), text)
            shown = "; ".join(f"“{text[:100]}”" for text in first.values())
            lines += [
                "",
                f"Benign bodies {name} blocked ({len(outcome.false_positives)}; one of each kind): {shown}",
            ]
    return lines


def write_section(path: Path, section: str) -> None:
    """Replace the screening section of `path` (or append it), keeping every other byte."""
    replace_section(path, START, END, section)
