"""What kind of field a descriptor is, as the JSON mapping sees it: shared by request parsing,
response printing and the OpenAPI generator so that they agree on what a query string can set."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

# Well-known types whose JSON form is a string, so a path or query value can set them directly.
STRING_WKT = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Value",
    }
)
WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)


def is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def is_repeated(field: FieldDescriptor) -> bool:
    # `is_repeated` is the newer protobuf API; `label` is deprecated in it.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def is_plain_message(field: FieldDescriptor) -> bool:
    """A singular, non-map message field."""
    return field.type == FieldDescriptor.TYPE_MESSAGE and not is_map(field) and not is_repeated(field)
