"""What every benchmark's report shares: the command line it was run with, and rewriting its own
marked section of `docs/benchmarks.md` while keeping every other byte of the file."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path


def command_line(module: str, knobs: Iterable[str]) -> str:
    """`KNOB=value ... .venv/bin/python -m MODULE`, with the knobs that are set in the environment."""
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in knobs if k in os.environ)
    return f"{env} .venv/bin/python -m {module}".strip()


def replace_section(path: Path, start: str, end: str, section: str) -> None:
    """Put `section` (which begins with `start` and ends with `end`) in place of the marked one in
    `path`, or append it; written to a temporary file first, then renamed over `path`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    at, until = text.find(start), text.find(end)
    if at >= 0 and until > at:
        text = text[:at] + section + text[until + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
