"""Where the stubs generated from these .proto sources live.

`make proto` runs grpc-tools over `protos/` into `protos/_gen/` (git-ignored, never edited by hand),
together with one FileDescriptorSet, `portcullis.binpb`. The generated modules import each other by
their proto paths (`echo.v1.echo_pb2`), so that directory must be on `sys.path`; `add_generated_path`
is the one place that puts it there.
"""

from __future__ import annotations

import sys
from pathlib import Path

GENERATED_DIR = Path(__file__).resolve().parent / "_gen"
DESCRIPTOR_SET = GENERATED_DIR / "portcullis.binpb"


def add_generated_path() -> Path:
    """Make the generated stubs importable; fail clearly when `make proto` has not run."""
    if not (GENERATED_DIR / ".stamp").exists():
        raise RuntimeError(f"generated stubs missing in {GENERATED_DIR}: run `make proto`")
    path = str(GENERATED_DIR)
    if path not in sys.path:
        sys.path.append(path)
    return GENERATED_DIR
