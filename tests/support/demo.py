"""`make run`: the demo backends and the gateway as child processes, all stopped on Ctrl-C.

Starts the echo backend on 127.0.0.1:50061, the library backend on 127.0.0.1:50062 and the
WebSocket chat backend on 127.0.0.1:50063 (the addresses `config/demo.yaml` names), waits for their ports, then runs `portcullis serve` in the
foreground. Ctrl-C or SIGTERM stops the gateway first (it drains), then the backends, by PID.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time

BACKENDS = (
    ("tests.support.echo_backend", "127.0.0.1:50061"),
    ("tests.support.library_backend", "127.0.0.1:50062"),
    ("tests.support.chat_backend", "127.0.0.1:50063"),
)


def wait_port(address: str, proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: {proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"demo: nothing listens on {address} after {timeout_s}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description="run the Portcullis demo")
    parser.add_argument("-c", "--config", default="config/demo.yaml")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    children: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for module, address in BACKENDS:
            proc = subprocess.Popen([sys.executable, "-m", module, "--address", address])
            children.append(proc)
            wait_port(address, proc)
        command = [sys.executable, "-m", "gateway", "serve", "-c", args.config]
        if args.workers:
            command += ["--workers", str(args.workers)]
        gateway = subprocess.Popen(command)
        children.insert(0, gateway)
        print(
            "demo: try  curl -s -XPOST -H 'Content-Type: application/json' "
            '-d \'{"message":"hi"}\' http://127.0.0.1:8080/v1/echo',
            flush=True,
        )
        return gateway.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in children:  # gateway first, so it drains before its backends go away
            stop(proc)


if __name__ == "__main__":
    sys.exit(main())
