"""gRPC: `inference.GRPCInferenceService` on a grpc.aio listener of the gateway.

The messages come from the protocol's proto (`protos/inference/grpc_service.proto`), read from the
descriptor set `make proto` writes into a descriptor pool of their own: a Triton client's stubs
register the same `inference.*` names in the default pool, and both must live in one process (a
backend, a test) without clashing. The service is registered as a generic handler per method.

Each RPC is a call like any other: a `Call` made from the invocation metadata (case-insensitive,
so `x-api-key` and `authorization` work as headers do), its route `inference.<model>`,
`inference/server` or `inference/repository`, and the pipeline of the runtime serving now:
`on_request`, `on_message` once with no message, the handler, and `on_complete` always. Errors end
the RPC with the code of the gateway's table (`gateway.inference.gateway_error` for serving errors)
and the headers policies set (rate-limit, Retry-After) as trailing metadata. `start` binds the
listener (SO_REUSEPORT, so several workers share it) and the lifecycle stops it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from multidict import CIMultiDict, CIMultiDictProxy

import protos
from gateway.call import Call
from gateway.inference import EXTENSIONS, SERVER_NAME, Inference, gateway_error
from gateway.inference_config import REPOSITORY_ROUTE, SERVER_ROUTE, SERVICE, GrpcListener
from gateway.pipeline import Pipeline, Reply, settle
from screening.serving import codec, grpc_codec
from screening.serving.errors import InvalidInput, ModelNotFound, ServingError
from translators.errors import GatewayError
from translators.status import http_status

log = logging.getLogger("portcullis.inference.grpc")
PROTO_FILE = "inference/grpc_service.proto"
SERVICE_NAME = "inference.GRPCInferenceService"
# A policy's Reply (an answer of its own, such as a screening block) in gRPC terms, by its HTTP status.
_REPLY_CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
                429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}


@functools.cache
def messages() -> dict[str, type[Any]]:
    """The protocol's message classes by name, from a descriptor pool of their own (built once)."""
    protos.add_generated_path()
    fds = descriptor_pb2.FileDescriptorSet.FromString(protos.DESCRIPTOR_SET.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in fds.file:
        if file_proto.name == PROTO_FILE:
            pool.Add(file_proto)
            break
    else:
        raise RuntimeError(f"{PROTO_FILE} is not in {protos.DESCRIPTOR_SET}: run `make proto`")
    file = pool.FindFileByName(PROTO_FILE)
    return {name: message_factory.GetMessageClass(desc) for name, desc in file.message_types_by_name.items()}


def _client_ip(peer: str) -> str:
    """`ipv4:127.0.0.1:5000` or `ipv6:[::1]:5000` -> the address."""
    _, _, rest = peer.partition(":")
    host = rest.rpartition(":")[0]
    return host.strip("[]") or peer


Handler = Callable[[Any, Call], Awaitable[Any]]


class Servicer:
    def __init__(self, inference: Inference, pipeline: Callable[[], Pipeline]) -> None:
        self.inference = inference
        self.repository = inference.repository
        self.pipeline = pipeline
        self.m = messages()

    def handlers(self) -> grpc.GenericRpcHandler:
        m = self.m
        model = self.inference.route_for
        server = lambda _r: SERVER_ROUTE
        repository = lambda _r: REPOSITORY_ROUTE
        table: dict[str, tuple[Callable[[Any], str], Handler, str, str]] = {
            "ServerLive": (server, self.server_live, "ServerLiveRequest", "ServerLiveResponse"),
            "ServerReady": (server, self.server_ready, "ServerReadyRequest", "ServerReadyResponse"),
            "ServerMetadata": (server, self.server_metadata, "ServerMetadataRequest", "ServerMetadataResponse"),
            "ModelReady": (lambda r: model(r.name), self.model_ready, "ModelReadyRequest", "ModelReadyResponse"),
            "ModelMetadata": (lambda r: model(r.name), self.model_metadata, "ModelMetadataRequest",
                              "ModelMetadataResponse"),
            "ModelInfer": (lambda r: model(r.model_name), self.model_infer, "ModelInferRequest",
                           "ModelInferResponse"),
            "RepositoryIndex": (repository, self.index, "RepositoryIndexRequest", "RepositoryIndexResponse"),
            "RepositoryModelLoad": (repository, self.load, "RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
            "RepositoryModelUnload": (repository, self.unload, "RepositoryModelUnloadRequest",
                                      "RepositoryModelUnloadResponse"),
        }
        methods = {
            name: grpc.unary_unary_rpc_method_handler(
                self._unary(name, route, handler),
                request_deserializer=m[request].FromString,
                response_serializer=m[response].SerializeToString,
            )
            for name, (route, handler, request, response) in table.items()
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, methods)

    def _unary(self, method: str, route: Callable[[Any], str], handler: Handler,
               ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        path = f"/{SERVICE_NAME}/{method}"

        async def rpc(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            metadata = CIMultiDict(
                (k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str) and not k.endswith("-bin")
            )
            call = Call(
                request_id=Call.new_request_id(metadata.get("x-request-id")), method="POST", path=path,
                client_ip=_client_ip(context.peer()), headers=CIMultiDictProxy(metadata),
            )
            call.route, call.service = route(request), SERVICE
            pipeline = self.pipeline()  # read once: a reload swaps it, this call keeps its own
            try:
                await settle(pipeline.on_request(call))
                await pipeline.on_message(call, None)
                try:
                    reply = await handler(request, call)
                except ServingError as exc:
                    raise gateway_error(exc) from None
                call.status, call.grpc_code = 200, "OK"
                _trailers(context, call.response_headers)
                return reply
            except Reply as reply:
                code = _REPLY_CODES.get(reply.status, grpc.StatusCode.FAILED_PRECONDITION)
                call.status, call.grpc_code = reply.status, code.name
                _trailers(context, {**call.response_headers, **reply.headers})
                await context.abort(code, f"refused by a policy (HTTP {reply.status})")
            except GatewayError as err:
                call.error, call.grpc_code = err, err.code.name
                call.status = err.http_status or http_status(err.code)
                _trailers(context, {**call.response_headers, **err.headers})
                await context.abort(err.code, err.message)
            except asyncio.CancelledError:
                call.status, call.grpc_code = 499, grpc.StatusCode.CANCELLED.name
                raise
            except Exception:
                log.exception("inference RPC %s failed (request %s)", method, call.request_id)
                internal = GatewayError(grpc.StatusCode.INTERNAL, "internal error")
                call.error, call.grpc_code, call.status = internal, internal.code.name, 500
                await context.abort(internal.code, internal.message)
            finally:
                await settle(pipeline.on_complete(call))

        return rpc

    # --- the RPCs -------------------------------------------------------------------------------------
    async def server_live(self, _request: Any, _call: Call) -> Any:
        return self.m["ServerLiveResponse"](live=True)

    async def server_ready(self, _request: Any, _call: Call) -> Any:
        return self.m["ServerReadyResponse"](ready=self.repository.ready())

    async def server_metadata(self, _request: Any, _call: Call) -> Any:
        doc = codec.server_metadata(SERVER_NAME, self.inference.version, EXTENSIONS)
        return self.m["ServerMetadataResponse"](**doc)

    async def model_ready(self, request: Any, _call: Call) -> Any:
        try:
            self.repository.resolve(request.name, request.version or None)
        except ModelNotFound:
            raise
        except ServingError:
            return self.m["ModelReadyResponse"](ready=False)
        return self.m["ModelReadyResponse"](ready=True)

    async def model_metadata(self, request: Any, _call: Call) -> Any:
        served = self.repository.resolve(request.name, request.version or None)
        doc = codec.model_metadata(served.model, self.repository.ready_versions(request.name))
        tensor = self.m["ModelMetadataResponse"].TensorMetadata
        return self.m["ModelMetadataResponse"](
            name=doc["name"], versions=doc["versions"], platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]], outputs=[tensor(**t) for t in doc["outputs"]],
        )

    async def model_infer(self, request: Any, call: Call) -> Any:
        call.upstream = "inference"
        call.bytes_in = request.ByteSize()
        model, infer_request, result = await self.inference.infer(
            call, request.model_name, request.model_version or None, lambda: grpc_codec.decode_request(request)
        )
        return grpc_codec.encode_response(self.m["ModelInferResponse"](), model, infer_request, result.outputs)

    def _repository(self, name: str) -> None:
        if name:
            raise ModelNotFound(f"unknown repository '{name}': this server has one, named ''")

    async def index(self, request: Any, _call: Call) -> Any:
        self._repository(request.repository_name)
        response = self.m["RepositoryIndexResponse"]()
        for doc in codec.index_document(self.repository.index(request.ready)):
            response.models.add(**doc)
        return response

    async def load(self, request: Any, _call: Call) -> Any:
        self._repository(request.repository_name)
        if request.parameters:
            raise InvalidInput(f"load parameters are not supported: {', '.join(sorted(request.parameters))}")
        await self.repository.load(request.model_name)
        return self.m["RepositoryModelLoadResponse"]()

    async def unload(self, request: Any, _call: Call) -> Any:
        self._repository(request.repository_name)
        await self.repository.unload(request.model_name)
        return self.m["RepositoryModelUnloadResponse"]()


def _trailers(context: grpc.aio.ServicerContext[Any, Any], headers: dict[str, str]) -> None:
    if headers:
        context.set_trailing_metadata(tuple((k.lower(), v) for k, v in headers.items() if v.isascii()))


def _credentials(listen: GrpcListener) -> grpc.ServerCredentials | None:
    tls = listen.tls
    if tls is None:
        return None
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())], root_certificates=client_ca,
        require_client_auth=tls.client_auth == "require",
    )


async def start(inference: Inference, pipeline: Callable[[], Pipeline], listen: GrpcListener,
                ) -> tuple[grpc.aio.Server, int]:
    """Bind and start the listener; the bound port (never 0)."""
    limit = inference.config.max_request_bytes
    server = grpc.aio.server(options=(
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
    ))
    server.add_generic_rpc_handlers((Servicer(inference, pipeline).handlers(),))
    address = f"{listen.host}:{listen.port}"
    credentials = _credentials(listen)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return server, port
