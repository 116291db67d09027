"""One measured cell of the screening benchmark, and what it reads besides wrk.

Owns the `Sample` of one timed wrk run against Portcullis or nginx: CPU of the server's process
tree and of the backend from `/proc`, the machine's busy time (so "others", the CPU of processes
that are not ours, is known on a shared box), and, for Portcullis, the screening policy's own
latency histogram (`portcullis_screening_duration_seconds`) and decisions scraped from `/metrics`
on the admin listener before and after the run. Optionally one more client sends 100 KB bodies
back to back (`wrk -t1 -c1`) during the run, to see whether big bodies stall the small ones.
"""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import loadgen
from bench.procs import CLK_TCK, HOST, ManagedProcess, ProcKey, cpu_seconds, cpu_ticks, system_jiffies

DURATION_METRIC = "portcullis_screening_duration_seconds"
DECISIONS_METRIC = "portcullis_screening_decisions_total"
_SERIES = re.compile(r"^([a-z_]+)\{([^}]*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Histogram:
    """A Prometheus histogram summed over its label sets: cumulative counts by upper bound (s)."""

    buckets: tuple[tuple[float, float], ...] = ()
    count: float = 0.0
    total: float = 0.0

    def minus(self, before: Histogram) -> Histogram:
        old = dict(before.buckets)
        return Histogram(
            tuple((le, n - old.get(le, 0.0)) for le, n in self.buckets),
            self.count - before.count,
            self.total - before.total,
        )

    def quantile_bound(self, q: float) -> float:
        """The smallest bucket bound under which at least `q` of the observations fall (an upper bound)."""
        for le, n in self.buckets:
            if self.count and n >= q * self.count:
                return le
        return float("nan")

    def share_within(self, bound: float) -> float:
        """Share of observations at or under `bound` (a bucket bound)."""
        for le, n in self.buckets:
            if abs(le - bound) < 1e-12:
                return n / self.count if self.count else float("nan")
        return float("nan")

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


@dataclass(frozen=True, slots=True)
class Scrape:
    """What one `/metrics` read holds for screening."""

    duration: Histogram = Histogram()
    decisions: Mapping[str, float] = field(default_factory=dict)  # by verdict, over routes


def scrape(admin_port: int) -> Scrape:
    """Read `/metrics` on the admin listener; the screening series only."""
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    count = total = 0.0
    decisions: dict[str, float] = {}
    for line in text.splitlines():
        match = _SERIES.match(line)
        if match is None:
            continue
        name, labels, value = match.group(1), dict(_LABEL.findall(match.group(2))), float(match.group(3))
        if name == f"{DURATION_METRIC}_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == f"{DURATION_METRIC}_count":
            count += value
        elif name == f"{DURATION_METRIC}_sum":
            total += value
        elif name == DECISIONS_METRIC:
            decisions[labels["verdict"]] = decisions.get(labels["verdict"], 0.0) + value
    return Scrape(Histogram(tuple(sorted(buckets.items())), count, total), decisions)


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run of one cell."""

    system: str  # off, block (Portcullis), pl0, pl1 (nginx), with "+big" when big bodies ran alongside
    workload: str
    repeat: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    cpu_us: float  # CPU of the server (Portcullis or nginx, whole process tree) per request
    backend_cpu_us: float | None
    others_pct: float  # CPU of processes not ours, % of one core
    screening: Histogram | None = None  # the policy's latency over the run (Portcullis, screening on)
    decisions: Mapping[str, float] = field(default_factory=dict)
    big_requests: int = 0
    big_non2xx: int = 0
    big_p99_ms: float = float("nan")


class Quiet:
    """Wait, before a cell, for the machine to be nearly idle: at most `per_cell_s`, from a run budget."""

    def __init__(self, max_pct: float, budget_s: float, per_cell_s: float = 10.0, ncpu: int = 1) -> None:
        self.max_pct, self.budget_s, self.per_cell_s, self.ncpu = max_pct, budget_s, per_cell_s, ncpu

    def wait(self) -> None:
        started = time.monotonic()
        deadline = started + min(self.per_cell_s, self.budget_s)
        busy = 0.0
        while True:
            b0, t0 = system_jiffies()
            time.sleep(0.5)
            b1, t1 = system_jiffies()
            busy = 100.0 * self.ncpu * (b1 - b0) / max(1, t1 - t0)
            if busy <= self.max_pct or time.monotonic() >= deadline:
                break
        waited = time.monotonic() - started
        if waited > 1.0:
            self.budget_s = max(0.0, self.budget_s - waited)
            print(
                f"[bench] waited {waited:.0f} s for other load to settle (now {busy:.0f}% of a core)",
                flush=True,
            )


class BigClient:
    """`wrk -t1 -c1` posting the 100 KB body back to back, for a fixed time, started before the cell."""

    def __init__(self, url: str, script: Path, seconds: float) -> None:
        argv = [
            "wrk",
            "-t1",
            "-c1",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def ticks(self) -> dict[ProcKey, int]:
        return cpu_ticks(self.proc.pid)

    def result(self, timeout_s: float) -> loadgen.LoadResult:
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise loadgen.LoadError("the 100 KB client did not finish") from None
        return loadgen.parse_wrk(out.decode(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def measure(
    system: str,
    workload: str,
    repeat: int,
    load: Callable[[float], loadgen.LoadResult],
    seconds: float,
    server_ticks: Callable[[], dict[ProcKey, int]],
    backend: ManagedProcess | None,
    admin_port: int | None,
    big: Callable[[], BigClient] | None = None,
) -> Sample:
    """One timed run: snapshots of CPU (and of screening metrics) around the load."""
    client = big() if big is not None else None
    try:
        if client is not None:
            time.sleep(0.5)  # its first big requests are in flight when the measured window opens
        m0 = scrape(admin_port) if admin_port else None
        g0, e0 = server_ticks(), client.ticks() if client else {}
        b0, (s0, _) = backend.cpu_ticks() if backend else {}, system_jiffies()
        start = time.monotonic()
        result = load(seconds)
        wall = time.monotonic() - start
        g1, e1 = server_ticks(), client.ticks() if client else {}
        b1, (s1, _) = backend.cpu_ticks() if backend else {}, system_jiffies()
        m1 = scrape(admin_port) if admin_port else None
        big_result = client.result(seconds + 30) if client else None
    finally:
        if client is not None:
            client.stop()
    n = max(1, result.requests)
    server, backend_s, extra = cpu_seconds(g0, g1), cpu_seconds(b0, b1), cpu_seconds(e0, e1)
    others = (s1 - s0) / CLK_TCK - server - backend_s - extra - result.tool_cpu_s
    screening = decisions = None
    if m0 is not None and m1 is not None and m1.duration.count > m0.duration.count:
        screening = m1.duration.minus(m0.duration)
        decisions = {k: v - m0.decisions.get(k, 0.0) for k, v in m1.decisions.items()}
    sample = Sample(
        system=system + ("+big" if client else ""),
        workload=workload,
        repeat=repeat,
        requests=result.requests,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        non2xx=result.non2xx,
        socket_errors=result.socket_errors,
        cpu_us=1e6 * server / n,
        backend_cpu_us=1e6 * backend_s / n if backend else None,
        others_pct=max(0.0, 100 * others / wall),
        screening=screening,
        decisions={k: v for k, v in (decisions or {}).items() if v},
        big_requests=big_result.requests if big_result else 0,
        big_non2xx=big_result.errors if big_result else 0,
        big_p99_ms=big_result.p99_ms if big_result else float("nan"),
    )
    print(_line(sample), flush=True)
    return sample


def _line(s: Sample) -> str:
    text = (
        f"[bench]   {s.system:10} {s.workload:5} {s.rps:8,.0f} req/s  p50 {s.p50_ms:6.2f} ms  "
        f"p99 {s.p99_ms:6.2f} ms  cpu {s.cpu_us:6.1f} us/req  others {s.others_pct:3.0f}%"
    )
    if s.screening is not None:
        text += (
            f"  screening p99<={1e3 * s.screening.quantile_bound(0.99):.2f} ms "
            f"mean {1e6 * s.screening.mean:.0f} us"
        )
    if s.big_requests:
        text += f"  100KB: {s.big_requests} req p99 {s.big_p99_ms:.1f} ms"
    errors = s.non2xx + s.socket_errors + s.big_non2xx
    return text + (f"  ERRORS {errors}" if errors else "")
