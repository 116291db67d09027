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
from collections.abc import Mapping, Sequence
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


def portcullis_config(
    port: int, admin_port: int, backend_port: int, policies: Sequence[Mapping[str, object]] = ()
) -> dict[str, object]:
    """The Portcullis config: echo.v1 from the generated stubs, the Go backend, no health checks.

    `policies` is the config's ordered `policies:` list (none for the issue-2 scenarios).
    """
    config: dict[str, object] = {
        "listen": {"host": HOST, "port": port},
        "admin": {"host": HOST, "port": admin_port},
        "server": {"workers": 1},
        "descriptors": [{"kind": "stubs", "modules": ["echo.v1.echo_pb2"]}],
        "backends": {"echo": {"addresses": [f"{HOST}:{backend_port}"], "health": {"enabled": False}}},
        "services": {"echo.v1.EchoService": {"backend": "echo", "timeout_ms": 5000}},
    }
    if policies:
        config["policies"] = [dict(p) for p in policies]
    return config


def portcullis_executable() -> Path:
    """`portcullis` of the venv running the benchmark (`make bench` runs .venv/bin/python)."""
    beside = Path(sys.executable).parent / "portcullis"
    return beside if beside.exists() else REPO_ROOT / ".venv" / "bin" / "portcullis"


def portcullis(
    port: int,
    admin_port: int,
    backend_port: int,
    workers: int,
    run_dir: Path,
    name: str | None = None,
    policies: Sequence[Mapping[str, object]] = (),
) -> ManagedProcess:
    """Portcullis with `--workers N`, its config (named after the scenario) written into `run_dir`."""
    name = name or f"portcullis-w{workers}"
    config = run_dir / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(portcullis_config(port, admin_port, backend_port, policies), sort_keys=False)
    )
    argv = [str(portcullis_executable()), "serve", "-c", str(config), "--workers", str(workers)]
    return ManagedProcess(name, argv, run_dir / f"{name}.log", cwd=REPO_ROOT)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a gateway answered to one functional-check request."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: str


def request(port: int, endpoint: Endpoint, headers: Mapping[str, str] | None = None) -> Answer:
    """Send `endpoint`'s benchmark request once, with extra `headers`; any HTTP status is an answer.

    Raises OSError when the gateway cannot be reached.
    """
    data = json.dumps(ECHO_BODY).encode() if endpoint.method == "POST" else None
    req = urllib.request.Request(endpoint.url(port), data=data, method=endpoint.method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, head, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, body = exc.code, exc.headers, exc.read()
    return Answer(status, {k.lower(): v for k, v in head.items()}, body.decode(errors="replace"))


def check_rest(port: int, endpoint: Endpoint, headers: Mapping[str, str] | None = None) -> str | None:
    """One request to `endpoint` on a gateway; None when it answers 200 with the expected body."""
    try:
        answer = request(port, endpoint, headers)
    except OSError as exc:
        return f"{endpoint.method} {endpoint.path}: {exc}"
    if answer.status != 200 or endpoint.expect not in answer.body:
        return f"{endpoint.method} {endpoint.path}: HTTP {answer.status}, body {answer.body[:300]!r}"
    return None
