"""`inference.ModelInferRequest` / `ModelInferResponse` messages to and from tensors.

Pure and duck-typed: it reads and fills messages of the protocol's proto (whichever descriptor pool
their classes come from) and imports no gRPC. Input data comes from `raw_input_contents` (one
entry per input, in order, when used at all) or from each input's typed `contents` field; FP16 has
no typed field and must be raw. Outputs always go back as `raw_output_contents`, as Triton sends
them: compact, and every client reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from screening.serving import datatypes
from screening.serving.codec import UNSUPPORTED_PARAMETERS, InferRequest, RequestedOutput
from screening.serving.errors import InvalidInput
from screening.serving.model import LoadedModel

# The typed field of `InferTensorContents` that carries each datatype (FP16: none, raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def parameter_value(param: Any) -> Any:
    """The Python value of an `InferParameter` (or `ModelRepositoryParameter`)."""
    which = param.WhichOneof("parameter_choice")
    return getattr(param, which) if which else None


def _parameters(params: Mapping[str, Any], what: str) -> dict[str, Any]:
    out = {key: parameter_value(value) for key, value in params.items()}
    for name in UNSUPPORTED_PARAMETERS:
        if name in out:
            raise InvalidInput(f"{what}: parameter '{name}' is not supported by this server")
    return out


def decode_request(message: Any) -> InferRequest:
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInput(f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs")
    if not message.inputs:
        raise InvalidInput("the request has no inputs")
    feeds: dict[str, np.ndarray] = {}
    for n, tensor in enumerate(message.inputs):
        name = tensor.name
        if not name:
            raise InvalidInput(f"input {n} has no name")
        if name in feeds:
            raise InvalidInput(f"input '{name}' is given twice")
        dt = datatypes.datatype(tensor.datatype, name)
        shape = datatypes.check_shape(list(tensor.shape), name)
        _parameters(tensor.parameters, f"input '{name}'")
        if raw:
            feeds[name] = datatypes.from_raw(dt, shape, raw[n], name)
            continue
        field = CONTENTS_FIELD.get(dt.name)
        if field is None:
            raise InvalidInput(f"input '{name}': {dt.name} data must be sent in raw_input_contents")
        values = getattr(tensor.contents, field)
        feeds[name] = datatypes.from_values(dt, shape, list(values), name)
    outputs = []
    for out in message.outputs:
        if not out.name:
            raise InvalidInput("a requested output has no name")
        _parameters(out.parameters, f"output '{out.name}'")
        outputs.append(RequestedOutput(out.name))
    return InferRequest(message.id, feeds, tuple(outputs), _parameters(message.parameters, "the request"))


def encode_response(
    response: Any, model: LoadedModel, request: InferRequest, values: Mapping[str, np.ndarray]
) -> Any:
    """Fill an empty `ModelInferResponse` with the outputs, as raw_output_contents."""
    response.model_name = model.name
    response.model_version = model.version
    response.id = request.id
    for name in request.output_names or tuple(values):
        spec = model.output(name)
        array = values[name]
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = spec.datatype
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(datatypes.to_raw(array, datatypes.DATATYPES[spec.datatype]))
    return response
