"""The gateway side of model inference: the owner of the model repository and the gRPC listener.

One `Inference` per worker, created and closed by the lifecycle (`GatewayState`): `open` loads the
repository's models (in threads) and starts the gRPC listener when one is configured; `close`
stops the listener (in-flight calls get the grace period) and then the batchers. The REST handler
(`handlers/inference.py`) and the gRPC servicer (`inference_grpc.py`) are transport glue over the
library (`screening.serving`); what they share is here: `infer` (lease the version, run, count the
request in the per-model metrics) and `gateway_error`, the one table from the library's errors to
`GatewayError` (so a protocol error has the same HTTP status and gRPC code on both transports).

The batchers report every run to `_Metrics`, from their worker threads: Triton's counters and
histograms under `portcullis_inference_*` (declared in `metrics_registry`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from importlib import metadata

import grpc
from prometheus_client import Counter, Histogram

from gateway.call import Call
from gateway.inference_config import UNKNOWN_ROUTE, InferenceConfig, model_route
from gateway.metrics_registry import (
    INFERENCE_BATCH_SIZE,
    INFERENCE_COMPUTE_DURATION,
    INFERENCE_COUNT,
    INFERENCE_EXEC_COUNT,
    INFERENCE_PENDING,
    INFERENCE_QUEUE_DURATION,
    INFERENCE_REQUEST_DURATION,
    INFERENCE_REQUEST_FAILURE,
    INFERENCE_REQUEST_SUCCESS,
)
from gateway.pipeline import Pipeline
from screening.serving import errors
from screening.serving.batcher import Result
from screening.serving.codec import InferRequest
from screening.serving.model import LoadedModel
from screening.serving.repository import ModelRepository
from translators.errors import GatewayError

log = logging.getLogger("portcullis.inference")
SERVER_NAME = "portcullis"
EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration")
UNKNOWN_MODEL = "unknown"

# The library's status names are gRPC code names; each error class also carries its REST status.
_CODES = {code.name: code for code in grpc.StatusCode}
REASONS: dict[type[errors.ServingError], str] = {
    errors.InvalidInput: "invalid_input", errors.ModelNotFound: "not_found", errors.ModelNotReady: "not_ready",
    errors.QueueFull: "queue_full", errors.LoadFailed: "load_failed", errors.InferenceFailed: "inference_failed",
}


def server_version() -> str:
    try:
        return metadata.version("portcullis")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def gateway_error(exc: errors.ServingError) -> GatewayError:
    """A serving error as the gateway's error: its gRPC code, and its REST status where HTTP is more precise."""
    err = GatewayError(_CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
    err.http_status = exc.http  # e.g. 404 for an unknown model where the table would agree, 429 for a full queue
    return err


class _Metrics:
    """The batchers' observer: per-run counters and histograms, label children cached per version."""

    def __init__(self, pending: Callable[[], int]) -> None:
        self._children: dict[tuple[str, str], tuple[Counter, Counter, Histogram, Histogram, Histogram]] = {}
        self._pending = pending

    def _for(self, model: LoadedModel) -> tuple[Counter, Counter, Histogram, Histogram, Histogram]:
        key = (model.name, model.version)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (
                INFERENCE_EXEC_COUNT.labels(*key), INFERENCE_COUNT.labels(*key), INFERENCE_BATCH_SIZE.labels(*key),
                INFERENCE_COMPUTE_DURATION.labels(*key), INFERENCE_QUEUE_DURATION.labels(*key),
            )
        return found

    def executed(self, model: LoadedModel, rows: int, queue_s: Sequence[float], compute_s: float) -> None:
        runs, count, batch, compute, queue = self._for(model)
        runs.inc()
        count.inc(rows)
        batch.observe(rows)
        compute.observe(compute_s)
        for seconds in queue_s:
            queue.observe(seconds)
        INFERENCE_PENDING.set(self._pending())


class Inference:
    """The repository and the gRPC listener of one worker; `open` and `close` are the lifecycle's."""

    def __init__(self, config: InferenceConfig) -> None:
        self.config = config
        self.repository = ModelRepository(
            config.models_dir,
            defaults=config.defaults.model_dump(exclude_unset=True, exclude_none=True),
            overrides=config.model_overrides(),
            observer=_Metrics(self._pending),
            retire_grace_s=config.retire_grace_s,
        )
        self.version = server_version()
        self.grpc_port: int | None = None
        self._grpc: grpc.aio.Server | None = None

    def _pending(self) -> int:
        return sum(served.batcher.pending for served in self.repository.serving())

    async def open(self, pipeline: Callable[[], Pipeline]) -> None:
        """Load the models, then listen for gRPC; `pipeline` gives the one serving now (reloads swap it)."""
        await self.repository.start(self.config.load)
        listen = self.config.grpc_listen
        if listen is not None:
            from gateway import inference_grpc

            self._grpc, self.grpc_port = await inference_grpc.start(self, pipeline, listen)
            log.info("gRPC inference listening on %s:%d", listen.host, self.grpc_port)

    async def close(self, grace_s: float) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace_s)
            self._grpc = None
        await self.repository.close()

    def route_for(self, name: str) -> str:
        """`inference.<name>` for a model this server knows (serving, configured or on disk), else
        `inference/unknown`: route names are metric labels, and clients must not mint them."""
        repository = self.repository
        if repository.is_serving(name) or name in self.config.models or repository.on_disk(name):
            return model_route(name)
        return UNKNOWN_ROUTE

    async def infer(self, call: Call, name: str, version: str | None, decode: Callable[[], InferRequest],
                    ) -> tuple[LoadedModel, InferRequest, Result]:
        """Resolve and hold the version, decode the request, run it; every outcome counted per model."""
        model_label, version_label = UNKNOWN_MODEL, ""
        try:
            async with self.repository.lease(name, version) as served:
                model_label, version_label = served.model.name, served.model.version
                request = decode()
                started = time.perf_counter()
                result = await served.infer(request.feeds, request.output_names)
                call.upstream_s = time.perf_counter() - started
        except errors.ServingError as exc:
            INFERENCE_REQUEST_FAILURE.labels(model_label, version_label, REASONS.get(type(exc), "error")).inc()
            raise gateway_error(exc) from None
        except asyncio.CancelledError:
            INFERENCE_REQUEST_FAILURE.labels(model_label, version_label, "cancelled").inc()
            raise
        except Exception:
            INFERENCE_REQUEST_FAILURE.labels(model_label, version_label, "error").inc()
            raise
        INFERENCE_REQUEST_SUCCESS.labels(model_label, version_label).inc()
        INFERENCE_REQUEST_DURATION.labels(model_label, version_label).observe(call.elapsed_s)
        call.attributes["inference"] = {"model": model_label, "version": version_label, "batch": result.batch_rows,
                                        "queue_ms": round(result.queue_s * 1000, 3)}
        return served.model, request, result
