"""A real Redis on 127.0.0.1:6379 for tests: the shared one if it is up, else one started here.

`running()` yields the URL; a server it had to start is shut down at the end, so the machine is left
as it was found. Tests keep to their own key prefix or channel and never flush.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

URL = "redis://127.0.0.1:6379/0"
# A script that keeps Redis busy for ARGV[1] seconds (Redis runs one script at a time): a slow Redis.
BUSY_LUA = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) + tonumber(t0[2]) / 1e6
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) + tonumber(t[2]) / 1e6 - start > tonumber(ARGV[1]) then break end
end
return 1
"""


def up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


def executable() -> str:
    """The `redis-server` to start (`make test` installs Debian's package when it is missing): a
    missing one fails the test that needs it, it is never skipped."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("no redis-server to start: run `make test` (it installs redis-server) or apt-get install redis-server")
    return exe


@contextlib.contextmanager
def running() -> Iterator[str]:
    started = False
    if not up():
        exe = executable()
        subprocess.run([exe, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379", "--save", "",
                        "--appendonly", "no"], check=True, capture_output=True)
        for _ in range(100):
            if up():
                break
            time.sleep(0.05)
        started = True
    try:
        yield URL
    finally:
        if started:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(URL).shutdown(nosave=True)
