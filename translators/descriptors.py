"""Service descriptors from one of three sources, and the `google.api.http` rules they carry.

Sources: the stubs generated from `protos/` (modules imported by name, default pool), a
FileDescriptorSet file (`protoc --descriptor_set_out --include_imports`), or a backend's server
reflection. Each yields `ServiceInfo` values; the rules are read from each file's serialized
`FileDescriptorProto`, which works the same for every pool. Loaded once at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool


class DescriptorError(ValueError):
    """A descriptor source that cannot be loaded; raised at start-up."""


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    descriptor: descriptor.ServiceDescriptor
    rules: dict[str, http_pb2.HttpRule]  # method name -> its annotation (methods without one absent)
    source: str  # where it came from, for error messages and /routes

    @property
    def name(self) -> str:
        return self.descriptor.full_name


def from_modules(modules: Sequence[str]) -> list[ServiceInfo]:
    """Services defined in already generated `*_pb2` modules (the default pool)."""
    import protos

    protos.add_generated_path()
    out: list[ServiceInfo] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise DescriptorError(f"cannot import stub module {name!r}: {exc}") from exc
        file_desc = module.DESCRIPTOR
        out.extend(_services(file_desc, f"module {name}"))
    return out


def from_descriptor_set(path: str | Path) -> list[ServiceInfo]:
    """Services of a FileDescriptorSet built with `--include_imports`, in a pool of their own."""
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    except (OSError, Exception) as exc:
        raise DescriptorError(f"cannot read descriptor set {path}: {exc}") from exc
    pool = descriptor_pool.DescriptorPool()
    try:
        for file_proto in fds.file:
            pool.Add(file_proto)
    except Exception as exc:
        raise DescriptorError(f"descriptor set {path} is inconsistent: {exc}") from exc
    out: list[ServiceInfo] = []
    for file_proto in fds.file:
        if file_proto.service and not file_proto.package.startswith("google."):
            out.extend(_services(pool.FindFileByName(file_proto.name), f"descriptor set {path}"))
    return out


def from_reflection(address: str, timeout_s: float = 5.0, services: Iterable[str] = ()) -> list[ServiceInfo]:
    """Services a backend lists through server reflection (synchronous: called once at start-up)."""
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(db)
        wanted = list(services) or [
            s for s in db.get_services() if not s.startswith(("grpc.", "google."))
        ]
        out = []
        for name in wanted:
            service = pool.FindServiceByName(name)
            out.append(_service_info(service, f"reflection at {address}"))
        return out
    except grpc.FutureTimeoutError as exc:
        raise DescriptorError(f"reflection: backend {address} not reachable in {timeout_s}s") from exc
    except (KeyError, grpc.RpcError) as exc:
        raise DescriptorError(f"reflection at {address} failed: {exc}") from exc
    finally:
        channel.close()


def _services(file_desc: descriptor.FileDescriptor, source: str) -> list[ServiceInfo]:
    return [_service_info(s, source) for s in file_desc.services_by_name.values()]


def _service_info(service: descriptor.ServiceDescriptor, source: str) -> ServiceInfo:
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(service.file.serialized_pb)
    rules: dict[str, http_pb2.HttpRule] = {}
    for service_proto in file_proto.service:
        if service_proto.name != service.name:
            continue
        for method_proto in service_proto.method:
            if method_proto.options.HasExtension(annotations_pb2.http):
                rules[method_proto.name] = method_proto.options.Extensions[annotations_pb2.http]
    return ServiceInfo(service, rules, source)
