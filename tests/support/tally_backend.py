"""A client-streaming test backend, `tally.v1.Tally`, whose descriptor is made in code.

The demo protos have no client-streaming (stream in, one reply out) method, and the benchmark
contract in echo.proto is not ours to grow, so this backend brings its own: `Sum(stream Num)
returns (Total)` adds the numbers it receives and answers once the client half-closes; a Num whose
value is negative aborts the call with INVALID_ARGUMENT. `descriptor_set(path)` writes the
FileDescriptorSet a gateway config points a `descriptor_set` source at; `serve()` starts a grpc.aio
server with a generic handler for it (no health service: configure the backend without health).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "tally.v1"
SERVICE = f"{PACKAGE}.Tally"
_T = descriptor_pb2.FieldDescriptorProto


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="tally/v1/tally.proto", package=PACKAGE, syntax="proto3")
    num = proto.message_type.add(name="Num")
    num.field.add(name="value", number=1, type=_T.TYPE_INT64, label=_T.LABEL_OPTIONAL, json_name="value")
    total = proto.message_type.add(name="Total")
    total.field.add(name="sum", number=1, type=_T.TYPE_INT64, label=_T.LABEL_OPTIONAL, json_name="sum")
    total.field.add(name="count", number=2, type=_T.TYPE_INT32, label=_T.LABEL_OPTIONAL, json_name="count")
    service = proto.service.add(name="Tally")
    service.method.add(
        name="Sum", input_type=f".{PACKAGE}.Num", output_type=f".{PACKAGE}.Total", client_streaming=True
    )
    return proto


def descriptor_set(path: Path) -> Path:
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file_descriptor()]).SerializeToString())
    return path


def _classes() -> tuple[type, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    num = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Num"))
    total = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Total"))
    return num, total


@dataclass(frozen=True, slots=True)
class TallyServer:
    server: grpc.aio.Server
    address: str

    async def stop(self) -> None:
        await self.server.stop(0)


async def serve(address: str = "127.0.0.1:0") -> TallyServer:
    num_class, total_class = _classes()

    async def sum_numbers(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        total, count = 0, 0
        async for raw in requests:
            value = num_class.FromString(raw).value
            if value < 0:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"negative number {value}")
            total += value
            count += 1
        return total_class(sum=total, count=count).SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Sum": grpc.stream_unary_rpc_method_handler(sum_numbers)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    await server.start()
    return TallyServer(server, f"{address.rpartition(':')[0]}:{port}")
