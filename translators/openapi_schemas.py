"""The schemas of the OpenAPI document: proto messages, enums and scalars in their proto3 JSON forms.

`openapi.build_openapi` makes one `_Schemas` per binding, under that binding's print options, and
asks it for the schema of each path parameter, query parameter, request body and response; it
writes every message and enum it meets into the document's shared `components.schemas`, once, keyed
by full proto name with a suffix under non-default print options (`-ProtoNames`, `-EnumInts`), and
answers a `$ref` to it. The forms are those of `json_format`: lowerCamelCase names unless proto names
are preserved, 64-bit integers as strings, enums by name or number, wrappers as their nullable
scalar, other well-known types as their fixed JSON forms, errors as `google.rpc.Status`. Like the
rest of the document, this runs on demand (`GET /openapi.json`, `portcullis openapi`), never per
proxied request.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from translators.fields import WRAPPERS, is_map, is_repeated
from translators.routes import Binding

_F = FieldDescriptor
_STATUS = "google.rpc.Status"
_ANY_JSON: dict[str, Any] = {
    "type": "object",
    "properties": {"@type": {"type": "string", "description": "The type URL of the embedded message."}},
    "additionalProperties": True,
}
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    # 64-bit integers are JSON strings in proto3: a JSON number (a double) cannot hold them all.
    **{t: {"type": "string", "format": "int64"} for t in (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64)},
    **{t: {"type": "string", "format": "uint64"} for t in (_F.TYPE_UINT64, _F.TYPE_FIXED64)},
    **{t: {"type": "integer", "format": "int32"} for t in (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32)},
    # uint32 overflows int32: widened, as grpc-gateway does.
    **{t: {"type": "integer", "format": "int64", "minimum": 0} for t in (_F.TYPE_UINT32, _F.TYPE_FIXED32)},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "3.5s"},
    "google.protobuf.FieldMask": {"type": "string", "example": "title,author.name"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {"description": "Any JSON value."},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": _ANY_JSON,
}
_STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error, as the gateway renders every failure (google.rpc.Status).",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "The google.rpc.Code number."},
        "message": {"type": "string"},
        "details": {"type": "array", "items": _ANY_JSON},
    },
}


class _Schemas:
    """Schemas under one binding's print options, written into the document's shared components."""

    def __init__(self, components: dict[str, Any], binding: Binding, notes: Mapping[str, str]) -> None:
        options = binding.response.options
        self.components = components
        self.notes = notes
        self.proto_names = options.preserve_proto_field_names
        self.enum_ints = options.enums_as_ints
        self.enum_suffix = "-EnumInts" if self.enum_ints else ""
        # '-' cannot occur in a proto name, so a suffixed key never meets a real message.
        self.suffix = ("-ProtoNames" if self.proto_names else "") + self.enum_suffix

    def name(self, field: FieldDescriptor) -> str:
        return field.name if self.proto_names else field.json_name

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if is_map(field):
            value = self._single(field.message_type.fields_by_name["value"])
            return {"type": "object", "additionalProperties": value}
        single = self._single(field)
        return {"type": "array", "items": single} if is_repeated(field) else single

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == _F.TYPE_MESSAGE:
            return self.message(field.message_type)
        if field.type == _F.TYPE_ENUM:
            return self.enum(field.enum_type)
        return dict(_SCALARS[field.type])

    def message(self, desc: Descriptor) -> dict[str, Any]:
        full = desc.full_name
        if full in _WKT:
            return copy.deepcopy(_WKT[full])  # callers add descriptions; the table stays as written
        if full in WRAPPERS:  # a wrapper is its scalar, or null
            return {**_SCALARS[desc.fields_by_name["value"].type], "nullable": True}
        key = full + self.suffix
        if key not in self.components:
            schema: dict[str, Any] = {"type": "object", "properties": {}}
            self.components[key] = schema  # before the fields, so a recursive message refers to itself
            for field in desc.fields:
                schema["properties"][self.name(field)] = _described(
                    self.field(field), self.notes.get(field.full_name)
                )
            _described(schema, "\n\n".join(filter(None, [self.notes.get(full), self._oneofs(desc)])))
        return _ref(key)

    def enum(self, desc: EnumDescriptor) -> dict[str, Any]:
        if desc.full_name == "google.protobuf.NullValue":
            return {"nullable": True, "description": "Always JSON null."}
        key = desc.full_name + self.enum_suffix
        if key not in self.components:
            values = desc.values
            schema: dict[str, Any] = (
                {"type": "integer", "format": "int32", "enum": [v.number for v in values]}
                if self.enum_ints
                else {"type": "string", "enum": [v.name for v in values]}
            )
            self.components[key] = _described(schema, self.notes.get(desc.full_name))
        return _ref(key)

    def _oneofs(self, desc: Descriptor) -> str:
        proto = descriptor_pb2.DescriptorProto()
        desc.CopyToProto(proto)
        # proto3 `optional` fields sit in synthetic one-field oneofs: presence, not a choice.
        synthetic = {proto.oneof_decl[f.oneof_index].name for f in proto.field if f.proto3_optional}
        lines = [
            f"Oneof `{o.name}`: at most one of " + ", ".join(f"`{self.name(f)}`" for f in o.fields) + "."
            for o in desc.oneofs
            if o.name not in synthetic
        ]
        return "\n".join(lines)


def _described(schema: dict[str, Any], text: str | None) -> dict[str, Any]:
    """`schema` with a description; a `$ref` is wrapped, since OpenAPI 3.0 ignores a ref's siblings."""
    if not text:
        return schema
    if "$ref" in schema:
        return {"allOf": [schema], "description": text}
    schema["description"] = text
    return schema


def _ref(key: str) -> dict[str, Any]:
    return {"$ref": "#/components/schemas/" + key}
