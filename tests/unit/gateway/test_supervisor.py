"""The supervisor of `--workers N` stays light: it spawns and waits, it never serves."""

from __future__ import annotations

import subprocess
import sys


def test_the_supervisor_does_not_import_the_gateway() -> None:
    # A fresh interpreter: this test process has imported everything already.
    probe = (
        "import sys, gateway.supervisor\n"
        "heavy = [m for m in ('gateway.server', 'gateway.app', 'aiohttp.web', 'onnxruntime')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
