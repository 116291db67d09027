"""fastjson's parser: a JSON tree into a message exactly as `json_format.ParseDict` would, or json_format itself.

`parser_for(cls)` compiles one message type, when a route's request plan is built at start-up,
into per-field converters (a table from JSON key to field name, the type that passes unchanged and
a converter), shared per type and descriptor pool. On the request path, `translators.request`
calls `MessageParser.parse` with the body's `orjson.loads` tree (and the path and query values)
once per request: a field whose JSON value already has the right type passes as it is, the others
go through their converter, and the message is built with one constructor call. Anything the
converters are not sure of raises `_Fallback` (or a `KeyError`, or upb's own error), and json_format
then parses the untouched tree; `fallbacks` counts those hand-overs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from translators.fastjson_shapes import _F, _GENERIC_WKT, _entry_fields, _Fallback, _is_wrapper
from translators.fields import is_map, is_repeated

_INTS = frozenset({_F.CPPTYPE_INT32, _F.CPPTYPE_INT64, _F.CPPTYPE_UINT32, _F.CPPTYPE_UINT64})
_MAX_DEPTH = 32  # json_format refuses past 100 levels; deep trees are rare, so they take its path
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")  # a subset of float()'s syntax

Conv = Callable[[Any, int], Any]  # (JSON value, depth) -> constructor value; raises _Fallback


class _Never:
    """A type no JSON value has: fields whose every value needs converting."""


class MessageParser:
    """dict -> message for one type; `fallbacks` counts the trees handed to json_format."""

    __slots__ = ("_fields", "_maps", "_oneofs", "_usable", "descriptor", "fallbacks", "message_class")

    def __init__(self, message_class: type[Message]) -> None:
        self.descriptor: Descriptor = message_class.DESCRIPTOR
        self.message_class = message_class
        self.fallbacks = 0
        # JSON key -> (field name, the type that passes unchanged, converter), json_format's lookup order.
        self._fields: dict[str, tuple[str, type, Conv]] = {}
        self._oneofs: tuple[tuple[str, ...], ...] = ()  # field names of each real oneof
        self._maps: tuple[str, ...] = ()
        self._usable = True

    def parse(self, tree: Any, ignore_unknown_fields: bool = False) -> Message:
        """What `json_format.ParseDict(tree, cls(), ignore_unknown_fields)` gives, or its `ParseError`."""
        if self._usable:
            try:
                kwargs = self._kwargs(tree, 0)
                if not self._maps:
                    return self.message_class(**kwargs)
                # upb builds a map from a constructor argument slowly; filling it afterwards is cheaper.
                # (A loop, not a comprehension: most requests set no map, and a comprehension is a call.)
                maps = []
                for name in self._maps:
                    if name in kwargs:
                        maps.append((name, kwargs.pop(name)))
                message = self.message_class(**kwargs)
                for name, entries in maps:
                    target = getattr(message, name)
                    for key in entries:
                        target[key] = entries[key]
                return message
            except Exception:  # noqa: BLE001 - json_format then parses or raises as it would have
                # upb refuses what json_format refuses (types, int ranges, surrogates): those land here too.
                self.fallbacks += 1
        message = self.message_class()
        json_format.ParseDict(tree, message, ignore_unknown_fields=ignore_unknown_fields)
        return message

    def _kwargs(self, js: Any, depth: int) -> dict[str, Any]:
        """Constructor arguments for `js`, `depth` messages deep; raises _Fallback or KeyError if unsure."""
        if type(js) is not dict or depth >= _MAX_DEPTH or not self._usable:
            raise _Fallback
        fields = self._fields
        kwargs: dict[str, Any] = {}
        for key, value in js.items():
            name, plain, conv = fields[key]  # KeyError: a key json_format ignores or refuses
            # No plain type is NoneType, and every converter refuses None, which json_format reads as "clear".
            kwargs[name] = value if type(value) is plain else conv(value, depth + 1)
        if len(kwargs) != len(js):  # a field under both its names: json_format merges or lets the last win
            raise _Fallback
        for members in self._oneofs:
            found = False
            for name in members:
                if name in kwargs:
                    if found:
                        raise _Fallback
                    found = True
        return kwargs

    def _compile(self, parsers: dict[str, MessageParser]) -> None:
        desc = self.descriptor
        # json_format looks a key up by JSON name first, then by proto name, among all fields.
        by_key = {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}
        specs = {field.name: _parse_spec(field, parsers) for field in desc.fields}
        self._fields = {key: spec for key, field in by_key.items() if (spec := specs[field.name]) is not None}
        self._maps = tuple(f.name for f in desc.fields if is_map(f) and specs[f.name] is not None)
        # Real oneofs only: a proto3 `optional` field is alone in its synthetic one.
        self._oneofs = tuple(tuple(f.name for f in o.fields) for o in desc.oneofs if len(o.fields) > 1)
        # json_format also records oneof names among the keys seen; a key equal to one is its business.
        names = {f.name for f in desc.fields} | {f.json_name for f in desc.fields}
        self._usable = not any(o.name in names for o in desc.oneofs)


def parser_for(message_class: type[Message]) -> MessageParser:
    """The compiled parser of `message_class`, shared per message type (and per descriptor pool)."""
    desc = message_class.DESCRIPTOR
    cached = _PARSERS.get(desc.full_name)
    if cached is not None and cached.descriptor is desc:
        return cached
    return _parser(desc, {})


_PARSERS: dict[str, MessageParser] = {}  # full name -> parser; replaced when a reload brings a new pool


def _parser(desc: Descriptor, compiling: dict[str, MessageParser]) -> MessageParser:
    if desc.full_name in compiling:  # a recursive type: its parser is already being filled in
        return compiling[desc.full_name]
    cached = _PARSERS.get(desc.full_name)
    if cached is not None and cached.descriptor is desc:
        return cached
    parser = compiling[desc.full_name] = MessageParser(message_factory.GetMessageClass(desc))
    parser._compile(compiling)
    _PARSERS[desc.full_name] = parser
    return parser


def _parse_spec(field: FieldDescriptor, parsers: dict[str, MessageParser]) -> tuple[str, type, Conv] | None:
    if is_map(field):
        key_field, value_field = _entry_fields(field)
        scalar = _scalar_conv(value_field, parsers)
        if key_field.type != _F.TYPE_STRING or value_field.type == _F.TYPE_MESSAGE or scalar is None:
            return None
        return field.name, _Never, _map_conv(*scalar)
    conv = _scalar_conv(field, parsers)
    if conv is None:
        return None
    plain, element = conv
    if not is_repeated(field):
        return field.name, plain, element
    # upb checks the elements of string and integer lists as strictly as json_format: they pass as they are.
    as_is = field.type == _F.TYPE_STRING or field.cpp_type in _INTS
    return field.name, (list if as_is else _Never), _list_conv(plain, element)


def _scalar_conv(field: FieldDescriptor, parsers: dict[str, MessageParser]) -> tuple[type, Conv] | None:
    """(the type that passes unchanged, the converter) of one value of `field`; None: not handled."""
    ftype, cpp = field.type, field.cpp_type
    if ftype == _F.TYPE_STRING:
        return str, _reject  # surrogates make upb raise UnicodeEncodeError, as json_format fails on them
    if ftype == _F.TYPE_BOOL:
        return bool, _reject
    if cpp in _INTS:
        return int, _int_text  # upb range-checks ints and refuses bools and floats
    if ftype == _F.TYPE_DOUBLE:
        return _Never, _double
    if ftype == _F.TYPE_BYTES:
        return _Never, _bytes
    if ftype == _F.TYPE_ENUM:
        return _enum_conv(field.enum_type)
    if ftype != _F.TYPE_MESSAGE:  # float (32-bit ranges), groups
        return None
    sub = field.message_type
    if sub.full_name in _GENERIC_WKT:
        return _Never, _generic_conv(message_factory.GetMessageClass(sub))
    if _is_wrapper(sub):
        inner = _scalar_conv(sub.fields_by_name["value"], parsers)
        return None if inner is None else (_Never, _wrapper_conv(*inner))
    if sub.full_name.startswith("google.protobuf.") and sub.full_name != "google.protobuf.Empty":
        return None  # Any, Struct, Value, ListValue
    return _Never, _parser(sub, parsers)._kwargs


def _reject(value: Any, depth: int) -> Any:
    raise _Fallback


def _int_text(value: Any, depth: int) -> int:
    # json_format reads ints with int(): " 5", "+5", "5_0", "5.0" and non-ASCII digits are its business.
    if type(value) is str and value.lstrip("-").isdigit() and value.isascii() and value.count("-") < 2:
        return int(value)
    raise _Fallback


def _double(value: Any, depth: int) -> float:
    kind = type(value)
    if kind is float:
        if value - value == 0.0:  # finite; json_format refuses NaN and infinities as numbers
            return value  # type: ignore[no-any-return]
    elif kind is int:
        return float(value)  # as json_format does, including its OverflowError past 1e308
    elif kind is str and _NUMBER.fullmatch(value):
        return float(value)
    raise _Fallback


def _bytes(value: Any, depth: int) -> bytes:
    if type(value) is not str:
        raise _Fallback
    encoded = value.encode("utf-8")  # json_format's own decoding: padding added, URL-safe alphabet too
    return base64.urlsafe_b64decode(encoded + b"=" * (4 - len(encoded) % 4))


def _enum_conv(enum: EnumDescriptor) -> tuple[type, Conv] | None:
    if enum.full_name == "google.protobuf.NullValue":
        return None
    numbers = {v.name: v.number for v in enum.values}
    known = frozenset(numbers.values())

    def conv(value: Any, depth: int) -> int:
        kind = type(value)
        if kind is str:
            return numbers[value]  # KeyError: an unknown name, which json_format may ignore or refuse
        if kind is int and value in known:
            return value  # type: ignore[no-any-return]
        raise _Fallback

    # An open enum takes any int32 number, as upb does; a closed one only its own.
    return (_Never if enum.is_closed else int), conv


def _generic_conv(message_class: type[Message]) -> Conv:
    def conv(value: Any, depth: int) -> Message:
        if type(value) is not str:
            raise _Fallback
        message = message_class()
        message.FromJsonString(value)  # type: ignore[attr-defined]  # what json_format calls
        return message

    return conv


def _wrapper_conv(plain: type, inner: Conv) -> Conv:
    return lambda value, depth: {"value": value if type(value) is plain else inner(value, depth)}


def _list_conv(plain: type, element: Conv) -> Conv:
    def conv(value: Any, depth: int) -> list[Any]:
        if type(value) is not list:
            raise _Fallback
        return [item if type(item) is plain else element(item, depth) for item in value]

    return conv


def _map_conv(plain: type, element: Conv) -> Conv:
    def conv(value: Any, depth: int) -> dict[str, Any]:
        if type(value) is not dict:
            raise _Fallback
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _Fallback
            out[key] = item if type(item) is plain else element(item, depth)
        return out

    return conv
