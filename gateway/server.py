"""Serving: one worker's event loop (the supervisor that runs N of them is `gateway/supervisor.py`).

A worker builds its runtime and apps, binds the public listener (SO_REUSEPORT when there are
several workers) and, in worker 0 only, the admin listener. On SIGTERM or SIGINT it stops accepting,
lets in-flight requests finish for up to `shutdown_grace_s`, then closes its channels. Workers are
spawned, not forked: gRPC's core does not survive a fork after it started threads. SIGHUP reloads
the config file and the TLS certificate (the supervisor forwards it to every worker). With several
workers the supervisor gives them one fresh Prometheus multiprocess directory, removed at exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway import metrics_registry
from gateway.app import build_apps, own_paths, public_handler
from gateway.config import ConfigError, GatewayConfig
from gateway.http1 import Front
from gateway.keys import SOCKETS
from gateway.lifecycle import GatewayState
from gateway.listener import ConnectionGuard, Listener
from gateway.runtime import build_runtime
from gateway.tls import CertificateReloader, server_context

log = logging.getLogger("portcullis.server")

# "0" turns the lean HTTP/1.1 server off: aiohttp then serves every request (to compare, or as an escape hatch).
LEAN_HTTP_ENV = "PORTCULLIS_LEAN_HTTP"


@dataclass
class Serving:
    """One worker's listeners and state, started; `stop` drains and closes them in reverse order."""

    state: GatewayState
    listeners: list[Listener]
    public_port: int
    admin_port: int | None
    certificates: CertificateReloader | None

    @property
    def inference_grpc_port(self) -> int | None:
        """The bound port of the gRPC inference listener (opened with the state); None without one."""
        return self.state.inference.grpc_port if self.state.inference is not None else None

    async def stop(self) -> None:
        for listener in reversed(self.listeners):
            await listener.stop()

    async def reload(self) -> None:
        """SIGHUP: the config file and the TLS certificate, each kept as is when the new one is bad."""
        if self.certificates is not None:
            self.certificates.reload()
        if self.state.config_path is not None:
            try:
                await self.state.reload()
            except (ConfigError, ValueError, OSError) as exc:
                log.error("reload refused, the current config keeps serving:\n%s", exc)


async def start_serving(
    config: GatewayConfig, config_path: Path | None = None, index: int = 0, reuse_port: bool = False,
    lean: bool | None = None,
) -> Serving:
    """Start one worker's listeners. `lean` puts the lean HTTP/1.1 server in front of aiohttp on the
    public listener (`gateway/http1.py`); by default it is on unless `PORTCULLIS_LEAN_HTTP=0`."""
    runtime = await asyncio.to_thread(build_runtime, config)  # reflection blocks: keep it off the loop
    state = GatewayState(runtime, config_path)
    public, admin = build_apps(state)
    certificates = None
    ssl_context = None
    if config.listen.tls is not None:
        ssl_context = server_context(config.listen.tls)
        certificates = CertificateReloader(config.listen.tls, ssl_context)
    limits = config.server
    runner = web.AppRunner(
        public,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=limits.shutdown_grace_s,
        keepalive_timeout=limits.idle_timeout_s,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.request_handler = public_handler(public, runner.server.request_handler)
    metrics_registry.count_connections(runner)
    if lean is None:
        lean = os.environ.get(LEAN_HTTP_ENV, "1") != "0"
    front = Front(state, runner.server, own_paths(public), limits) if lean else None
    public_listener = Listener(
        runner, ConnectionGuard(limits.max_connections, limits.header_timeout_s), public[SOCKETS].shutdown,
        front, limits.shutdown_grace_s,
    )
    public_port = await public_listener.start(
        config.listen.host, config.listen.port, ssl_context, reuse_port
    )
    listeners = [public_listener]
    admin_port = None
    if index == 0:
        admin_runner = web.AppRunner(admin, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await admin_runner.setup()
        admin_listener = Listener(admin_runner, ConnectionGuard(256, limits.header_timeout_s))
        admin_port = await admin_listener.start(config.admin.host, config.admin.port, None, reuse_port)
        listeners.insert(0, admin_listener)
    return Serving(state, listeners, public_port, admin_port, certificates)


async def run_worker(
    config: GatewayConfig, config_path: Path | None = None, index: int = 0, reuse_port: bool = False
) -> None:
    serving = await start_serving(config, config_path, index, reuse_port)
    # Everything start-up made (modules, descriptor pools, routes, models) lives as long as the
    # worker: out of the collector's sight it is not traversed again by every full collection, which
    # otherwise stops the loop for 45-70 ms a few times a second under load (the p99 of a saturated
    # worker; measured with gc.callbacks). Start-up's own garbage is collected first.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheme = "https" if config.listen.tls is not None else "http"
    # One parseable line per worker: tests and scripts wait for it and read the ports from it.
    print(
        f"portcullis: worker {index} pid {os.getpid()} serving {scheme}://{config.listen.host}:{serving.public_port}"
        + (f" admin http://{config.admin.host}:{serving.admin_port}" if serving.admin_port is not None else "")
        + (f" inference-grpc {config.inference.grpc_listen.host}:{serving.inference_grpc_port}"
           if config.inference is not None and config.inference.grpc_listen is not None
           and serving.inference_grpc_port is not None else ""),
        flush=True,
    )
    async with asyncio.TaskGroup() as group:
        loop.add_signal_handler(signal.SIGHUP, lambda: group.create_task(serving.reload()))
        if serving.certificates is not None:
            watcher = group.create_task(serving.certificates.watch_forever())
        else:
            watcher = None
        await stop.wait()
        loop.remove_signal_handler(signal.SIGHUP)
        if watcher is not None:
            watcher.cancel()
    log.info("worker %d stopping: draining for up to %.1fs", index, config.server.shutdown_grace_s)
    await serving.stop()


def event_loop_run(coro: object) -> None:
    """Run a worker's coroutine on uvloop when it is installed."""
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


