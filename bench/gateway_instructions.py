"""Instructions per request of a whole gateway worker, counted by callgrind (load-independent).

`python -m bench.gateway_instructions [--endpoint echo|item]
[--policies none|local|redis|screening-off|screening-block] [--requests 2000] [--warm 300]` starts the Go echo backend and `portcullis serve --workers 1`
under `valgrind --tool=callgrind --instr-atstart=no`, warms it with `h2load --h1`, switches
instrumentation on (`callgrind_control -i on`), sends the measured requests (16 connections), dumps,
and prints user-space instructions per request. `--policies local|redis` adds the issue-3 chain
(metrics, access log to a file, API key, rate limit keyed by consumer that never triggers) exactly
as `bench.policies` configures it. `--policies screening-off|screening-block` is issue 6's pair as
`bench.screening` configures it (metrics + screening with the latest shipped model, lax query) with its
requests: the 315-byte typical JSON body on echo, `?q=hello` on item, the curl-like headers; block minus
off is screening's cost at the gateway for a request that repeats (h2load sends one body, so every
request after the second is a repeat-memo hit: the new-message case is `bench.screening_instructions`'
echo-varied). The callgrind file stays in the run folder (printed) for
`callgrind_annotate`. This is the figure the optimisation log in docs/benchmarks.md uses: the
shared two-core box moves wrk's throughput by +-20% between runs, instruction counts by < 1%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import gateways, policies, screening_requests
from bench.gateways import ECHO_BODY, ENDPOINTS, REPO_ROOT, PeerBuild
from bench.procs import ManagedProcess, free_port
from screening.registry import ModelRegistry


def h2load(
    port: int, endpoint: str, requests: int, run_dir: Path, headers: dict[str, str], screening: bool = False
) -> str:
    ep = next(e for e in ENDPOINTS if e.name == endpoint)
    argv = ["h2load", "--h1", "-n", str(requests), "-c", "16", "-t", "1"]
    url = ep.url(port)
    if screening:  # bench.screening's requests (headers as curl sends them, h2load adds its own Host)
        workload = screening_requests.ECHO if endpoint == "echo" else screening_requests.ITEM
        url = workload.url(port)
        headers = {k: v for k, v in screening_requests.headers(port, workload.body).items() if k != "Host"}
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    if ep.method == "POST":
        body = run_dir / "body.json"
        if screening:
            body.write_bytes(screening_requests.ECHO.body or b"")
        else:
            body.write_text(json.dumps(ECHO_BODY))
            argv += ["-H", "content-type: application/json"]
        argv += ["-d", str(body)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=300, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    if done is None or done.group(1) != done.group(2) or int(done.group(1)) != requests:
        raise RuntimeError(f"h2load did not get {requests} successes:\n{out}")
    return out


def measure(
    endpoint: str, chain: str, requests: int, warm: int, run_dir: Path, only: frozenset[str] = frozenset()
) -> float:
    peer = PeerBuild(Path(os.environ.get("PEER_DIR", "/tmp/portcullis-peers/grpc-gateway")))
    peer.ensure()
    backend_port, port, admin_port = free_port(), free_port(), free_port()
    scenario = None
    policy_list: list[dict[str, object]] = []
    headers: dict[str, str] = {}
    redis_server = None
    screening = chain.startswith("screening-")
    if screening:
        models = REPO_ROOT / "models"
        version = ModelRegistry(models).latest(screening_requests.MODEL)
        if version is None:
            raise RuntimeError(f"no model under {models / screening_requests.MODEL}")
        raw = screening_requests.screening_config(port, admin_port, backend_port, chain.removeprefix("screening-"),
                                                  models, version)
    else:
        if chain != "none":
            key = policies.issue_key(run_dir)
            if chain == "redis":
                redis_server = policies.LocalRedis(run_dir)
            scenario = policies.PolicyScenario(f"policies-{chain}", chain, run_dir, key, redis_server)
            scenario.prepare()
            policy_list, headers = scenario.policies(), scenario.headers
            for policy in policy_list:
                if policy["name"] == "rate_limit" and chain == "redis":
                    # Under callgrind the gateway runs ~50x slower: the default 50 ms would expire
                    # batches, open the breaker and measure fail_open's path, not Redis (checked below).
                    policy["config"]["timeout_ms"] = 10_000  # type: ignore[index]
            if only:
                policy_list = [p for p in policy_list if p["name"] in only]
        raw = gateways.portcullis_config(port, admin_port, backend_port, policy_list)
    config = run_dir / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out_file = run_dir / f"callgrind.{endpoint}.{chain}"
    backend = peer.backend(backend_port, run_dir).start()
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_file}",
        str(gateways.portcullis_executable()),
        "serve",
        "-c",
        str(config),
        "--workers",
        "1",
    ]
    gateway = ManagedProcess("gateway", argv, run_dir / "gateway.log", cwd=REPO_ROOT).start()
    try:
        backend.wait_port(backend_port, 30)
        gateway.wait_port(port, 240)
        h2load(port, endpoint, warm, run_dir, headers, screening)
        time.sleep(0.5)
        subprocess.run(["callgrind_control", "-i", "on", str(gateway.pid)], check=True, capture_output=True)
        h2load(port, endpoint, requests, run_dir, headers, screening)
        subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True, capture_output=True)
    finally:
        gateway.stop()
        backend.stop()
        if redis_server is not None:
            redis_server.stop()
    if scenario is not None and scenario.access_log.exists():
        fallbacks = scenario.access_log.read_text(errors="replace").count('"fallback"')
        if fallbacks:
            raise RuntimeError(f"{fallbacks} requests took the limiter's failure mode: not the path to measure")
    dumps = sorted(run_dir.glob(f"callgrind.{endpoint}.{chain}*"), key=lambda p: p.stat().st_mtime)
    for dump in dumps:
        summary = re.search(r"^summary: (\d+)", dump.read_text(errors="replace"), re.MULTILINE)
        if summary and int(summary.group(1)) > 0:
            print(f"[instructions] callgrind file: {dump}", file=sys.stderr)
            return int(summary.group(1)) / requests
    raise RuntimeError(f"no callgrind dump with a summary in {run_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", choices=[e.name for e in ENDPOINTS], default="echo")
    parser.add_argument("--policies", choices=("none", "local", "redis", "screening-off", "screening-block"), default="none")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument(
        "--only", default="", help="comma-separated subset of the chain, e.g. metrics,api_key"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folder (callgrind files)")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control", "h2load"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (apt-get install valgrind nghttp2-client)")
    run_dir = Path(tempfile.mkdtemp(prefix="portcullis-instr-"))
    only = frozenset(filter(None, args.only.split(",")))
    per_request = measure(args.endpoint, args.policies, args.requests, args.warm, run_dir, only)
    print(
        f"{args.endpoint} policies={args.policies}{' only ' + args.only if only else ''}: {per_request / 1000:.1f}k instructions per request"
    )
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
