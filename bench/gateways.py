"""The systems under test: the peer's Go backend and grpc-gateway, and Portcullis, on 127.0.0.1.

Owns where the peer's build lives (and building it when a binary is missing), the Portcullis
config the benchmark generates, the command line of each process, and the one functional check a
gateway must pass before it is measured, so that a half-working gateway never produces numbers.
The workloads themselves (`ENDPOINTS`) are declared here once and shared by every gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.procs import HOST, ManagedProcess

PEER_SRC = Path("/work/shared/peers/grpc-gateway")
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ECHO_BODY = {"message": "hello world", "repeat": 1}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One REST workload and the gRPC method (with its h2load request frame) behind it."""

    name: str
    method: str
    path: str
    wrk_script: Path | None
    grpc_method: str
    frame: str
    expect: str

    def url(self, port: int) -> str:
        """The REST URL on a gateway listening on 127.0.0.1:`port`."""
        return f"http://{HOST}:{port}{self.path}"

    def grpc_url(self, port: int) -> str:
        """The gRPC URL of the method on a backend listening on 127.0.0.1:`port`."""
        return f"http://{HOST}:{port}/echo.v1.EchoService/{self.grpc_method}"


ENDPOINTS = (
    Endpoint("echo", "POST", "/v1/echo", BENCH_DIR / "echo_post.lua", "Echo", "req_echo.bin", "hello world"),
    Endpoint("item", "GET", "/v1/items/item-1", None, "GetItem", "req_getitem.bin", "item-1"),
)


@dataclass(frozen=True, slots=True)
class PeerBuild:
    """The peer's build output under PEER_DIR (see the peer's README)."""

    peer_dir: Path

    @property
    def bin(self) -> Path:
        """Folder of the Go binaries."""
        return self.peer_dir / "build" / "bin"

    def frame(self, endpoint: Endpoint) -> Path:
        """The pre-encoded gRPC request frame h2load sends for `endpoint`."""
        return self.peer_dir / "build" / endpoint.frame

    def ensure(self) -> None:
        """Run the peer's build.sh (apt, go build, frames) when anything we use is missing."""
        needed = [self.bin / "backend", self.bin / "gateway", *(self.frame(e) for e in ENDPOINTS)]
        if all(p.exists() for p in needed):
            return
        print(f"[bench] building the grpc-gateway peer into {self.peer_dir}")
        env = {**os.environ, "PEER_DIR": str(self.peer_dir)}
        subprocess.run([str(PEER_SRC / "build.sh")], env=env, check=True)
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise RuntimeError(f"peer build did not produce {', '.join(missing)}")

    def backend(self, port: int, run_dir: Path) -> ManagedProcess:
        """The Go EchoService backend on 127.0.0.1:`port`."""
        argv = [str(self.bin / "backend"), "-addr", f"{HOST}:{port}"]
        return ManagedProcess("backend", argv, run_dir / "backend.log")

    def gateway(self, port: int, backend_port: int, run_dir: Path) -> ManagedProcess:
        """grpc-gateway 1.6.4 on 127.0.0.1:`port`, one connection to the backend."""
        argv = [str(self.bin / "gateway"), "-addr", f"{HOST}:{port}", "-backend", f"{HOST}:{backend_port}"]
        return ManagedProcess("grpc-gateway", argv, run_dir / "grpc-gateway.log")


def portcullis_config(port: int, admin_port: int, backend_port: int) -> dict[str, object]:
    """The Portcullis config: echo.v1 from the generated stubs, the Go backend, no health checks."""
    return {
        "listen": {"host": HOST, "port": port},
        "admin": {"host": HOST, "port": admin_port},
        "server": {"workers": 1},
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": [f"{HOST}:{backend_port}"], "health": {"enabled": False}}},
        "services": {"echo.v1.EchoService": {"backend": "echo", "timeout_ms": 5000}},
    }


def portcullis_executable() -> Path:
    """`portcullis` of the venv running the benchmark (`make bench` runs .venv/bin/python)."""
    beside = Path(sys.executable).parent / "portcullis"
    return beside if beside.exists() else REPO_ROOT / ".venv" / "bin" / "portcullis"


def portcullis(port: int, admin_port: int, backend_port: int, workers: int, run_dir: Path) -> ManagedProcess:
    """Portcullis with `--workers N`, its config written into `run_dir`."""
    config = run_dir / f"portcullis-w{workers}.yaml"
    config.write_text(yaml.safe_dump(portcullis_config(port, admin_port, backend_port), sort_keys=False))
    argv = [str(portcullis_executable()), "serve", "-c", str(config), "--workers", str(workers)]
    return ManagedProcess(
        f"portcullis-w{workers}", argv, run_dir / f"portcullis-w{workers}.log", cwd=REPO_ROOT
    )


def check_rest(port: int, endpoint: Endpoint) -> str | None:
    """One request to `endpoint` on a gateway; None when it answers 200 with the expected body."""
    data = json.dumps(ECHO_BODY).encode() if endpoint.method == "POST" else None
    request = urllib.request.Request(endpoint.url(port), data=data, method=endpoint.method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode(errors="replace")
            status = response.status
    except urllib.error.HTTPError as exc:
        return (
            f"{endpoint.method} {endpoint.path}: HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        )
    except OSError as exc:
        return f"{endpoint.method} {endpoint.path}: {exc}"
    if status != 200 or endpoint.expect not in body:
        return f"{endpoint.method} {endpoint.path}: HTTP {status}, body {body[:300]!r}"
    return None
