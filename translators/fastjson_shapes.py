"""What fastjson's parser and printer share: the "not sure" signal and the message shapes json_format sets apart.

`_Fallback` is what any compiled converter or emitter raises when it cannot be sure of giving
json_format's result, so that its caller hands the whole message to json_format instead. The shapes
are the ones both directions treat apart from plain messages: the generic well-known types (each
read and printed as its JSON string), the wrappers (read and printed as their `value`) and a map's
entry fields. Nothing here runs per request: the compilers of `fastjson_parser` and
`fastjson_printer` read these when they compile a message type (at plan-build time or first use).
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

_F = FieldDescriptor
_GENERIC_WKT = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


class _Fallback(Exception):
    """Not sure: let json_format do it."""


def _is_wrapper(desc: Descriptor) -> bool:
    return bool(desc.file.name == "google/protobuf/wrappers.proto")


def _entry_fields(map_field: FieldDescriptor) -> tuple[FieldDescriptor, FieldDescriptor]:
    entry = map_field.message_type
    return entry.fields_by_name["key"], entry.fields_by_name["value"]
