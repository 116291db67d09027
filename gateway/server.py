"""Serving: one worker's event loop, and the supervisor that runs N of them on one port.

A worker builds its runtime and apps, binds the public listener (SO_REUSEPORT when there are
several workers) and, in worker 0 only, the admin listener. On SIGTERM or SIGINT it stops accepting,
lets in-flight requests finish for up to `shutdown_grace_s`, then closes its channels. Workers are
spawned, not forked: gRPC's core does not survive a fork after it started threads.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from gateway.app import build_apps
from gateway.config import GatewayConfig, load_config
from gateway.runtime import build_runtime

log = logging.getLogger("portcullis.server")


async def run_worker(config: GatewayConfig, index: int = 0, reuse_port: bool = False) -> None:
    runtime = await asyncio.to_thread(build_runtime, config)  # reflection blocks: keep it off the loop
    public, admin = build_apps(runtime)
    grace = config.server.shutdown_grace_s
    runner = web.AppRunner(public, access_log=None, handle_signals=False, shutdown_timeout=grace)
    await runner.setup()
    site = web.TCPSite(runner, config.listen.host, config.listen.port, reuse_port=reuse_port, backlog=1024)
    await site.start()
    runners = [runner]
    admin_port = None
    if index == 0:
        admin_runner = web.AppRunner(admin, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await admin_runner.setup()
        admin_site = web.TCPSite(admin_runner, config.admin.host, config.admin.port, reuse_port=reuse_port)
        await admin_site.start()
        runners.insert(0, admin_runner)
        admin_port = _port(admin_runner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # One parseable line per worker: tests and scripts wait for it and read the ports from it.
    print(
        f"portcullis: worker {index} pid {os.getpid()} serving http://{config.listen.host}:{_port(runner)}"
        + (f" admin http://{config.admin.host}:{admin_port}" if admin_port is not None else ""),
        flush=True,
    )
    await stop.wait()
    log.info("worker %d stopping: draining for up to %.1fs", index, grace)
    for r in runners:
        await r.cleanup()


def _port(runner: web.AppRunner) -> int:
    addresses = runner.addresses
    return int(addresses[0][1]) if addresses else 0


def _event_loop_run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def _worker_main(config_path: str, index: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(config_path)
    _event_loop_run(run_worker(config, index, reuse_port=True))


def serve(config_path: Path, workers: int | None = None) -> int:
    config = load_config(config_path)
    count = workers or config.server.workers
    if count == 1:
        _event_loop_run(run_worker(config))
        return 0
    if config.listen.port == 0:
        raise SystemExit("portcullis: --workers > 1 needs a fixed listen port")
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_worker_main, args=(str(config_path), i), daemon=False) for i in range(count)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for proc in procs:
        proc.join()
        code = code or (proc.exitcode or 0)
    return max(code, 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(serve(Path(sys.argv[1])))
