"""Bad inference requests of every kind: the protocol's status and `{"error": ...}` body, and the
matching gRPC code. tritonclient sends everything it can express; bodies it never produces
(malformed JSON, lying lengths, ragged data) go out as raw HTTP, and typed `contents` (which
tritonclient does not use) through a plain gRPC channel with the protocol's messages."""

from __future__ import annotations

from typing import Any

import grpc
import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from gateway.inference_grpc import SERVICE_NAME, messages

from .conftest import Servers, digits_input, digits_rows, expect, run

GRPC_CODES = {"INVALID_ARGUMENT": "StatusCode.INVALID_ARGUMENT", "NOT_FOUND": "StatusCode.NOT_FOUND",
              "UNAVAILABLE": "StatusCode.UNAVAILABLE"}


async def test_bad_requests_over_rest(servers: Servers) -> None:
    def calls() -> None:
        c = thttp.InferenceServerClient(servers.http)
        ok = digits_input(thttp, digits_rows(1))
        expect(lambda: c.infer("nope", [ok]), "404", "unknown model 'nope'")
        expect(lambda: c.infer("digits", [ok], model_version="9"), "404", "unknown version 9")
        expect(lambda: c.get_model_metadata("nope"), "404", "unknown model")
        expect(lambda: c.infer("digits", [digits_input(thttp, digits_rows(2)[:, :63])]), "400",
               "shape [2, 63] does not match the model's [-1, 64]")
        expect(lambda: c.infer("digits", [digits_input(thttp, digits_rows(1).astype(np.float64), "FP64")]), "400",
               "expected datatype FP32")
        expect(lambda: c.infer("digits", [digits_input(thttp, digits_rows(65))]), "400", "not within 1..64")
        expect(lambda: c.infer("digits", [digits_input(thttp, digits_rows(1), name="pixels")]), "400",
               "has no input 'pixels'")
        expect(lambda: c.infer("identity", [digits_input(thttp, np.zeros((1, 3), np.float32), name="in_FP32")]),
               "400", "is missing")
        expect(lambda: c.infer("digits", [ok], outputs=[thttp.InferRequestedOutput("logits")]), "400",
               "has no output 'logits'")
        bf16 = thttp.InferInput("input", [1, 64], "BF16")
        bf16.set_data_from_numpy(digits_rows(1).astype(ml_dtypes.bfloat16))
        expect(lambda: c.infer("digits", [bf16]), "400", "BF16 is not supported")
        c.unload_model("digits")
        expect(lambda: c.infer("digits", [ok]), "503", "model 'digits' is not ready")
        expect(lambda: c.get_model_metadata("digits"), "503", "not ready")
        assert not c.is_model_ready("digits")
        expect(lambda: c.load_model("nope"), "404", "unknown model")

    await run(calls)


async def _post(servers: Servers, path: str, body: bytes, headers: dict[str, str] | None = None,
                method: str = "POST") -> tuple[int, dict[str, Any]]:
    async with servers.gw.http.request(method, f"{servers.gw.url}{path}", data=body, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def test_malformed_rest_bodies(servers: Servers) -> None:
    infer = "/v2/models/digits/infer"
    row = [1.0] * 64

    def doc(**tensor: Any) -> bytes:
        return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], **tensor}]})

    cases: list[tuple[str, bytes, dict[str, str] | None, str]] = [
        (infer, b"{not json", None, "not valid JSON"),
        (infer, orjson.dumps({"outputs": []}), None, "non-empty 'inputs' list"),
        (infer, doc(data=[1.0] * 63), None, "63 elements of data for shape [1, 64]"),
        (infer, doc(data=[row[:10], row]), None, "not a regular"),
        (infer, doc(data=["a"] * 64), None, "must be numbers"),
        (infer, doc(shape=[1, -64], data=row), None, "non-negative integers"),
        (infer, doc(datatype="FLOAT32", data=row), None, "unknown datatype"),
        (infer, doc(), None, "neither data nor binary_data_size"),
        (infer, doc(parameters={"binary_data_size": 256}), {"Inference-Header-Content-Length": "9999"},
         "exceeds the body"),
        (infer, doc(parameters={"binary_data_size": 256}) + b"\0" * 100, None, "not valid JSON"),
        (infer, orjson.dumps({"inputs": [{"name": "in_INT8", "datatype": "INT8", "shape": [1, 3],
                                          "data": [1, 300, 2]}]}), None, "out of the range of INT8"),
        (infer, orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row,
                                          "parameters": {"shared_memory_region": "r"}}]}), None, "not supported"),
    ]
    for path, body, headers, text in cases:
        status, error = await _post(servers, path, body, headers)
        assert status == 400 and text in error["error"], (body[:80], status, error)
    # binary data sized differently from what the JSON header declares
    header = doc(parameters={"binary_data_size": 256})
    status, error = await _post(servers, infer, header + b"\0" * 100, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "does not fit the binary data" in error["error"]
    status, error = await _post(servers, infer, header + b"\0" * 260, {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "belong to no input" in error["error"]
    # BYTES that are not UTF-8 cannot feed an ONNX string tensor
    header = orjson.dumps({"inputs": [{"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 1],
                                       "parameters": {"binary_data_size": 5}}]})
    status, error = await _post(servers, "/v2/models/identity/infer", header + b"\x01\0\0\0\xff",
                                {"Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "not UTF-8" in error["error"]
    # nested row-major data is fine
    status, result = await _post(servers, infer, doc(data=[row]))
    assert status == 200 and result["outputs"][0]["name"] == "label"
    # wrong method and unknown paths keep the protocol's error body
    status, error = await _post(servers, infer, b"", method="GET")
    assert status == 405 and "not allowed" in error["error"]
    status, error = await _post(servers, "/v2/models/digits/explain", b"{}")
    assert status == 404 and "no inference endpoint" in error["error"]


async def test_bad_requests_over_grpc(servers: Servers) -> None:
    def calls() -> None:
        c = tgrpc.InferenceServerClient(servers.grpc)
        ok = digits_input(tgrpc, digits_rows(1))
        expect(lambda: c.infer("nope", [ok]), GRPC_CODES["NOT_FOUND"], "unknown model 'nope'")
        expect(lambda: c.infer("digits", [ok], model_version="3"), GRPC_CODES["NOT_FOUND"], "unknown version 3")
        expect(lambda: c.infer("digits", [digits_input(tgrpc, digits_rows(1)[:, :8])]),
               GRPC_CODES["INVALID_ARGUMENT"], "does not match")
        expect(lambda: c.infer("digits", [digits_input(tgrpc, digits_rows(1).astype(np.float64), "FP64")]),
               GRPC_CODES["INVALID_ARGUMENT"], "expected datatype FP32")
        expect(lambda: c.get_model_metadata("nope"), GRPC_CODES["NOT_FOUND"], "unknown model")
        c.unload_model("digits")
        expect(lambda: c.infer("digits", [ok]), GRPC_CODES["UNAVAILABLE"], "not ready")
        assert not c.is_model_ready("digits")

    await run(calls)


async def test_typed_contents_and_raw_mistakes_over_grpc(servers: Servers) -> None:
    m = messages()
    async with grpc.aio.insecure_channel(servers.grpc) as channel:
        infer = channel.unary_unary(f"/{SERVICE_NAME}/ModelInfer", request_serializer=m["ModelInferRequest"].SerializeToString,
                                    response_deserializer=m["ModelInferResponse"].FromString)
        request = m["ModelInferRequest"](model_name="digits")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
        tensor.contents.fp32_contents.extend([3.0] * 64)
        response = await infer(request)
        assert [o.name for o in response.outputs] == ["label", "probabilities"]
        assert np.frombuffer(response.raw_output_contents[1], "<f4").shape == (10,)
        # raw contents for two inputs when the request names one
        request = m["ModelInferRequest"](model_name="digits", raw_input_contents=[b"\0" * 256, b""])
        request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "2 raw_input_contents" in caught.value.details()
        # FP16 has no typed field
        request = m["ModelInferRequest"](model_name="identity")
        request.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 3])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in caught.value.details()
        # typed BYTES and INT64 contents decode (the model then wants its other inputs too)
        request = m["ModelInferRequest"](model_name="identity")
        request.inputs.add(name="in_BYTES", datatype="BYTES", shape=[1, 3]).contents.bytes_contents.extend(
            [b"a", b"b", b"c"])
        request.inputs.add(name="in_INT64", datatype="INT64", shape=[1, 3]).contents.int64_contents.extend([1, -2, 3])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await infer(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "is missing" in caught.value.details()


async def test_unknown_model_names_share_one_route_label(servers: Servers) -> None:
    for name in ("nope-1", "nope-2"):
        status, error = await _post(servers, f"/v2/models/{name}/infer", b"{}")
        assert status == 404 and name in error["error"]
    async with servers.gw.http.get(f"{servers.gw.admin}/metrics") as r:
        text = await r.text()
    assert "nope-1" not in text and "nope-2" not in text
