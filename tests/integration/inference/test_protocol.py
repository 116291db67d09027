"""The Open Inference Protocol over REST and gRPC, driven by Triton's own clients (tritonclient).

A real gateway (`start_serving`) serves a model repository of the shipped `digits` model and two
generated ones (`tests/support/inference_models.py`); tritonclient's synchronous HTTP and gRPC
clients run in a thread, as an application would use them, against its public listener and its
gRPC inference listener. Outputs are compared with onnxruntime run directly on the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.support.certs import make_pki
from tests.support.inference_models import TYPES

from ..conftest import Backends, StartGateway
from .conftest import RNG, Servers, digits_rows, inference_config, run


def reference(repository: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(repository / "digits" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": x})
    return label, probabilities


def sample(datatype: str, rows: int = 2) -> np.ndarray:
    shape = (rows, 3)
    if datatype == "BOOL":
        return RNG.random(shape) > 0.5
    if datatype == "BYTES":
        return np.array([[f"t{i}{j}é" for j in range(3)] for i in range(rows)], dtype=np.object_)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return RNG.standard_normal(shape).astype(dtype)
    info = np.iinfo(np.dtype(datatype.lower()))
    return RNG.integers(info.min, info.max, shape, dtype=np.dtype(datatype.lower()), endpoint=True)


# --- server and model endpoints ------------------------------------------------------------------------
async def test_server_and_model_endpoints_over_rest(servers: Servers) -> None:
    def calls() -> None:
        client = thttp.InferenceServerClient(servers.http)
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata()
        assert meta["name"] == "portcullis" and "binary_tensor_data" in meta["extensions"]
        assert "model_repository" in meta["extensions"]
        digits = client.get_model_metadata("digits")
        assert digits == {
            "name": "digits", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        }
        assert client.get_model_metadata("digits", "1") == digits
        assert client.get_model_metadata("double")["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [2, 2]}]
        assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
        assert not client.is_model_ready("digits", "7") and not client.is_model_ready("nope")
        config = client.get_model_config("digits")
        assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [64]
        assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 500}
        index = client.get_model_repository_index()
        assert {(m["name"], m["version"], m["state"]) for m in index} == {
            ("digits", "1", "READY"), ("identity", "1", "READY"), ("double", "1", "READY")}

    await run(calls)


async def test_server_and_model_endpoints_over_grpc(servers: Servers) -> None:
    def calls() -> None:
        client = tgrpc.InferenceServerClient(servers.grpc)
        assert client.is_server_live() and client.is_server_ready()
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "portcullis" and "model_repository" in meta["extensions"]
        digits = client.get_model_metadata("digits", as_json=True)
        assert digits["versions"] == ["1"] and digits["platform"] == "onnxruntime_onnx"
        assert digits["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "64"]}]
        assert [o["name"] for o in digits["outputs"]] == ["label", "probabilities"]
        assert client.is_model_ready("digits") and client.is_model_ready("identity", "1")
        index = client.get_model_repository_index(as_json=True)["models"]
        assert {(m["name"], m["state"]) for m in index} == {("digits", "READY"), ("identity", "READY"),
                                                             ("double", "READY")}
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.is_model_ready("nope")

    await run(calls)


# --- inference -----------------------------------------------------------------------------------------
async def test_infer_rest_json_and_binary_match_onnxruntime(servers: Servers) -> None:
    x = digits_rows(5)
    label, probabilities = reference(servers.repository, x)

    def calls() -> None:
        client = thttp.InferenceServerClient(servers.http)
        for binary_in in (True, False):
            tensor = thttp.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary_in)
            for binary_out in (True, False):
                outputs = [thttp.InferRequestedOutput("label", binary_data=binary_out),
                           thttp.InferRequestedOutput("probabilities", binary_data=binary_out)]
                result = client.infer("digits", [tensor], outputs=outputs, request_id="r-1")
                np.testing.assert_array_equal(result.as_numpy("label"), label)
                np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
                response = result.get_response()
                assert response["model_name"] == "digits" and response["model_version"] == "1"
                assert response["id"] == "r-1"
        # All outputs (binary by default, as tritonclient asks), an explicit version, one output only.
        tensor = thttp.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("digits", [tensor], model_version="1")
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        only = client.infer("digits", [tensor], outputs=[thttp.InferRequestedOutput("label")])
        assert [o["name"] for o in only.get_response()["outputs"]] == ["label"]
        # Compressed request and response bodies.
        zipped = client.infer("digits", [tensor], request_compression_algorithm="gzip",
                              response_compression_algorithm="gzip")
        np.testing.assert_array_equal(zipped.as_numpy("label"), label)

    await run(calls)


async def test_infer_grpc_matches_onnxruntime(servers: Servers) -> None:
    x = digits_rows(4)
    label, probabilities = reference(servers.repository, x)

    def calls() -> None:
        client = tgrpc.InferenceServerClient(servers.grpc)
        tensor = tgrpc.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("digits", [tensor], request_id="g-1")
        np.testing.assert_array_equal(result.as_numpy("label"), label)
        np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, atol=1e-6)
        response = result.get_response()
        assert response.model_name == "digits" and response.model_version == "1" and response.id == "g-1"
        assert len(response.raw_output_contents) == 2
        only = client.infer("digits", [tensor], model_version="1", outputs=[tgrpc.InferRequestedOutput("probabilities")])
        assert [o.name for o in only.get_response().outputs] == ["probabilities"]

    await run(calls)


async def test_every_datatype_round_trips_over_rest_and_grpc(servers: Servers) -> None:
    data = {t: sample(t) for t in TYPES}

    def calls() -> None:
        http = thttp.InferenceServerClient(servers.http)
        grpc = tgrpc.InferenceServerClient(servers.grpc)
        for binary in (True, False):
            inputs = []
            for t, array in data.items():
                tensor = thttp.InferInput(f"in_{t}", list(array.shape), t)
                tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            outputs = [thttp.InferRequestedOutput(f"out_{t}", binary_data=binary) for t in TYPES]
            result = http.infer("identity", inputs, outputs=outputs)
            for t, array in data.items():
                got = result.as_numpy(f"out_{t}")
                if t == "BYTES":
                    got = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(got)
                np.testing.assert_array_equal(got, array, err_msg=f"REST {t} binary={binary}")
        inputs = []
        for t, array in data.items():
            tensor = tgrpc.InferInput(f"in_{t}", list(array.shape), t)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = grpc.infer("identity", inputs)
        for t, array in data.items():
            got = result.as_numpy(f"out_{t}")
            if t == "BYTES":
                got = np.vectorize(lambda v: v.decode(), otypes=[object])(got)
            np.testing.assert_array_equal(got, array, err_msg=f"gRPC {t}")

    await run(calls)


async def test_model_without_batch_dimension(servers: Servers) -> None:
    x = np.arange(4, dtype=np.float32).reshape(2, 2)

    def calls() -> None:
        client = thttp.InferenceServerClient(servers.http)
        tensor = thttp.InferInput("x", [2, 2], "FP32")
        tensor.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("double", [tensor]).as_numpy("y"), 2 * x)
        assert client.get_model_config("double")["max_batch_size"] == 0

    await run(calls)


async def test_grpc_listener_over_tls(demo_backends: Backends, start_gateway: StartGateway, repository: Path,
                                      tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    raw = inference_config(demo_backends, repository, grpc_listen={
        "port": 0, "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}})
    gw = await start_gateway(raw)
    x = digits_rows(1)

    def calls() -> None:
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{gw.serving.inference_grpc_port}", ssl=True,
                                             root_certificates=str(pki.ca))
        assert client.is_server_ready()
        tensor = tgrpc.InferInput("input", [1, 64], "FP32")
        tensor.set_data_from_numpy(x)
        assert client.infer("digits", [tensor]).as_numpy("label").shape == (1,)
        plain = tgrpc.InferenceServerClient(f"127.0.0.1:{gw.serving.inference_grpc_port}")
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=2)

    await run(calls)
