"""`python -m bench.h2_micro`: CPU per unary call of each upstream client, in-process, against the Go backend.

Owns one measurement: the peer's Go echo backend is started on a free 127.0.0.1 port (and stopped
by its PID at the end), then each client makes N unary Echo calls at concurrency C from this one
uvloop process, and the process CPU time (`time.process_time`, every thread: grpc's poller
included) is divided by N. Clients: `GrpcUpstream` with 1 and 4 channels (grpc.aio) and `H2Upstream`
(the lean client) with 1 and 2 connections. Each figure is the median of R runs, the clients taken
in turn within a run so that drift on a shared machine spreads over all of them.

  .venv/bin/python -m bench.h2_micro [--calls 20000] [--concurrency 16] [--runs 3] [--backend PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import protos

protos.add_generated_path()

from echo.v1 import echo_pb2

from gateway.config import BackendConfig
from gateway.upstream import GrpcUpstream, Upstream
from gateway.upstreams.h2 import H2Upstream

GO_BACKEND = Path("/tmp/portcullis-peers/grpc-gateway/build/bin/backend")
RPC = "/echo.v1.EchoService/Echo"
# What the gateway forwards on an ordinary POST /v1/echo (see handlers/rest.upstream_metadata).
METADATA: list[tuple[str, str | bytes]] = [
    ("grpcgateway-content-type", "application/json"),
    ("grpcgateway-user-agent", "wrk"),
    ("x-forwarded-for", "127.0.0.1"),
    ("x-forwarded-host", "127.0.0.1:18090"),
    ("x-request-id", "0f8e6c1e-3a57-4d8e-9d6b-2f0d5c8a9b11"),
]
CLIENTS: dict[str, Callable[[str], Upstream]] = {
    "grpc.aio, 1 channel": lambda a: GrpcUpstream("echo", _backend(a, "grpcio", 1)),
    "grpc.aio, 4 channels": lambda a: GrpcUpstream("echo", _backend(a, "grpcio", 4)),
    "h2, 1 connection": lambda a: H2Upstream("echo", _backend(a, "h2", 1)),
    "h2, 2 connections": lambda a: H2Upstream("echo", _backend(a, "h2", 2)),
}


def _backend(address: str, client: str, channels: int) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "addresses": [address],
            "client": client,
            "channels_per_address": channels,
            "health": {"enabled": False},
        }
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"backend exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"backend did not listen on {port}")


async def _run(upstream: Upstream, calls: int, concurrency: int, body: bytes) -> tuple[float, float]:
    """(CPU µs per call, wall µs per call) for `calls` unary calls, `concurrency` at a time."""
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await upstream.unary(RPC, body, METADATA, 5.0)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = per_worker * concurrency
    return cpu / done * 1e6, wall / done * 1e6


async def _measure(
    address: str, calls: int, concurrency: int, runs: int
) -> dict[str, list[tuple[float, float]]]:
    body = echo_pb2.EchoRequest(message="hello world", repeat=1).SerializeToString()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    upstreams = {name: make(address) for name, make in CLIENTS.items()}
    try:
        for name, upstream in upstreams.items():  # connect and warm every client once
            await _run(upstream, 2000, concurrency, body)
        for run in range(runs):
            order = list(upstreams.items())
            if run % 2:
                order.reverse()
            for name, upstream in order:
                results[name].append(await _run(upstream, calls, concurrency, body))
                print(f"  run {run + 1} {name:22} {results[name][-1][0]:6.1f} µs CPU/call", file=sys.stderr)
    finally:
        for upstream in upstreams.values():
            await upstream.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", type=Path, default=GO_BACKEND, help="the Go echo backend binary")
    args = parser.parse_args(argv)
    port = _free_port()
    proc = subprocess.Popen(
        [str(args.backend), "-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, proc)
        try:
            import uvloop

            results = uvloop.run(_measure(f"127.0.0.1:{port}", args.calls, args.concurrency, args.runs))
        except ImportError:
            results = asyncio.run(_measure(f"127.0.0.1:{port}", args.calls, args.concurrency, args.runs))
    finally:
        os.kill(proc.pid, signal.SIGTERM)  # by PID: only the backend this script started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    print(
        f"\n{args.calls} unary Echo calls, concurrency {args.concurrency}, median of {args.runs} runs (uvloop)"
    )
    print(f"{'client':24} {'CPU µs/call':>12} {'wall µs/call':>13}")
    for name, samples in results.items():
        cpu = statistics.median(s[0] for s in samples)
        wall = statistics.median(s[1] for s in samples)
        print(f"{name:24} {cpu:12.1f} {wall:13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
