"""Protobuf response messages to JSON bytes, honouring `response_body` and the print options.

The proto3 JSON mapping is `json_format`'s (lowerCamelCase names, int64 as strings, enums by name,
well-known types), printed by `fastjson`'s compiled printers, which give `MessageToDict`'s output;
`orjson` writes the bytes compactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from translators.fastjson import message_to_dict
from translators.fields import is_plain_message
from translators.options import TranscodeOptions


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    response_field: FieldDescriptor | None  # `response_body`, or None for the whole message
    options: TranscodeOptions


def to_dict(message: Message, options: TranscodeOptions) -> Any:
    # Positional (always_print_fields_with_no_presence, preserving_proto_field_name,
    # use_integers_for_enums): no keyword parsing, once per response.
    return message_to_dict(
        message, options.always_print_primitive_fields, options.preserve_proto_field_names, options.enums_as_ints
    )


def render(plan: ResponsePlan, message: Message) -> bytes:
    if plan.response_field is None:  # the whole message, the common case: one call less per response
        return orjson.dumps(to_dict(message, plan.options))
    return orjson.dumps(to_json_value(plan, message))


def to_json_value(plan: ResponsePlan, message: Message) -> Any:
    """The JSON value of a response (or of its `response_body` field), before serialisation."""
    field = plan.response_field
    if field is None:
        return to_dict(message, plan.options)
    if is_plain_message(field):
        return to_dict(getattr(message, field.name), plan.options)
    # A scalar, repeated or map field: print it with its default so the body is never empty.
    whole = message_to_dict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=plan.options.preserve_proto_field_names,
        use_integers_for_enums=plan.options.enums_as_ints,
    )
    key = field.name if plan.options.preserve_proto_field_names else field.json_name
    return whole.get(key)
