"""The protocol's REST/JSON bodies, with the binary tensor extension, to and from tensors.

Pure: body bytes in, an `InferRequest` out; outputs in, body bytes out. A request body is one JSON
document, or (binary extension) a JSON header of `Inference-Header-Content-Length` bytes followed
by the binary data of the inputs whose `parameters.binary_data_size` is set, in input order. Input
`data` is row-major, flat or nested. An output goes back as binary data when its request asked
(`parameters.binary_data`), else when the request's `parameters.binary_data_output` is true, else
as JSON `data`; binary outputs follow the JSON header in output order, and the header's length is
returned for the `Inference-Header-Content-Length` response header.

Also here: the metadata, config and index documents both transports render (`grpc_codec` turns
the same documents into messages).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from screening.serving import datatypes
from screening.serving.errors import InvalidInput
from screening.serving.model import PLATFORM, LoadedModel
from screening.serving.repository import IndexEntry

UNSUPPORTED_PARAMETERS = ("shared_memory_region", "classification")


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str
    feeds: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    return value


def _params(doc: Mapping[str, Any], what: str) -> dict[str, Any]:
    params = _object(doc.get("parameters") or {}, f"{what} parameters")
    for name in UNSUPPORTED_PARAMETERS:
        if name in params:
            raise InvalidInput(f"{what}: parameter '{name}' is not supported by this server")
    return params


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """An inference request body (JSON, or JSON header plus binary data) -> `InferRequest`."""
    if header_length is not None and not 0 <= header_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_length} exceeds the body of {len(body)} bytes")
    header = body if header_length is None else body[:header_length]
    binary = memoryview(body)[len(header):]
    try:
        doc = _object(orjson.loads(header), "the request")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request is not valid JSON: {exc}") from None
    parameters = _params(doc, "the request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("the request must have a non-empty 'inputs' list")
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for n, raw in enumerate(inputs):
        tensor = _object(raw, f"input {n}")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"input {n} has no name")
        if name in feeds:
            raise InvalidInput(f"input '{name}' is given twice")
        dt = datatypes.datatype(tensor.get("datatype"), name)
        shape = datatypes.check_shape(tensor.get("shape"), name)
        size = _params(tensor, f"input '{name}'").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise InvalidInput(f"input '{name}': binary_data_size {size!r} does not fit the binary data")
            feeds[name] = datatypes.from_raw(dt, shape, binary[offset : offset + size], name)
            offset += size
        elif "data" in tensor:
            feeds[name] = datatypes.from_values(dt, shape, tensor["data"], name)
        else:
            raise InvalidInput(f"input '{name}' has neither data nor binary_data_size")
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs = []
    for n, raw in enumerate(doc.get("outputs") or ()):
        tensor = _object(raw, f"output {n}")
        name = tensor.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"requested output {n} has no name")
        wants = _params(tensor, f"output '{name}'").get("binary_data")
        outputs.append(RequestedOutput(name, bool(wants) if wants is not None else None))
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput("the request id must be a string")
    return InferRequest(request_id, feeds, tuple(outputs), parameters)


def encode_response(
    model: LoadedModel, request: InferRequest, values: Mapping[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it (else None)."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    wanted = request.outputs or tuple(RequestedOutput(name) for name in values)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out in wanted:
        spec = model.output(out.name)
        dt = datatypes.DATATYPES[spec.datatype]
        array = values[out.name]
        doc: dict[str, Any] = {"name": out.name, "datatype": spec.datatype, "shape": list(array.shape)}
        if out.binary if out.binary is not None else default_binary:
            blob = datatypes.to_raw(array, dt)
            doc["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif dt.fixed_size and dt.name != "FP16":
            doc["data"] = np.ascontiguousarray(array).reshape(-1)  # orjson writes numpy arrays natively
        else:
            doc["data"] = datatypes.to_values(array, dt, out.name)
        outputs.append(doc)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": outputs}
    if request.id:
        response["id"] = request.id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join((header, *blobs)), len(header)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


# --- documents both transports render -------------------------------------------------------------
def server_metadata(name: str, version: str, extensions: Sequence[str]) -> dict[str, Any]:
    return {"name": name, "version": version, "extensions": list(extensions)}


def model_metadata(model: LoadedModel, versions: Sequence[str]) -> dict[str, Any]:
    return {
        "name": model.name, "versions": list(versions), "platform": PLATFORM,
        "inputs": [s.describe() for s in model.inputs], "outputs": [s.describe() for s in model.outputs],
    }


def _config_tensor(spec: Any, batching: bool) -> dict[str, Any]:
    type_name = "STRING" if spec.datatype == "BYTES" else spec.datatype
    dims = list(spec.shape[1:] if batching else spec.shape)
    return {"name": spec.name, "data_type": f"TYPE_{type_name}", "dims": dims}


def model_config(model: LoadedModel) -> dict[str, Any]:
    """Triton's model configuration document, as far as it applies (its `dims` leave out the batch)."""
    s = model.settings
    batching = s.max_batch_size > 0
    policy: dict[str, Any]
    if s.versions == "all":
        policy = {"all": {}}
    elif s.versions == "latest":
        policy = {"latest": {"num_versions": s.latest_count}}
    else:
        policy = {"specific": {"versions": list(s.versions)}}
    doc: dict[str, Any] = {
        "name": model.name, "platform": PLATFORM, "backend": "onnxruntime", "version_policy": policy,
        "max_batch_size": s.max_batch_size,
        "input": [_config_tensor(i, batching) for i in model.inputs],
        "output": [_config_tensor(o, batching) for o in model.outputs],
        "instance_group": [{"count": s.instances, "kind": "KIND_CPU"}],
    }
    if s.batching:
        doc["dynamic_batching"] = {"max_queue_delay_microseconds": s.dynamic_batching.max_queue_delay_us}
    return doc


def index_document(entries: Sequence[IndexEntry]) -> list[dict[str, str]]:
    out = []
    for e in entries:
        doc = {"name": e.name, "version": e.version, "state": e.state}
        if e.reason:
            doc["reason"] = e.reason
        out.append(doc)
    return out
