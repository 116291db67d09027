"""Our `inference` proto is wire-compatible with the reference one tritonclient is built from.

Every message and RPC we declare must exist in tritonclient's `grpc_service.proto` with the same
fields: names, numbers, types, labels and message types. The reference may have more (extensions
we do not serve); never different.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from gateway.inference_grpc import SERVICE_NAME, messages


def _fields(descriptor: Any) -> dict[str, tuple[int, int, bool, str | None]]:
    return {
        f.name: (f.number, f.type, f.is_repeated, f.message_type.full_name if f.message_type else None)
        for f in descriptor.fields
    }


def _compare(ours: Any, theirs: Any) -> None:
    assert _fields(ours) == _fields(theirs), ours.full_name
    for nested in ours.nested_types:
        _compare(nested, theirs.nested_types_by_name[nested.name])
    assert [o.name for o in ours.oneofs] == [o.name for o in theirs.oneofs]


def test_messages_match_the_reference_proto() -> None:
    reference = service_pb2.DESCRIPTOR
    ours = messages()
    assert len(ours) == 21
    for name, cls in ours.items():
        _compare(cls.DESCRIPTOR, reference.message_types_by_name[name])


def test_rpcs_match_the_reference_service() -> None:
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    ours = next(iter(messages().values())).DESCRIPTOR.file.services_by_name["GRPCInferenceService"]
    assert ours.full_name == SERVICE_NAME == theirs.full_name
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
            "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"} == set(ours.methods_by_name)
    for method in ours.methods:
        reference = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == reference.input_type.full_name
        assert method.output_type.full_name == reference.output_type.full_name
        assert not method.server_streaming and not method.client_streaming
