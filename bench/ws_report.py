"""The WebSocket benchmark's report: markdown from the measured cells, and its section of the report file.

`render` turns one run of `bench/websocket.py` into the markdown section (targets with PASS/FAIL
first, then the medians and the idle-memory table); `write_section` puts it between the
`<!-- websocket:start -->` and `<!-- websocket:end -->` markers of `docs/benchmarks.md`, leaving
everything else as it was: other benchmarks write their own sections of the same file, so the file is
read just before it is rewritten, and the rewrite is an atomic rename. The first time, the section is
appended at the end, after the optimisation log, which `make bench` keeps when it regenerates the
part above it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.reporting import replace_section

if TYPE_CHECKING:
    from bench.websocket import Cell, IdleResult, Settings

START, END = "<!-- websocket:start -->", "<!-- websocket:end -->"
PASSTHROUGH_TARGET = 0.60
_LABELS = {
    "passthrough": ("WebSocket passthrough, demo chat backend", "websockets client to the backend"),
    "bidi": ("WebSocket to gRPC bidi, EchoService.Chat", "grpc.aio bidi streams to the backend"),
    "ndjson": ("server stream as NDJSON, StreamItems", "grpc.aio server streams to the backend"),
}


def _median(cells: Sequence[Cell], key: str) -> float:
    return statistics.median(float(c.result[key]) for c in cells) if cells else 0.0


def _per_message(cells: Sequence[Cell], seconds: Callable[[Cell], float]) -> float:
    """CPU µs per message counted in the measured window (CPU is read over that window too)."""
    return statistics.median(seconds(c) / max(1, c.result["messages"]) * 1e6 for c in cells)


def _gateway(cell: Cell) -> float:
    return cell.gateway_cpu_s


def _backend(cell: Cell) -> float:
    return cell.backend_cpu_s


def _client(cell: Cell) -> float:
    return float(cell.result["client_cpu_s"])


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(
    settings: Settings, cells: Sequence[Cell], idles: Sequence[IdleResult], began: datetime, minutes: float,
    machine: str, command: str,
) -> str:
    s = settings
    by: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        by.setdefault((cell.scenario, cell.path), []).append(cell)
    lines = [
        START,
        "## WebSocket and streams (issue 4)",
        "",
        ("Written by `python -m bench.websocket` (`bench/websocket.py`, load from `bench/ws_clients.py`); this "
        "section is replaced on each run, the rest of the file is left alone. Every process on 127.0.0.1: the "
        "Python echo backend (`tests/support/echo_backend.py`), the demo chat backend with each client in a room "
        "of its own (`tests/support/chat_backend.py --echo`), Portcullis `--workers 1`, and one load generator "
        "process per cell (asyncio on uvloop: the `websockets` client, aiohttp, grpc.aio). Each figure is "
        "through the gateway and against the same backend directly, in the same run; closed loop, one message "
        "in flight per connection, p99 per message."),
        "",
        f"- **Date:** {began:%Y-%m-%d %H:%M} UTC (whole run {minutes:.1f} min)",
        f"- **Command:** `{command}`",
        (f"- **Machine:** {machine}; a shared box: \"others\" is the CPU used by processes not of this run, in % "
        "of one core, during each cell"),
        (f"- **Settings:** {s.duration_s:g} s per cell after {s.warm_s:g} s of warm-up, {s.repeats} repeat(s) "
        f"(direct and gateway alternating, order reversed every other repeat; medians shown), {s.conns} "
        f"connections for messages, {s.streams} concurrent server streams, {s.idle_conns} idle sockets held "
        f"{s.idle_s:g} s{' (BENCH_QUICK=1)' if s.quick else ''}"),
        "",
        "### Targets",
        "",
    ]
    direct, gateway = by.get(("passthrough", "direct"), []), by.get(("passthrough", "gateway"), [])
    if direct and gateway:
        d, g = _median(direct, "rate"), _median(gateway, "rate")
        ratio = g / d if d else 0.0
        lines.append(
            f"- **WebSocket passthrough msgs/s, gateway ÷ direct** at {s.conns} connections (target ≥ "
            f"{PASSTHROUGH_TARGET:.2f}): {g:,.0f} ÷ {d:,.0f} = **{ratio:.2f}** — {_verdict(ratio >= PASSTHROUGH_TARGET)}"
        )
        cost_direct = _per_message(direct, _client) + _per_message(direct, _backend)
        cost_gateway = _per_message(gateway, _client) + _per_message(gateway, _backend) + _per_message(
            gateway, _gateway
        )
        lines.append(
            f"  - CPU per message, all processes of the run: {cost_direct:.0f} µs direct (client + backend), "
            f"{cost_gateway:.0f} µs through the gateway (client + backend + gateway); when the cores are the limit, "
            f"as on this box, that caps the ratio near {cost_direct / cost_gateway if cost_gateway else 0:.2f}"
        )
    for idle in idles:
        lines.append(
            f"- **Gateway memory with {idle.conns:,} idle {_idle_name(idle.kind)} held {s.idle_s:g} s** (target: flat, "
            f"growth ≤ max(1 MiB, 2%)): {idle.rss_open / 2**20:.1f} → {idle.rss_end / 2**20:.1f} MiB, "
            f"**{idle.growth / 2**20:+.2f} MiB**, {idle.per_connection / 1024:.1f} KiB per connection — "
            f"{_verdict(idle.flat)}"
        )
    lines += ["", "### Messages", ""]
    lines += [
        "| scenario | path | conns | msgs/s | p50 ms | p99 ms | CPU µs/msg: gateway | backend | client | others % |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, (label, direct_label) in _LABELS.items():
        for path in ("direct", "gateway"):
            group = by.get((scenario, path), [])
            if not group:
                continue
            rate = _median(group, "rate")
            cpu = _per_message(group, _gateway)
            backend = _per_message(group, _backend)
            client = _per_message(group, _client)
            conns = s.streams if scenario == "ndjson" else s.conns
            name = label if path == "direct" else ""
            how = direct_label if path == "direct" else "through Portcullis"
            p50 = "—" if scenario == "ndjson" else f"{_median(group, 'p50_ms'):.2f}"
            p99 = "—" if scenario == "ndjson" else f"{_median(group, 'p99_ms'):.2f}"
            cpu_text = "—" if path == "direct" else f"{cpu:.0f}"
            others = statistics.median(c.others_pct for c in group)
            lines.append(
                f"| {name} | {how} | {conns} | {rate:,.0f} | {p50} | {p99} | {cpu_text} | {backend:.0f} | {client:.0f} "
                f"| {others:.0f} |"
            )
    lines += ["", "Gateway ÷ direct, msgs/s (p99 added):", ""]
    for scenario, (label, _) in _LABELS.items():
        d_cells, g_cells = by.get((scenario, "direct"), []), by.get((scenario, "gateway"), [])
        if not d_cells or not g_cells:
            continue
        d, g = _median(d_cells, "rate"), _median(g_cells, "rate")
        extra = ""
        if scenario != "ndjson":
            extra = f" (p99 {_median(g_cells, 'p99_ms') - _median(d_cells, 'p99_ms'):+.2f} ms)"
        lines.append(f"- {label}: {g:,.0f} ÷ {d:,.0f} = **{g / d if d else 0:.2f}**{extra}")
    if idles:
        lines += [
            "", "### Idle sockets", "",
            ("Each kind on a fresh gateway, warmed by 20 sockets of the kind first, pinging both sides every 5 s "
             "(the default is 20 s) so that the hold spans many ping rounds. Gateway RSS (VmRSS) sampled every second "
             "while the sockets were held, from 10 s (two ping rounds: the first allocates once) after they were all "
             "open; \"open\" and \"end\" are the medians of the first and last tenth of the samples; per connection "
             "is (open − before) ÷ sockets; the slope is a least-squares fit over the samples."),
            "",
            ("| sockets | count | opened in | RSS before | RSS open | RSS end | per connection | growth | slope | "
            "RSS after close | closed under us |"),
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for idle in idles:
            lines.append(
                f"| {_idle_name(idle.kind)} | {idle.conns:,} | {idle.open_s:.1f} s | {idle.rss_before / 2**20:.1f} MiB | "
                f"{idle.rss_open / 2**20:.1f} MiB | {idle.rss_end / 2**20:.1f} MiB | "
                f"{idle.per_connection / 1024:.1f} KiB | {idle.growth / 2**20:+.2f} MiB | "
                f"{idle.slope_mib_per_min:+.3f} MiB/min | {idle.rss_after_close / 2**20:.1f} MiB | "
                f"{idle.closed_under_us} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def _idle_name(kind: str) -> str:
    return "passthrough sockets" if kind == "passthrough" else "gRPC Chat sockets (one open stream each)"


def write_section(path: Path, section: str) -> None:
    """Replace the WebSocket section of `path` (or append it), keeping every other byte."""
    replace_section(path, START, END, section)

