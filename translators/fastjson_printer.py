"""fastjson's printer: a message into exactly what `json_format.MessageToDict` gives, key order included.

`printer_for(descriptor, ...)` compiles one message type under one set of print options, on its
first use, into per-field emitters (None where a value is its own JSON), kept per option set and
keyed by the descriptor itself. On the request path, `translators.response` calls
`message_to_dict` once per response (and per streamed message): it lists the set fields in number
order, emits each, then adds the defaults `always_print` asks for. Any, Struct and Value print
through json_format per value, its printer having no state; an extension, a closed enum's unknown
number or any error sends the whole message to json_format, and `fallbacks` counts those.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

from translators.fastjson_shapes import _F, _GENERIC_WKT, _entry_fields, _Fallback, _is_wrapper
from translators.fields import is_map, is_repeated

Emit = Callable[[Any], Any]  # field value -> JSON value


def _json_enum_extension() -> Any:
    try:
        return descriptor_pool.Default().FindExtensionByName("pb.enumvalue.json")
    except KeyError:
        return None


class MessagePrinter:
    """message -> `json_format.MessageToDict` output for one type and one set of print options."""

    __slots__ = ("_defaults", "_fields", "_options", "descriptor", "fallbacks")

    def __init__(self, desc: Descriptor, options: tuple[bool, bool, bool]) -> None:
        self.descriptor = desc
        self.fallbacks = 0
        self._options = options  # (always print fields with no presence, proto names, enums as ints)
        self._fields: dict[FieldDescriptor, tuple[str, Emit | None]] = {}
        self._defaults: tuple[tuple[str, Any], ...] = ()

    def to_json(self, message: Message) -> Any:
        try:
            return self._print(message)
        except Exception:  # noqa: BLE001 - a FieldMask path without JSON form, say: json_format raises
            self.fallbacks += 1
            return json_format.MessageToDict(message, *self._options)

    def _print(self, message: Message) -> dict[str, Any]:
        fields = self._fields
        js: dict[str, Any] = {}
        for field, value in message.ListFields():  # field-number order, as json_format prints
            spec = fields.get(field)
            if spec is None:  # an extension
                raise _Fallback
            key, emit = spec
            js[key] = value if emit is None else emit(value)
        for key, default in self._defaults:  # always_print: then the unset ones, in declaration order
            if key not in js:
                js[key] = default.copy() if type(default) in (list, dict) else default
        return js

    def _compile(self, printers: dict[Descriptor, MessagePrinter]) -> None:
        always, proto_names, _ = self._options
        defaults: list[tuple[str, Any]] = []
        for field in self.descriptor.fields:
            key = field.name if proto_names else field.json_name
            emit = _field_emit(field, self._options, printers)
            self._fields[field] = (key, emit)
            if always and not field.has_presence:
                if is_map(field):
                    defaults.append((key, {}))
                elif is_repeated(field):
                    defaults.append((key, []))
                else:
                    value = field.default_value
                    defaults.append((key, value if emit is None else emit(value)))
        self._defaults = tuple(defaults)


def printer_for(
    desc: Descriptor, always_print: bool = False, proto_names: bool = False, enums_as_ints: bool = False
) -> MessagePrinter:
    """The compiled printer of `desc` under these options, made on first use and kept."""
    options = (always_print, proto_names, enums_as_ints)
    cache = _PRINTERS[always_print * 4 + proto_names * 2 + enums_as_ints]
    if desc not in cache and len(cache) > 10_000:  # descriptors of pools that reloads replaced
        cache.clear()
    return _printer(desc, options, {})


def message_to_dict(
    message: Message,
    always_print_fields_with_no_presence: bool = False,
    preserving_proto_field_name: bool = False,
    use_integers_for_enums: bool = False,
) -> Any:
    """`json_format.MessageToDict(message, ...)` with these options, through the compiled printer."""
    always, proto_names, as_ints = (
        always_print_fields_with_no_presence,
        preserving_proto_field_name,
        use_integers_for_enums,
    )
    printer = _PRINTERS[always * 4 + proto_names * 2 + as_ints].get(message.DESCRIPTOR)
    return (printer or printer_for(message.DESCRIPTOR, always, proto_names, as_ints)).to_json(message)


# One cache per option set, keyed by the descriptor itself: the cheapest lookup per response.
_PRINTERS: list[dict[Descriptor, MessagePrinter]] = [{} for _ in range(8)]


def _printer(
    desc: Descriptor, options: tuple[bool, bool, bool], compiling: dict[Descriptor, MessagePrinter]
) -> MessagePrinter:
    cache = _PRINTERS[options[0] * 4 + options[1] * 2 + options[2]]
    printer = compiling.get(desc) or cache.get(desc)  # a recursive type is in `compiling` meanwhile
    if printer is None:
        printer = compiling[desc] = MessagePrinter(desc, options)
        printer._compile(compiling)
        cache[desc] = printer
    return printer


def _field_emit(
    field: FieldDescriptor, options: tuple[bool, bool, bool], printers: dict[Descriptor, MessagePrinter]
) -> Emit | None:
    """How json_format prints a value of `field`: None when the value is its own JSON."""
    if is_map(field):
        key_field, value_field = _entry_fields(field)
        value_emit = _value_emit(value_field, options, printers)
        if key_field.type == _F.TYPE_BOOL:
            return lambda m: {("true" if k else "false"): _apply(value_emit, m[k]) for k in m}
        if key_field.type == _F.TYPE_STRING:
            if value_emit is None:
                return lambda m: {k: m[k] for k in m}
            return lambda m: {k: value_emit(m[k]) for k in m}
        return lambda m: {str(k): _apply(value_emit, m[k]) for k in m}
    emit = _value_emit(field, options, printers)
    if not is_repeated(field):
        return emit
    if emit is None:
        return list
    return lambda values: [emit(v) for v in values]


def _apply(emit: Emit | None, value: Any) -> Any:
    return value if emit is None else emit(value)


def _value_emit(
    field: FieldDescriptor, options: tuple[bool, bool, bool], printers: dict[Descriptor, MessagePrinter]
) -> Emit | None:
    cpp = field.cpp_type
    if cpp == _F.CPPTYPE_MESSAGE:
        sub = field.message_type
        if sub.full_name in _GENERIC_WKT:
            return lambda m: m.ToJsonString()
        if _is_wrapper(sub):
            inner = _value_emit(sub.fields_by_name["value"], options, printers)
            return lambda m: _apply(inner, m.value)
        if sub.full_name.startswith("google.protobuf.") and sub.full_name != "google.protobuf.Empty":
            # Any, Struct, Value, ListValue: json_format's printer has no state, so this is its output.
            return lambda m: json_format.MessageToDict(m, *options)
        return _printer(sub, options, printers)._print
    if cpp == _F.CPPTYPE_ENUM:
        return _enum_emit(field.enum_type, options[2])
    if field.type == _F.TYPE_BYTES:
        return lambda b: base64.b64encode(b).decode("utf-8")
    if cpp in (_F.CPPTYPE_INT64, _F.CPPTYPE_UINT64):
        return str
    if cpp == _F.CPPTYPE_DOUBLE:
        return _print_double
    if cpp == _F.CPPTYPE_FLOAT:
        return lambda v: _print_double(v) if v - v != 0.0 else type_checkers.ToShortestFloat(v)
    return None  # strings, bools and 32-bit ints print as they are


def _print_double(value: float) -> float | str:
    if value - value == 0.0:
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _enum_emit(enum: EnumDescriptor, as_ints: bool) -> Emit | None:
    if as_ints:
        return None
    if enum.full_name == "google.protobuf.NullValue":
        return lambda v: None
    # json_format prints values_by_number's pick among aliases (indexing it gives the first; iterating
    # it yields them all) under its `pb.enumvalue.json` name, if it has one.
    ext = _json_enum_extension()
    names = {}
    for number in {v.number for v in enum.values}:
        value = enum.values_by_number[number]
        options = value.GetOptions()
        has_custom = ext is not None and options.HasExtension(ext)
        names[number] = options.Extensions[ext].string if has_custom else value.name
    closed = enum.is_closed

    def emit(number: int) -> Any:
        name = names.get(number)
        if name is not None:
            return name
        if closed:  # json_format refuses to print it
            raise _Fallback
        return number

    return emit
