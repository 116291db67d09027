"""Model serving: any ONNX model of the registry, by the Open Inference Protocol's rules.

A library the gateway uses (it imports neither `gateway` nor aiohttp); numpy and onnxruntime only.

    errors.py      the serving errors, each naming the protocol status it stands for
    datatypes.py   protocol datatypes <-> numpy <-> ONNX, and tensor bytes (raw and BYTES framing)
    settings.py    per-model serving settings (batching, queue, concurrency, versions), layered
    model.py       the Loader: manifest, checksum, session, signature from the ONNX graph, smoke test
    batcher.py     per-version dynamic batcher: a bounded queue and worker threads sharing one session
    repository.py  the Source and Manager: versions on disk, load, unload, hot swap, leases
    codec.py       the REST/JSON body (with the binary tensor extension) <-> tensors
    grpc_codec.py  `ModelInferRequest` / `ModelInferResponse` messages <-> tensors
    demo_model.py  trains and exports the `digits` demo model (scikit-learn, skl2onnx)

Request path: a transport decodes an `InferRequest` (codec or grpc_codec), the repository resolves
the model version and lends it for the call (`repository.lease`), the version checks the request
against its signature and submits it to its batcher, and the transport encodes the outputs.
"""
