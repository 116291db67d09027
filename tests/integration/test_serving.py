"""The `portcullis serve` process: graceful drain on SIGTERM and several workers on one port."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from .conftest import Backends, demo_config

pytestmark = pytest.mark.slow
READY = re.compile(rb"worker (\d+) pid (\d+) serving http://127\.0\.0\.1:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, url: str, workers: dict[int, int]) -> None:
        self.proc, self.url, self.workers = proc, url, workers
        self.admin = ""
        self.raw: dict = {}
        self.path = Path()


async def serve(tmp_path: Path, backends: Backends, workers: int = 1) -> Served:
    raw = demo_config(backends)
    return await serve_config(tmp_path, raw, workers)


async def serve_config(tmp_path: Path, raw: dict, workers: int = 1) -> Served:
    raw["listen"]["port"] = free_port()
    raw["admin"]["port"] = free_port()
    raw["server"] = {"shutdown_grace_s": 5}
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "-c", str(path), "--workers", str(workers),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its own process group: supervisor and workers are stopped together
    )
    seen: dict[int, int] = {}
    assert proc.stdout is not None
    try:
        while len(seen) < workers:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "gateway exited before serving"
            if match := READY.search(line):
                seen[int(match.group(1))] = int(match.group(2))
    except BaseException:  # a start that failed or timed out leaves no process behind
        await kill_group(proc)
        raise
    served = Served(proc, f"http://127.0.0.1:{raw['listen']['port']}", seen)
    served.admin = f"http://127.0.0.1:{raw['admin']['port']}"
    served.raw, served.path = raw, path
    return served


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the gateway's process group (the supervisor and any worker it forked), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every process of the group has already exited
    await proc.wait()


@pytest.fixture
async def stopper() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        await kill_group(proc)  # also workers a failed test left running after their supervisor


async def test_sigterm_drains_in_flight_requests(tmp_path: Path, demo_backends: Backends,
                                                 stopper: list[asyncio.subprocess.Process]) -> None:
    served = await serve(tmp_path, demo_backends)
    stopper.append(served.proc)
    async with aiohttp.ClientSession() as http:
        slow = asyncio.create_task(http.post(f"{served.url}/v1/echo", json={"message": "__sleep__:1500"}))
        await asyncio.sleep(0.4)
        served.proc.send_signal(signal.SIGTERM)
        response = await slow
        assert response.status == 200
        assert (await response.json())["message"] == "__sleep__:1500"
        response.release()
    assert await asyncio.wait_for(served.proc.wait(), 10) == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http, http.get(f"{served.url}/v1/items/1"):
            pass


async def test_two_workers_share_the_port(tmp_path: Path, demo_backends: Backends,
                                          stopper: list[asyncio.subprocess.Process]) -> None:
    served = await serve(tmp_path, demo_backends, workers=2)
    stopper.append(served.proc)
    pids = list(served.workers.values())
    assert len(set(pids)) == 2 and os.getpid() not in pids
    before = {pid: cpu_ticks(pid) for pid in pids}

    async def one(i: int) -> None:
        # A new connection per request, so SO_REUSEPORT spreads them over the workers.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http, http.post(
            f"{served.url}/v1/echo", json={"message": str(i)}
        ) as r:
            assert r.status == 200

    for start in range(0, 400, 50):
        await asyncio.gather(*(one(i) for i in range(start, start + 50)))
    busy = [pid for pid in pids if cpu_ticks(pid) > before[pid]]
    assert len(busy) == 2, "both workers should have served requests"
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 15) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


async def test_reload_reaches_every_worker(tmp_path: Path, demo_backends: Backends,
                                           stopper: list[asyncio.subprocess.Process]) -> None:
    served = await serve(tmp_path, demo_backends, workers=2)
    stopper.append(served.proc)
    raw = served.raw
    raw["services"]["echo.v1.EchoService"]["transcoding"] = {"reject_unknown_query_parameters": False}
    served.path.write_text(yaml.safe_dump(raw))
    async with aiohttp.ClientSession() as http, http.post(f"{served.admin}/admin/reload") as r:
        assert r.status == 202  # worker 0 asks the supervisor, which signals every worker

    async def lenient() -> bool:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http, http.get(
            f"{served.url}/v1/items/1?nope=1"
        ) as r:
            return r.status == 200

    for _ in range(50):
        results = await asyncio.gather(*(lenient() for _ in range(40)))
        if all(results):
            break
        await asyncio.sleep(0.1)
    assert all(results), "every worker should serve the reloaded config"
    served.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(served.proc.wait(), 15) == 0
