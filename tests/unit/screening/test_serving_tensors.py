"""Tensor data in and out (datatypes), request and response bodies (codec), layered settings."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from screening.serving import codec, datatypes
from screening.serving.errors import InvalidInput
from screening.serving.settings import ModelSettings, layer, resolve

SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "UINT16": np.array([[0, 1, 65535]], np.uint16),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "UINT64": np.array([[0, 2**63, 2**64 - 1]], np.uint64),
    "FP16": np.array([[0.5, -1.0, 65504]], np.float16),
    "FP32": np.array([[1.5, -2.25, 3e38]], np.float32),
    "FP64": np.array([[1e-300, 2.0, -3.5]], np.float64),
    "BYTES": np.array([["a", "", "é\u0000z"]], dtype=object),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_raw_and_json_round_trips(name: str) -> None:
    dt = datatypes.DATATYPES[name]
    array = SAMPLES[name]
    raw = datatypes.to_raw(array, dt)
    np.testing.assert_array_equal(datatypes.from_raw(dt, array.shape, raw, "t"), array)
    values = orjson.loads(orjson.dumps(datatypes.to_values(array, dt, "t")))
    back = datatypes.from_values(dt, array.shape, values, "t")
    np.testing.assert_array_equal(back, array)
    assert back.dtype == dt.dtype


def test_bytes_framing_is_length_prefixed_little_endian() -> None:
    raw = datatypes.to_raw(np.array(["ab", "c"], dtype=object), datatypes.DATATYPES["BYTES"])
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"


@pytest.mark.parametrize(("name", "shape", "raw", "message"), [
    ("FP32", (2,), b"\0" * 7, "7 bytes of data for shape [2]"),
    ("BYTES", (1,), b"\x05\0\0\0ab", "longer than the data left"),
    ("BYTES", (2,), b"\x01\0\0\0a", "1 BYTES elements for a shape of 2"),
    ("BYTES", (1,), b"\x01\0", "inside an element's length"),
    ("BYTES", (1,), b"\x01\0\0\0\xff", "not UTF-8"),
    ("BOOL", (2,), b"\x01\x02", "0 or 1"),
])
def test_raw_mistakes(name: str, shape: tuple[int, ...], raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        datatypes.from_raw(datatypes.DATATYPES[name], shape, raw, "t")
    assert message in caught.value.message


@pytest.mark.parametrize(("name", "data", "message"), [
    ("INT8", [1, 128], "out of the range of INT8"),
    ("UINT8", [-1, 0], "out of the range of UINT8"),
    ("INT32", [1.5, 2], "must be integers"),
    ("INT32", ["1", "2"], "must be integers"),
    ("BOOL", [1, 0], "true or false"),
    ("FP32", [True, "x"], "must be numbers"),
    ("FP32", [[1.0], [2.0, 3.0]], "not a regular"),
    ("FP32", [1.0, 2.0, 3.0], "3 elements of data for shape [2]"),
    ("BYTES", [1, 2], "must be strings"),
])
def test_json_mistakes(name: str, data: list[object], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        datatypes.from_values(datatypes.DATATYPES[name], (2,), data, "t")
    assert message in caught.value.message


def test_datatype_names() -> None:
    with pytest.raises(InvalidInput, match="BF16 is not supported"):
        datatypes.datatype("BF16", "t")
    with pytest.raises(InvalidInput, match="unknown datatype"):
        datatypes.datatype("float", "t")
    with pytest.raises(InvalidInput, match="non-negative"):
        datatypes.check_shape([1, True], "t")
    np.testing.assert_array_equal(
        datatypes.from_values(datatypes.DATATYPES["INT32"], (2, 2), [[1, 2], [3, 4]], "t"), [[1, 2], [3, 4]])
    assert datatypes.from_values(datatypes.DATATYPES["FP32"], (0, 3), [], "t").shape == (0, 3)


def test_decode_binary_extension_and_encode_both_ways() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = orjson.dumps({
        "id": "r", "parameters": {"binary_data_output": True},
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}},
                   {"name": "b", "datatype": "INT32", "shape": [1], "data": [7]}],
        "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": False}}],
    })
    request = codec.decode_request(header + x.tobytes(), len(header))
    assert request.id == "r" and request.output_names == ("y", "z")
    np.testing.assert_array_equal(request.feeds["a"], x)
    assert request.feeds["b"].tolist() == [7]

    class Model:  # the two things encode_response reads of a LoadedModel
        name, version = "m", "3"

        def output(self, name: str) -> datatypes.DataType:
            return type("Spec", (), {"datatype": "FP32"})()  # type: ignore[return-value]

    body, length = codec.encode_response(Model(), request, {"y": x, "z": x[:1]})  # type: ignore[arg-type]
    assert length is not None
    doc = orjson.loads(body[:length])
    assert doc["model_version"] == "3" and doc["id"] == "r"
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert doc["outputs"][1]["data"] == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 3), x)


def test_settings_layers() -> None:
    defaults = layer({"max_queue_size": 10, "instances": 2}, "defaults")
    manifest = layer({"max_batch_size": 32, "dynamic_batching": {"max_queue_delay_us": 100}}, "manifest")
    override = layer(ModelSettings(dynamic_batching={"enabled": False}, instances=3), "config")  # type: ignore[arg-type]
    settings = resolve(defaults, manifest, override)
    assert settings.max_batch_size == 32 and settings.max_queue_size == 10 and settings.instances == 3
    assert settings.dynamic_batching.max_queue_delay_us == 100 and not settings.batching
    assert resolve(manifest).batching  # a dynamic_batching block turns it on
    assert not resolve().batching and resolve().max_batch_size == 0
    with pytest.raises(ValueError, match="manifest: invalid serving settings: max_batch_size"):
        layer({"max_batch_size": -1}, "manifest")
    with pytest.raises(ValueError, match="Extra inputs"):
        layer({"max_batch": 1}, "manifest")
