"""The load generators: wrk for HTTP/1.1 REST, h2load for gRPC straight to the backend.

Owns finding (and, as root, installing) the Debian tools, running one timed load against a URL on
127.0.0.1, and parsing what the tool prints into one `LoadResult`. While a tool runs, an optional
`on_tick` callback is called about twice a second, so the caller can sample the memory of the
process under load. The CPU the tool itself spent comes from `getrusage(RUSAGE_CHILDREN)`: the
tool is the only child reaped while it runs.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

WRK_THREADS = 2
H2_THREADS = 1
H2_STREAMS = 1
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
_APT_PACKAGES = ("wrk", "nghttp2-client")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class LoadError(RuntimeError):
    """A load generator is missing, failed, or printed something we cannot parse."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One timed load: what the tool counted and how long its requests took."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    tool_cpu_s: float
    raw: str

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket (or stream) errors; a valid cell has none."""
        return self.non2xx + self.socket_errors


def _missing_tools() -> list[str]:
    return [tool for tool in ("wrk", "h2load", "nghttp") if shutil.which(tool) is None]


def ensure_tools() -> None:
    """Make sure wrk, h2load and nghttp exist: as root, apt-get install them (update only on failure)."""
    if not _missing_tools():
        return
    if os.geteuid() != 0:
        raise LoadError(
            f"missing {', '.join(_missing_tools())}: apt-get install -y {' '.join(_APT_PACKAGES)}"
        )
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *_APT_PACKAGES]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"[bench] installing {' '.join(_APT_PACKAGES)}")
    if subprocess.run(install, check=False, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    if _missing_tools():
        raise LoadError(f"still missing after apt-get install: {', '.join(_missing_tools())}")


def tool_versions() -> dict[str, str]:
    """First line of `wrk -v` and `h2load --version`, for the report."""
    out: dict[str, str] = {}
    for tool, argv in (("wrk", ["wrk", "-v"]), ("h2load", ["h2load", "--version"])):
        proc = subprocess.run(argv, check=False, capture_output=True, text=True)
        first = (proc.stdout or proc.stderr).strip().splitlines()
        out[tool] = first[0].split(" Copyright")[0] if first else "?"
    return out


def _run(argv: Sequence[str], seconds: float, on_tick: Callable[[], None] | None) -> tuple[str, float]:
    """Run a load tool to completion; return its output and the CPU seconds it spent."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds + 60
    try:
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise LoadError(f"{argv[0]} did not finish within {seconds + 60:.0f} s") from None
                if on_tick is not None:
                    on_tick()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise LoadError(f"{' '.join(argv)} exited {proc.returncode}:\n{out[-2000:]}")
    return out, cpu


def wrk_argv(url: str, conns: int, seconds: float, script: Path | None) -> list[str]:
    """The wrk command line; identical for every gateway but for the URL."""
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{conns}", f"-d{seconds:g}s", "--latency"]
    if script is not None:
        argv += ["-s", str(script)]
    return [*argv, url]


def run_wrk(
    url: str,
    conns: int,
    seconds: float,
    script: Path | None = None,
    on_tick: Callable[[], None] | None = None,
) -> LoadResult:
    """Load `url` with wrk for `seconds` and parse the result."""
    out, cpu = _run(wrk_argv(url, conns, seconds, script), seconds, on_tick)
    return parse_wrk(out, cpu)


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def parse_wrk(text: str, tool_cpu_s: float = 0.0) -> LoadResult:
    """Parse `wrk --latency` output (requests, req/s, percentiles, non-2xx and socket errors)."""
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if done is None or rps is None:
        raise LoadError(f"cannot parse wrk output:\n{text[-2000:]}")
    pct = {
        p: _ms(v, u)
        for p, v, u in re.findall(r"^\s+(50|99)\.?0*%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    }
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return LoadResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2), done.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=pct.get("50", float("nan")),
        p99_ms=pct.get("99", float("nan")),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        tool_cpu_s=tool_cpu_s,
        raw=text,
    )


def h2load_argv(url: str, conns: int, seconds: float, data: Path, log_file: Path | None) -> list[str]:
    """The h2load command line for unary gRPC: one pre-encoded request frame, `-m1` streams."""
    argv = [
        "h2load",
        f"-t{H2_THREADS}",
        f"-c{conns}",
        f"-m{H2_STREAMS}",
        "-D",
        f"{seconds:g}",
        "-d",
        str(data),
    ]
    for header in GRPC_HEADERS:
        argv += ["-H", header]
    if log_file is not None:
        argv.append(f"--log-file={log_file}")
    return [*argv, url]


def run_h2load(
    url: str, conns: int, seconds: float, data: Path, on_tick: Callable[[], None] | None = None
) -> LoadResult:
    """Load a gRPC method with h2load; percentiles come from its per-request log."""
    with tempfile.TemporaryDirectory(prefix="portcullis-h2load-") as tmp:
        log_file = Path(tmp) / "requests.log"
        out, cpu = _run(h2load_argv(url, conns, seconds, data, log_file), seconds, on_tick)
        log = log_file.read_text() if log_file.exists() else ""
    return parse_h2load(out, log, cpu)


def _quantile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def parse_h2load(text: str, log: str, tool_cpu_s: float = 0.0) -> LoadResult:
    """Parse h2load's summary and its `--log-file` lines (start, HTTP status, latency in µs)."""
    fin = re.search(r"finished in ([\d.]+)(us|ms|s|m|h), ([\d.]+) req/s", text)
    reqs = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    if fin is None or reqs is None:
        raise LoadError(f"cannot parse h2load output:\n{text[-2000:]}")
    latencies: list[int] = []
    non2xx = 0
    for line in log.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            if not parts[1].startswith("2"):
                non2xx += 1
            latencies.append(int(parts[2]))
    latencies.sort()
    return LoadResult(
        requests=int(reqs.group(3)),
        seconds=_ms(fin.group(1), fin.group(2)) / 1000.0,
        rps=float(fin.group(3)),
        p50_ms=_quantile(latencies, 0.50) / 1000.0,
        p99_ms=_quantile(latencies, 0.99) / 1000.0,
        non2xx=non2xx,
        socket_errors=int(reqs.group(5)) + int(reqs.group(6)) + int(reqs.group(7)),
        tool_cpu_s=tool_cpu_s,
        raw=text,
    )


def grpc_status(url: str, data: Path) -> str:
    """The grpc-status one request gets (h2load only sees HTTP 200, never the trailers)."""
    argv = ["nghttp", "-v", "-d", str(data)]
    for header in GRPC_HEADERS:
        argv += ["-H", header]
    proc = subprocess.run(
        [*argv, url], check=False, capture_output=True, text=True, errors="replace", timeout=30
    )
    match = re.search(r"grpc-status: (\d+)", proc.stdout)
    return match.group(1) if match else f"none (nghttp exited {proc.returncode})"
