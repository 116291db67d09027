"""`ScreeningConfig`: the screening policy's typed config, per route, validated at start-up.

What a route asks of screening (mode, threshold, field rules, screened headers, failure mode) and the
model settings, which are global only (one `Scorer` serves every route; `build` checks that no route
changes them, `MODEL_KEYS`). Read by `gateway.policies.screening.policy` on each request through
`RouteConfigs.for_call`; nothing here runs per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gateway.policies.base import PolicyConfig
from screening import record

MODEL_KEYS = ("models_dir", "model", "version", "inference", "workers", "max_batch", "max_pending", "shadow")


class FieldRule(PolicyConfig):
    skip: bool = Field(False, description="Do not screen this field (a known free-text field).")
    threshold: float | None = Field(
        None, gt=0, le=1, description="Screen this field on its own, blocking at this score."
    )


class ScreeningConfig(PolicyConfig):
    mode: Literal["off", "monitor", "block"] = Field("monitor", description="off, monitor (log only) or block.")
    threshold: float | None = Field(None, gt=0, le=1, description="Block at this score; default: the manifest's.")
    fields: dict[str, FieldRule] = Field(
        default_factory=dict, description="Per-field rules by name: body.<json path>, query.<key>, header.<name>."
    )
    headers: tuple[str, ...] = Field(record.SCREENED_HEADERS, description="Request headers screened (lower case).")
    fail_open: bool = Field(True, description="When the model fails or times out: allow (true) or answer 503.")
    timeout_ms: float = Field(50.0, gt=0, le=10_000, description="Longest wait for a score.")
    top_features: int = Field(3, ge=0, le=20, description="Top contributing features written to the access log.")
    # Model settings: global only (one Scorer serves every route).
    models_dir: Path = Field(Path("models"), description="Model registry root (relative to the working directory).")
    model: str = Field("request-screening", description="Model name in the registry.")
    version: str | None = Field(None, description="Version to serve at start-up; default: the latest.")
    shadow: str | None = Field(None, description="A candidate version scored beside the active one, never blocking.")
    inference: Literal["batch", "inline"] = Field(
        "inline",
        description="inline: on the event loop (a run costs ~11 us: cheaper than a thread hop); "
        "batch: micro-batched in worker threads, for heavier models (see docs/screening.md).",
    )
    workers: int = Field(1, ge=1, le=16, description="Inference threads (batches running at once).")
    max_batch: int = Field(256, ge=1, le=4096, description="Most feature rows in one onnxruntime run.")
    max_pending: int = Field(4096, ge=1, description="Requests waiting for a score; beyond, the fallback applies.")

    @model_validator(mode="after")
    def _field_names(self) -> ScreeningConfig:
        for name in self.fields:
            if name != "path" and name.split(".", 1)[0] not in ("body", "query", "header", "ws"):
                raise ValueError(f"fields.{name}: expected path, body.<path>, query.<key>, header.<name> or ws.<path>")
        return self
