"""How one model is served: batching, queue, concurrency, versions; declared once, layered, validated.

`ModelSettings` is the one schema, read from three layers, each giving only the keys it sets:
the operator's defaults for every model, the model's own manifest (its `serving` block: what the
model's author knows, such as whether it batches), then the operator's per-model config. `resolve`
merges them in that order and validates the result into `ServingSettings`, which is frozen and
complete. A bad layer raises `ValueError` naming where it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class DynamicBatching(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Run concurrent requests together, up to max_batch_size rows.")
    max_queue_delay_us: int = Field(
        500, ge=0, le=10_000_000,
        description="How long the oldest queued request may wait for others to fill a batch (microseconds).",
    )


class ModelSettings(BaseModel):
    """One layer: every key optional, so that a layer sets only what it means to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(
        None, ge=0, le=65_536,
        description="Rows one run may take; 0: the model does not batch (its first dimension is not a batch).",
    )
    dynamic_batching: DynamicBatching | None = Field(None, description="Batching across concurrent requests.")
    max_queue_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Requests waiting for a run; more are refused (429 / RESOURCE_EXHAUSTED)."
    )
    instances: int | None = Field(
        None, ge=1, le=64, description="Runs of this model version at once (threads sharing one session)."
    )
    intra_op_threads: int | None = Field(None, ge=1, le=64, description="onnxruntime threads inside one run.")
    versions: Literal["latest", "all"] | tuple[str, ...] | None = Field(
        None, description="Versions served: the latest `latest_count`, all, or these ones."
    )
    latest_count: int | None = Field(None, ge=1, le=100, description="How many of the latest versions to serve.")
    golden_tolerance: float | None = Field(
        None, ge=0, description="Largest difference allowed between a golden output and the model's, at load."
    )

    @field_validator("versions", mode="before")
    @classmethod
    def _version_list(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value


class ServingSettings(BaseModel):
    """The resolved settings of one model: every key set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = 0
    dynamic_batching: DynamicBatching = DynamicBatching(enabled=False)
    max_queue_size: int = 1024
    instances: int = 1
    intra_op_threads: int = 1
    versions: Literal["latest", "all"] | tuple[str, ...] = "latest"
    latest_count: int = 1
    golden_tolerance: float = 1e-4

    @property
    def batching(self) -> bool:
        """Whether requests are run together: a batching model with dynamic batching on."""
        return self.max_batch_size > 0 and self.dynamic_batching.enabled


# What a model gets when no layer says otherwise: no batching (the model has to declare it, or the
# operator), one run at a time.
BUILT_IN = ServingSettings()


def layer(raw: Mapping[str, Any] | ModelSettings | None, where: str) -> dict[str, Any]:
    """The keys one layer sets, validated; `ValueError` names the layer."""
    if raw is None:
        return {}
    if isinstance(raw, ModelSettings):
        return raw.model_dump(exclude_unset=True, exclude_none=True)
    try:
        return ModelSettings.model_validate(dict(raw)).model_dump(exclude_unset=True, exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{where}: invalid serving settings: {problems}") from None


def resolve(*layers: Mapping[str, Any]) -> ServingSettings:
    """Later layers over earlier ones, over the built-in defaults.

    A layer that gives a `dynamic_batching` block turns batching on unless the block says
    `enabled: false` (Triton's rule: the block's presence enables it).
    """
    merged: dict[str, Any] = BUILT_IN.model_dump()
    for given in layers:
        for key, value in given.items():
            if key == "dynamic_batching" and isinstance(value, Mapping):
                merged[key] = {**merged[key], "enabled": True, **value}
            else:
                merged[key] = value
    return ServingSettings.model_validate(merged)
