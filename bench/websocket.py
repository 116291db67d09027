"""`python -m bench.websocket`: issue 4's benchmark, each figure through the gateway and against the
same backend directly, in the same run.

Owns the order of the run and the processes it starts, all on 127.0.0.1 and stopped by PID: the
Python echo backend (`tests.support.echo_backend`), the demo chat backend in echo mode
(`tests.support.chat_backend --echo`, each client its own room), one Portcullis `--workers 1`, and,
per measured cell, a load generator process (`bench/ws_clients.py`, asyncio on uvloop). Scenarios:

  passthrough  WebSocket ping-pong at `conns` connections: the chat backend directly, then through
               the gateway's passthrough route. Target: gateway msgs/s >= 60% of direct.
  bidi         EchoService.Chat at `conns` connections: direct grpc.aio bidi streams (one channel
               each), then WebSocket-to-gRPC through the gateway (one JSON frame per message).
  ndjson       StreamItems with a large count on `streams` concurrent streams: direct grpc.aio
               server streams, then NDJSON (`GET /v1/items:stream`) through the gateway.
  idle         `idle_conns` idle WebSockets held open for `idle_s` (passthrough, then gRPC Chat
               streams), each on a fresh gateway pinging both sides every `HEARTBEAT_S`: RSS before,
               per connection, and sampled every second over the hold, from two ping rounds after
               the sockets are open. Target: flat, i.e. RSS grows by at most max(1 MiB, 2%) from
               the first tenth of the samples to the last.

Direct and gateway cells alternate (the order reversed on every other repeat) and the median of the
repeats is reported; CPU is read from /proc for the gateway and for everything else on the machine
("others", in % of one core), since the box is shared. The report goes to stdout and into
`docs/benchmarks.md` between `<!-- websocket:start -->` and `<!-- websocket:end -->` (appended after
the optimisation log the first time, where `make bench` keeps it), read and rewritten at the end.

Knobs (environment): BENCH_QUICK=1 (short smoke run), BENCH_WS_DUR seconds per cell (15; quick 5),
BENCH_WS_WARM (3; quick 1), BENCH_WS_REPEATS (2; quick 1), BENCH_WS_CONNS (100), BENCH_WS_STREAMS
(4), BENCH_WS_IDLE_CONNS (1000), BENCH_WS_IDLE_S (300; quick 20), BENCH_WS_SCENARIOS
(passthrough,bidi,ndjson,idle), BENCH_OUTPUT (docs/benchmarks.md; "-" for stdout only).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.gateways import REPO_ROOT, portcullis_executable
from bench.procs import CLK_TCK, HOST, ManagedProcess, StartError, free_port, system_jiffies
from bench.reporting import command_line
from bench.settings import SettingsError, env_number, is_quick
from bench.ws_report import render, write_section

SCENARIOS = ("passthrough", "bidi", "ndjson", "idle")
CHAT_PAYLOAD = '{"user":"bench","text":"hello from the websocket benchmark, 64 bytes or so"}'
ECHO_MESSAGE = "hello from the websocket benchmark"
ITEMS_PER_STREAM = 1_000_000  # StreamItems count: a stream outlasts any measured window
# Pings both ways every 5 s (the default is 20 s), so that the idle hold spans many ping rounds; the
# first round allocates once (ping futures, timers), so RSS is judged from two rounds after the sockets open.
HEARTBEAT_S = 5.0
SETTLE_S = 2 * HEARTBEAT_S


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    duration_s: float
    warm_s: float
    repeats: int
    conns: int
    streams: int
    idle_conns: int
    idle_s: float
    scenarios: tuple[str, ...]
    output: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        quick = is_quick(env)

        def num(name: str, full: float, short: float) -> float:
            try:
                value = env_number(env, name, short if quick else full, 0)
            except SettingsError as exc:
                raise SystemExit(str(exc)) from None
            if value <= 0:
                raise SystemExit(f"{name}: must be positive")
            return value

        scenarios = tuple(s.strip() for s in env.get("BENCH_WS_SCENARIOS", ",".join(SCENARIOS)).split(",") if s.strip())
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise SystemExit(f"BENCH_WS_SCENARIOS: unknown {', '.join(sorted(unknown))}; known: {', '.join(SCENARIOS)}")
        return cls(
            quick, num("BENCH_WS_DUR", 15, 5), num("BENCH_WS_WARM", 3, 1), int(num("BENCH_WS_REPEATS", 2, 1)),
            int(num("BENCH_WS_CONNS", 100, 100)), int(num("BENCH_WS_STREAMS", 4, 4)),
            int(num("BENCH_WS_IDLE_CONNS", 1000, 1000)), num("BENCH_WS_IDLE_S", 300, 20), scenarios,
            env.get("BENCH_OUTPUT", str(REPO_ROOT / "docs" / "benchmarks.md")),
        )


@dataclass
class Cell:
    """One measured run of the load generator against one target."""

    scenario: str
    path: str  # "direct" or "gateway"
    result: dict[str, Any]
    gateway_cpu_s: float
    backend_cpu_s: float  # both backends: the one not in use idles
    others_pct: float

    @property
    def rate(self) -> float:
        return float(self.result.get("rate", 0.0))


class Rig:
    """The backends and the gateway of one run, and the load generator cells run against them."""

    def __init__(self, run_dir: Path, settings: Settings) -> None:
        self.dir = run_dir
        self.settings = settings
        self.echo_port, self.chat_port = free_port(), free_port()
        self.port, self.admin_port = free_port(), free_port()
        python = sys.executable
        self.echo = ManagedProcess("echo-backend", [python, "-m", "tests.support.echo_backend", "--address",
                                   f"{HOST}:{self.echo_port}"], run_dir / "echo-backend.log", cwd=REPO_ROOT)
        self.chat = ManagedProcess("chat-backend", [python, "-m", "tests.support.chat_backend", "--echo", "--address",
                                   f"{HOST}:{self.chat_port}"], run_dir / "chat-backend.log", cwd=REPO_ROOT)
        self.config = run_dir / "portcullis.yaml"
        self.config.write_text(yaml.safe_dump(self.gateway_config(), sort_keys=False))
        self.gateway = self._gateway("portcullis")
        self.cells = 0

    def _gateway(self, name: str) -> ManagedProcess:
        argv = [str(portcullis_executable()), "serve", "-c", str(self.config), "--workers", "1"]
        return ManagedProcess(name, argv, self.dir / f"{name}.log", cwd=REPO_ROOT)

    def restart_gateway(self, name: str) -> None:
        """A fresh gateway process, so that memory freed by earlier cells is not reused by the next."""
        self.gateway.stop()
        self.gateway = self._gateway(name)
        self.gateway.start()
        self.gateway.wait_port(self.port, 30)

    def gateway_config(self) -> dict[str, Any]:
        idle = max(3600.0, self.settings.idle_s * 2)  # nothing may time out during the idle hold
        return {
            "listen": {"host": HOST, "port": self.port},
            "admin": {"host": HOST, "port": self.admin_port},
            "server": {"workers": 1},
            "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
            "backends": {"echo": {"addresses": [f"{HOST}:{self.echo_port}"], "health": {"enabled": False}}},
            "services": {"echo.v1.EchoService": {"backend": "echo", "timeout_ms": 600_000}},
            "websocket": {"idle_timeout_s": idle, "max_duration_s": idle, "heartbeat_s": HEARTBEAT_S},
            "websocket_routes": [{
                "path": "/chat", "upstream": f"ws://{HOST}:{self.chat_port}/chat", "idle_timeout_s": idle,
                "heartbeat_s": HEARTBEAT_S,
                "max_connections_per_client": self.settings.idle_conns + self.settings.conns,
            }],
        }

    def start(self) -> None:
        for proc, port in ((self.echo, self.echo_port), (self.chat, self.chat_port), (self.gateway, self.port)):
            proc.start()
            proc.wait_port(port, 30)

    def stop(self) -> None:
        for proc in (self.gateway, self.chat, self.echo):
            proc.stop()

    def run_client(self, scenario: str, path: str, spec: dict[str, Any], timeout_s: float) -> Cell:
        """Run one load generator process to its end; the servers' CPU and the machine's are read when
        its measured window opens and closes (it writes a marker file at each)."""
        self.cells += 1
        name = f"{self.cells:02d}-{scenario}-{path}"
        spec_file, result_file = self.dir / f"{name}.json", self.dir / f"{name}.result.json"
        marks = self.dir / name
        spec = {**spec, "result_file": str(result_file), "marks": str(marks)}
        spec_file.write_text(json.dumps(spec))
        client = ManagedProcess(name, [sys.executable, "-m", "bench.ws_clients", str(spec_file)],
                                self.dir / f"{name}.log", cwd=REPO_ROOT)
        ours = [self.gateway, self.echo, self.chat]
        snaps: dict[str, tuple[list[dict[Any, int]], int, float]] = {}
        started = time.monotonic()
        client.start()
        try:
            while client.alive():
                for mark in ("start", "end"):
                    if mark not in snaps and Path(f"{marks}.{mark}").exists():
                        snaps[mark] = ([p.cpu_ticks() for p in ours], system_jiffies()[0], time.monotonic())
                if time.monotonic() - started > timeout_s:
                    raise StartError(f"{name} still running after {timeout_s:.0f} s:\n{client.log_tail()}")
                time.sleep(0.02)
        finally:
            client.stop()
        if not result_file.exists():
            raise StartError(f"{name} wrote no result:\n{client.log_tail()}")
        result = json.loads(result_file.read_text())
        if "error" in result:
            raise StartError(f"{name} failed: {result['error']}\n{client.log_tail()}")
        if len(snaps) != 2:
            raise StartError(f"{name}: the measured window was not seen opening and closing")
        (before, busy0, t0), (after, busy1, t1) = snaps["start"], snaps["end"]
        spent = [sum(a.values()) - sum(b.get(k, 0) for k in a) for a, b in zip(after, before)]
        ours_ticks = sum(spent) + result["client_cpu_s"] * CLK_TCK
        others_pct = max(0.0, (busy1 - busy0) - ours_ticks) / ((t1 - t0) * CLK_TCK) * 100
        return Cell(scenario, path, result, spent[0] / CLK_TCK, (spent[1] + spent[2]) / CLK_TCK, others_pct)


def ws_url(port: int, path: str) -> str:
    return f"ws://{HOST}:{port}{path}"


def message_cells(rig: Rig) -> list[Cell]:
    """The passthrough, bidi and ndjson cells of every repeat, direct and gateway alternating."""
    s = rig.settings
    timed = {"warm_s": s.warm_s, "measure_s": s.duration_s}
    chat_frame = json.dumps({"message": ECHO_MESSAGE})
    plans: dict[str, dict[str, dict[str, Any]]] = {
        "passthrough": {
            "direct": {"kind": "ws_echo", "url": ws_url(rig.chat_port, "/chat"), "payload": CHAT_PAYLOAD},
            "gateway": {"kind": "ws_echo", "url": ws_url(rig.port, "/chat"), "payload": CHAT_PAYLOAD},
        },
        "bidi": {
            "direct": {"kind": "grpc_bidi", "target": f"{HOST}:{rig.echo_port}", "message": ECHO_MESSAGE},
            "gateway": {"kind": "ws_echo", "url": ws_url(rig.port, "/ws/echo.v1.EchoService/Chat"),
                        "payload": chat_frame},
        },
        "ndjson": {
            "direct": {"kind": "grpc_stream", "target": f"{HOST}:{rig.echo_port}", "count": ITEMS_PER_STREAM},
            "gateway": {"kind": "ndjson", "url": f"http://{HOST}:{rig.port}/v1/items:stream?count={ITEMS_PER_STREAM}"},
        },
    }
    cells: list[Cell] = []
    for repeat in range(s.repeats):
        for scenario in (sc for sc in SCENARIOS if sc in s.scenarios and sc in plans):
            conns = s.streams if scenario == "ndjson" else s.conns
            order = ("direct", "gateway") if repeat % 2 == 0 else ("gateway", "direct")
            for path in order:
                spec = {**plans[scenario][path], **timed, "conns": conns}
                cell = rig.run_client(scenario, path, spec, s.warm_s + s.duration_s + 120)
                print(f"[bench.websocket] {scenario:<11} {path:<7} repeat {repeat + 1}: {cell.rate:>9,.0f} msg/s  "
                      f"p99 {cell.result['p99_ms']:.2f} ms  others {cell.others_pct:.0f}% of a core", flush=True)
                cells.append(cell)
    return cells


@dataclass
class IdleResult:
    kind: str
    conns: int
    open_s: float
    rss_before: int
    samples: list[tuple[float, int]]  # (seconds since all were open, gateway RSS)
    rss_after_close: int
    closed_under_us: int

    def _median_of(self, part: list[tuple[float, int]]) -> float:
        return statistics.median(r for _, r in part) if part else 0.0

    @property
    def rss_open(self) -> float:
        return self._median_of(self.samples[: max(1, len(self.samples) // 10)])

    @property
    def rss_end(self) -> float:
        return self._median_of(self.samples[-max(1, len(self.samples) // 10):])

    @property
    def per_connection(self) -> float:
        return (self.rss_open - self.rss_before) / self.conns

    @property
    def growth(self) -> float:
        return self.rss_end - self.rss_open

    @property
    def slope_mib_per_min(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        xs = [t for t, _ in self.samples]
        ys = [r / 2**20 for _, r in self.samples]
        return statistics.linear_regression(xs, ys).slope * 60

    @property
    def flat(self) -> bool:
        return self.closed_under_us == 0 and self.growth <= max(2**20, 0.02 * self.rss_open)


def idle_run(rig: Rig, kind: str) -> IdleResult:
    """Hold `idle_conns` idle sockets of one kind while sampling the gateway's RSS every second, on a
    fresh gateway warmed by a few sockets of the same kind (first-use allocations are not per socket)."""
    s = rig.settings
    rig.restart_gateway(f"portcullis-idle-{kind}")
    spec: dict[str, Any] = {"kind": "idle"}
    if kind == "passthrough":
        spec["url"] = ws_url(rig.port, "/chat")
    else:  # a gRPC Chat stream per socket, opened by one message and then left idle
        spec["url"] = ws_url(rig.port, "/ws/echo.v1.EchoService/Chat")
        spec["first_frame"] = json.dumps({"message": "open"})
    _hold(rig, f"idle-{kind}-warm", {**spec, "conns": 20, "hold_s": 1.0}, lambda _t: None)
    before = statistics.median(_rss_samples(rig, 3))
    samples: list[tuple[float, int]] = []
    result, open_s = _hold(
        rig, f"idle-{kind}", {**spec, "conns": s.idle_conns, "hold_s": s.idle_s},
        lambda t: samples.append((t, rig.gateway.rss_bytes())),
    )
    samples = [x for x in samples if min(SETTLE_S, s.idle_s / 2) <= x[0] <= s.idle_s]
    after = statistics.median(_rss_samples(rig, 3))
    (rig.dir / f"idle-{kind}-rss.json").write_text(json.dumps(samples))
    return IdleResult(kind, s.idle_conns, open_s, int(before), samples, int(after), int(result["errors"]))


def _hold(
    rig: Rig, label: str, spec: dict[str, Any], each_second: Callable[[float], None]
) -> tuple[dict[str, Any], float]:
    """Run one idle client to its end, calling `each_second` (seconds since all sockets were open)."""
    rig.cells += 1
    name = f"{rig.cells:02d}-{label}"
    ready = rig.dir / f"{name}.ready"
    spec = {**spec, "ready_file": str(ready), "result_file": str(rig.dir / f"{name}.result.json")}
    (rig.dir / f"{name}.json").write_text(json.dumps(spec))
    client = ManagedProcess(name, [sys.executable, "-m", "bench.ws_clients", str(rig.dir / f"{name}.json")],
                            rig.dir / f"{name}.log", cwd=REPO_ROOT)
    client.start()
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            if not client.alive() or time.monotonic() > deadline:
                raise StartError(f"{name}: the idle sockets did not open:\n{client.log_tail()}")
            time.sleep(0.2)
        opened = time.monotonic()
        while client.alive() and time.monotonic() - opened < spec["hold_s"] + 120:
            each_second(time.monotonic() - opened)
            time.sleep(1.0)
    finally:
        client.stop()
    result = json.loads((rig.dir / f"{name}.result.json").read_text())
    if "error" in result:
        raise StartError(f"{name} failed: {result['error']}")
    return result, float(ready.read_text())


def _rss_samples(rig: Rig, seconds: int) -> list[int]:
    out = []
    for _ in range(seconds):
        out.append(rig.gateway.rss_bytes())
        time.sleep(1.0)
    return out


def main() -> None:
    settings = Settings.from_env()
    run_dir = Path(tempfile.mkdtemp(prefix="portcullis-bench-ws-"))
    began = datetime.now(UTC)
    load_at_start = os.getloadavg()
    print(f"[bench.websocket] run folder {run_dir}", flush=True)
    rig = Rig(run_dir, settings)
    cells: list[Cell] = []
    idles: list[IdleResult] = []
    try:
        rig.start()
        cells = message_cells(rig)
        if "idle" in settings.scenarios:
            for kind in ("passthrough", "grpc"):
                result = idle_run(rig, kind)
                print(f"[bench.websocket] idle {kind}: {result.per_connection / 1024:.1f} KiB per connection, "
                      f"growth {result.growth / 2**20:+.2f} MiB over {settings.idle_s:.0f} s", flush=True)
                idles.append(result)
    finally:
        rig.stop()
    minutes = (datetime.now(UTC) - began).total_seconds() / 60
    text = render(settings, cells, idles, began, minutes, _machine(load_at_start), _command())
    print(text)
    if settings.output != "-":
        write_section(Path(settings.output), text)
        print(f"[bench.websocket] wrote the websocket section of {settings.output}")


def _machine(load: tuple[float, float, float]) -> str:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    return (f"{os.cpu_count()} CPUs (nproc), {model}, kernel {platform.release()}, Python "
            f"{platform.python_version()}, load average at start {' '.join(f'{x:.2f}' for x in load)}")


def _command() -> str:
    return command_line("bench.websocket", sorted(k for k in os.environ if k.startswith("BENCH_")))


if __name__ == "__main__":
    main()
