"""How a demo backend runs: one grpc.aio server from bind to drain.

Owns the life of one demo server, which stands where a real backend would, behind the gateway's
upstream channels. `start_server` binds, registers the demo servicers next to grpc.health.v1 (SERVING
for "" and each demo service) and server reflection, and starts; `RunningServer.stop` marks every
service NOT_SERVING before it drains, so a health-watching gateway stops routing first. `run_main` is
the `python -m tests.support.<backend>` entry point: serve until SIGINT or SIGTERM, then stop
gracefully. The servicers themselves live in `echo_backend` and `library_backend`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

# Adds the demo servicers to a server that has not started yet.
Register = Callable[[grpc.aio.Server], None]

# grpc turns SO_REUSEPORT on by default, so a second backend on a taken port would share it silently
# and split the traffic; a demo backend must fail to bind instead.
_SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A started demo server; `address` is what a client dials (the bound port, never 0)."""

    server: grpc.aio.Server
    port: int
    address: str
    health: health.aio.HealthServicer

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, then refuse new RPCs and give running ones `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(address: str, register: Register, service_names: Sequence[str]) -> RunningServer:
    """Bind `address` (port 0 picks a free one), register everything, start serving."""
    server = grpc.aio.server(options=_SERVER_OPTIONS)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    # add_insecure_port raises RuntimeError when the address cannot be bound.
    port = server.add_insecure_port(address)
    await server.start()
    host = address.rpartition(":")[0]
    return RunningServer(server=server, port=port, address=f"{host}:{port}", health=health_servicer)


async def _serve_until_signal(
    start: Callable[[str], Awaitable[RunningServer]], address: str, grace: float
) -> None:
    running = await start(address)
    log.info("serving on %s (grpc %s)", running.address, grpc.__version__)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("draining for up to %.1f s", grace)
    await running.stop(grace)


def run_main(
    description: str,
    default_address: str,
    start: Callable[[str], Awaitable[RunningServer]],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse `--address` and `--grace`, then serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--address", default=default_address, help=f"host:port to listen on (default {default_address})"
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds running RPCs get to finish on shutdown (default 5)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve_until_signal(start, args.address, args.grace))
