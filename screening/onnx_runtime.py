"""onnxruntime, imported on first use: the session options every model is loaded with and the errors a
session raises.

Both model homes use it: the screening registry (`screening.registry`) and the inference repository's
models (`screening.serving.model`). Neither imports onnxruntime at module level: every gateway worker
imports both, and onnxruntime is ~30 MiB of a worker's RSS that a gateway without screening or
inference never needs. The error tuples are asked for in `except` clauses, which Python evaluates
only while matching a raised exception, so only once a session (and onnxruntime) exists.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort


def session_options(threads: int = 1) -> ort.SessionOptions:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per run by default: the gateway bounds concurrency itself, and small batches gain
    # nothing from more.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


@functools.cache
def ort_errors() -> tuple[type[Exception], ...]:
    """What a session raises: onnxruntime's own exception types (they derive from Exception directly,
    not from RuntimeError), plus what numpy raises for an input of the wrong shape or type."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = (v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return (*own, RuntimeError, ValueError, TypeError)


@functools.cache
def ort_invalid_input() -> tuple[type[Exception], ...]:
    """onnxruntime's error for an input the graph refuses (none on a build without the type)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    invalid = getattr(state, "InvalidArgument", None)
    return (invalid,) if isinstance(invalid, type) and issubclass(invalid, Exception) else ()
