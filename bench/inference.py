"""Inference benchmark: the `digits` demo model at batch 1 from 64 clients, dynamic batching on vs off.

    .venv/bin/python -m bench.inference

One run measures both configurations of the same gateway (`portcullis serve`, one worker, the
committed `models/digits/1`): dynamic batching on (the model's manifest: up to 64 rows, 500 µs queue
delay) and off (`inference.models.digits.dynamic_batching.enabled: false`); everything else equal,
one model instance (one run at a time) in both. wrk posts the protocol's JSON request (one row of
64 pixels, JSON outputs) to `/v2/models/digits/infer` over 64 connections; cells alternate between
the two configurations, the order reversed on every other repeat, and the medians are reported.
Before measuring, a gateway must answer one request with the label onnxruntime gives the same row.
Per cell: requests per second, p50 and p99 from wrk, gateway CPU per request from /proc, and the
mean rows per onnxruntime run from the gateway's `portcullis_inference_*` counters.

Writes its own section of `docs/benchmarks.md`, between `<!-- inference:start -->` and
`<!-- inference:end -->` (appended the first time), leaving the rest of the file as it is.
Knobs: BENCH_INFERENCE_SECONDS (8), BENCH_INFERENCE_WARMUP (2), BENCH_INFERENCE_REPEATS (3),
BENCH_INFERENCE_CONNS (64).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.loadgen import LoadResult, ensure_tools, run_wrk, tool_versions
from bench.procs import HOST, ManagedProcess, cpu_seconds, free_port
from bench.reporting import replace_section

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models"
REPORT = REPO / "docs" / "benchmarks.md"
START, END = "<!-- inference:start -->", "<!-- inference:end -->"
TARGET = 3.0
MODES = ("on", "off")


@dataclass(frozen=True, slots=True)
class Settings:
    seconds: float = float(os.environ.get("BENCH_INFERENCE_SECONDS", "8"))
    warmup: float = float(os.environ.get("BENCH_INFERENCE_WARMUP", "2"))
    repeats: int = int(os.environ.get("BENCH_INFERENCE_REPEATS", "3"))
    conns: int = int(os.environ.get("BENCH_INFERENCE_CONNS", "64"))


@dataclass(frozen=True, slots=True)
class Cell:
    mode: str
    repeat: int
    load: LoadResult
    cpu_us_per_request: float
    rows_per_run: float


def row() -> np.ndarray:
    """One fixed 8x8 digit-like image (0..16), the same for every request."""
    return (np.arange(64, dtype=np.float32) * 7 % 17).reshape(1, 64)


def body() -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                   "data": row().reshape(-1).tolist()}],
                       "outputs": [{"name": "label"}, {"name": "probabilities"}]}).encode()


def config(port: int, admin: int, batching: bool) -> dict[str, Any]:
    inference: dict[str, Any] = {"models_dir": str(MODEL_DIR), "load": ["digits"]}
    if not batching:
        inference["models"] = {"digits": {"dynamic_batching": {"enabled": False}}}
    return {
        "listen": {"host": HOST, "port": port}, "admin": {"host": HOST, "port": admin}, "server": {"workers": 1},
        # The gateway needs one transcoded service to start; nothing here calls it.
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": [f"{HOST}:{free_port()}"], "health": {"enabled": False}}},
        "services": {"echo.v1.EchoService": {"backend": "echo"}},
        "inference": inference,
    }


def start(run_dir: Path, mode: str) -> tuple[ManagedProcess, int, int]:
    port, admin = free_port(), free_port()
    path = run_dir / f"inference-batching-{mode}.yaml"
    path.write_text(yaml.safe_dump(config(port, admin, mode == "on"), sort_keys=False))
    argv = [str(REPO / ".venv" / "bin" / "portcullis"), "serve", "-c", str(path)]
    proc = ManagedProcess(f"inference-{mode}", argv, run_dir / f"inference-{mode}.log", cwd=REPO).start()
    proc.wait_port(port, 60)
    return proc, port, admin


def check(port: int) -> None:
    """One request must answer with the label onnxruntime gives the same row."""
    import onnxruntime as ort

    request = urllib.request.Request(f"http://{HOST}:{port}/v2/models/digits/infer", data=body(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        doc = json.loads(response.read())
    session = ort.InferenceSession(str(MODEL_DIR / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = int(session.run(["label"], {"input": row()})[0][0])
    got = doc["outputs"][0]["data"][0]
    if got != expected:
        raise SystemExit(f"inference check failed: label {got}, onnxruntime says {expected}")


def counters(admin: int) -> tuple[float, float]:
    """(rows inferred, onnxruntime runs) of digits/1 so far."""
    with urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=10) as response:
        text = response.read().decode()

    def value(name: str) -> float:
        found = re.search(rf'^{name}\{{model="digits",version="1"\}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return value("portcullis_inference_count_total"), value("portcullis_inference_exec_count_total")


def measure(mode: str, repeat: int, settings: Settings, run_dir: Path, script: Path) -> Cell:
    proc, port, admin = start(run_dir, mode)
    try:
        check(port)
        url = f"http://{HOST}:{port}/v2/models/digits/infer"
        run_wrk(url, settings.conns, settings.warmup, script)
        rows0, runs0 = counters(admin)
        cpu0 = proc.cpu_ticks()
        load = run_wrk(url, settings.conns, settings.seconds, script)
        cpu1 = proc.cpu_ticks()
        rows1, runs1 = counters(admin)
    finally:
        proc.stop()
    cpu = cpu_seconds(cpu0, cpu1) / max(load.requests, 1) * 1e6
    rows_per_run = (rows1 - rows0) / max(runs1 - runs0, 1)
    print(f"[bench] inference batching {mode} #{repeat}: {load.rps:,.0f} req/s, p99 {load.p99_ms:.2f} ms, "
          f"{rows_per_run:.1f} rows/run, {load.errors} errors")
    return Cell(mode, repeat, load, cpu, rows_per_run)


def _median(cells: list[Cell], key: str) -> float:
    values = [getattr(c.load, key) if hasattr(c.load, key) else getattr(c, key) for c in cells]
    return statistics.median(values)


def render(settings: Settings, cells: list[Cell], began: datetime, minutes: float, load: str) -> str:
    by = {mode: [c for c in cells if c.mode == mode] for mode in MODES}
    rps = {mode: _median(by[mode], "rps") for mode in MODES}
    ratio = rps["on"] / rps["off"] if rps["off"] else float("nan")
    errors = sum(c.load.errors for c in cells)
    verdict = "PASS" if ratio >= TARGET and errors == 0 else "FAIL"
    versions = tool_versions()
    lines = [
        START,
        "## Model inference (issue 5)",
        "",
        (f"Written by `.venv/bin/python -m bench.inference` on {began:%Y-%m-%d %H:%M} UTC (run {minutes:.1f} min); "
         f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {versions.get('wrk', 'wrk')}, "
         f"load average at start {load} (a shared machine)."),
        "",
        ("The `digits` demo model (scikit-learn StandardScaler -> PolynomialFeatures(2) -> LogisticRegression, "
         "one ONNX graph of ~4,300 nodes, about 1 ms per run at any batch size up to 64) served by one "
         "Portcullis worker; wrk posts one row of 64 pixels as a JSON request (JSON outputs) to "
         f"`/v2/models/digits/infer` over {settings.conns} connections for {settings.seconds:g} s after a "
         f"{settings.warmup:g} s warm-up, {settings.repeats} repeats per configuration, alternating. Dynamic "
         "batching on: the manifest's settings (up to 64 rows per run, 500 µs queue delay); off: every "
         "request runs alone. One model instance (one onnxruntime run at a time) in both."),
        "",
        (f"**Throughput, batching on ÷ off** (target ≥ {TARGET:g}×): {rps['on']:,.0f} ÷ {rps['off']:,.0f} req/s = "
         f"**{ratio:.2f}×** — {verdict}" + (f" ({errors} failed requests)" if errors else "")),
        "",
        "| dynamic batching | req/s | p50 ms | p99 ms | rows per run | gateway CPU µs/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        cells_of = by[mode]
        lines.append(
            f"| {mode} | {rps[mode]:,.0f} | {_median(cells_of, 'p50_ms'):.2f} | {_median(cells_of, 'p99_ms'):.2f} | "
            f"{_median(cells_of, 'rows_per_run'):.1f} | {_median(cells_of, 'cpu_us_per_request'):.0f} | "
            f"{sum(c.load.errors for c in cells_of)} |"
        )
    lines += ["", "Every cell (in the order run):", "",
              "| # | batching | req/s | p99 ms | rows per run |", "|---:|---|---:|---:|---:|"]
    for n, c in enumerate(cells, 1):
        lines.append(f"| {n} | {c.mode} | {c.load.rps:,.0f} | {c.load.p99_ms:.2f} | {c.rows_per_run:.1f} |")
    lines.append(END)
    return "\n".join(lines)


def write_section(section: str, path: Path = REPORT) -> None:
    """Replace this benchmark's section of the report (or append it), keeping everything else."""
    replace_section(path, START, END, section)


def main() -> int:
    settings = Settings()
    ensure_tools()
    began, t0 = datetime.now(UTC), time.monotonic()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-inference-") as tmp:
        run_dir = Path(tmp)
        script = run_dir / "infer.lua"
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                          f"wrk.body = {json.dumps(body().decode())}\n")
        for repeat in range(settings.repeats):
            order = MODES if repeat % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                cells.append(measure(mode, repeat, settings, run_dir, script))
    section = render(settings, cells, began, (time.monotonic() - t0) / 60, load)
    write_section(section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
