"""The `portcullis serve` entry: one worker in this process, or a supervisor that runs N of them.

With `--workers 1` this process is the worker (`gateway.server.run_worker`). With more, it only
spawns the workers, forwards SIGTERM, SIGINT and SIGHUP (reload) to them, gives them one fresh
Prometheus multiprocess directory (removed at exit) and marks each one dead in it when it exits. It
never serves, so it imports the config and the metrics registry, not the gateway: a supervisor that
imported `gateway.server` held ~125 MiB of modules it never used (~60 MiB now). Workers are spawned,
not forked: gRPC's core does not survive a fork after it started threads.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from pathlib import Path

from gateway.config import load_config

# Set in spawned workers: the admin reload endpoint then asks the supervisor, which forwards SIGHUP to all.
SUPERVISED_ENV = "PORTCULLIS_SUPERVISED"


def serve(config_path: Path, workers: int | None = None) -> int:
    config = load_config(config_path)
    count = workers or config.server.workers
    if count == 1:
        from gateway.server import event_loop_run, run_worker

        event_loop_run(run_worker(config, config_path))
        return 0
    if config.listen.port == 0:
        raise SystemExit("portcullis: --workers > 1 needs a fixed listen port")
    from gateway import metrics_registry

    with metrics_registry.worker_metrics_dir() as metrics_dir:
        return _supervise(config_path, count, metrics_dir)


def _worker_main(config_path: str, index: int) -> None:
    """A spawned worker's body (the child imports this module, then the gateway)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ[SUPERVISED_ENV] = "1"
    from gateway.server import event_loop_run, run_worker

    config = load_config(config_path)
    event_loop_run(run_worker(config, Path(config_path), index, reuse_port=True))


def _supervise(config_path: Path, count: int, metrics_dir: Path) -> int:
    """Spawn the workers (they inherit the metrics directory) and wait for them all."""
    from gateway import metrics_registry

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
    signal.signal(signal.SIGHUP, forward)  # reload: every worker re-reads the config
    code = 0
    for proc in procs:
        proc.join()
        metrics_registry.worker_exited(proc.pid, metrics_dir)
        code = code or (proc.exitcode or 0)
    return max(code, 0)
