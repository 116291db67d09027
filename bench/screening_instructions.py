"""Instructions per request of the screening policy alone, counted by callgrind (load-independent).

`python -m bench.screening_instructions [--requests 300] [--warm 50]` drives the real `Screening`
policy (`on_request`, `on_message`, `on_complete` on a real `Call` with CIMultiDict headers and the
`EchoRequest` protobuf message the REST handler would build) in one process under
`valgrind --tool=callgrind --instr-atstart=no`, for the benchmark's three requests (`echo`, the
fixed body; `echo-varied`, a new message per request; `item`, the GET) with screening `off` and
`block`, and prints block minus off. Instrumentation is switched on and off around the measured
requests by callgrind client requests from a tiny C library compiled on the fly (gcc and valgrind's
headers are needed). The gateway-level method (callgrind on `portcullis serve` under wrk) is in
docs/screening.md; this one isolates the policy and takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOADS = ("echo", "echo-varied", "item")
_C = """#include <valgrind/callgrind.h>
void on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void off(void) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT("measured"); }
"""


def child(workload: str, mode: str, requests: int, warm: int, library: str) -> None:
    from multidict import CIMultiDict

    import protos

    protos.add_generated_path()
    from echo.v1 import echo_pb2  # type: ignore[import-not-found]
    from google.protobuf import json_format

    from bench.screening_requests import TYPICAL_BODY, headers
    from gateway.call import Call
    from gateway.policies.base import RouteConfigs
    from gateway.policies.screening import ScreeningConfig, build

    policy = build(RouteConfigs(ScreeningConfig(mode=mode)))  # type: ignore[arg-type]
    asyncio.run(policy.start())
    body = json.dumps(TYPICAL_BODY, separators=(",", ":"))

    def make(i: int) -> tuple[Call, object]:
        if workload == "item":
            return (Call("r", "GET", "/v1/items/item-1", "127.0.0.1", CIMultiDict(headers(8080, None)),
                         CIMultiDict(q="hello"), route="echo.v1.EchoService.GetItem"),
                    echo_pb2.GetItemRequest(id="item-1"))
        text = body if workload == "echo" else body.replace("Bristol", f"Bristol1-0-{i}")
        return (Call("r", "POST", "/v1/echo", "127.0.0.1", CIMultiDict(headers(8080, b"")), CIMultiDict(),
                     route="echo.v1.EchoService.Echo"), json_format.Parse(text, echo_pb2.EchoRequest()))

    calls = [make(i) for i in range(warm + requests)]  # messages built before the measured window
    control = ctypes.CDLL(library)
    # As a worker does once start-up is done (`gateway.server`): otherwise a full collection that
    # happens to fall in the measured window (when, depends on how many objects start-up made)
    # traverses every module and model and moves the count by 10k per request from run to run.
    gc.collect()
    gc.freeze()
    for i, (call, message) in enumerate(calls):
        if i == warm:
            control.on()
        policy.on_request(call)
        policy.on_message(call, message)
        policy.on_complete(call)
    control.off()


def measure(workload: str, mode: str, requests: int, warm: int, library: Path, folder: Path) -> int:
    out = folder / f"cg.{workload}.{mode}"
    subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                    sys.executable, "-m", "bench.screening_instructions", "--child", workload, mode,
                    str(requests), str(warm), str(library)], check=True, capture_output=True)
    for dump in folder.glob(f"{out.name}*"):
        text = dump.read_text(errors="replace")
        if "Client Request: measured" in text:
            found = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            if found:
                return int(found.group(1)) // requests
    raise RuntimeError(f"no measured dump for {workload}/{mode}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warm", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scr-instr-") as tmp:
        folder = Path(tmp)
        (folder / "control.c").write_text(_C)
        library = folder / "libcontrol.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(folder / "control.c")], check=True)
        print("| request | off | block | block - off |\n| --- | ---: | ---: | ---: |")
        for workload in WORKLOADS:
            off, block = (measure(workload, mode, args.requests, args.warm, library, folder) for mode in ("off", "block"))
            print(f"| {workload} | {off:,} | {block:,} | +{block - off:,} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
