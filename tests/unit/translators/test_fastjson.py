"""The compiled JSON path against `json_format`, property-tested both ways: same messages, same errors,
same bytes. Messages are the demo stubs plus two test-only types in a pool of their own that carry every
field kind (proto3 `Sink`, proto2 `Legacy` with a closed enum and an extension)."""

from __future__ import annotations

import base64
import copy
import functools
import math
from typing import Any

import orjson
import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from translators import fastjson
from translators.fields import is_map, is_repeated

from echo.v1 import echo_pb2  # isort: skip  (generated; on sys.path through tests/conftest.py)
from library.v1 import library_pb2  # isort: skip

_F = FieldDescriptor
_T = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    "i32": _T.TYPE_INT32, "s32": _T.TYPE_SINT32, "sf32": _T.TYPE_SFIXED32, "u32": _T.TYPE_UINT32,
    "f32": _T.TYPE_FIXED32, "i64": _T.TYPE_INT64, "s64": _T.TYPE_SINT64, "sf64": _T.TYPE_SFIXED64,
    "u64": _T.TYPE_UINT64, "f64": _T.TYPE_FIXED64, "d": _T.TYPE_DOUBLE, "fl": _T.TYPE_FLOAT,
    "b": _T.TYPE_BOOL, "s": _T.TYPE_STRING, "by": _T.TYPE_BYTES,
}


def _test_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, duration_pb2, field_mask_pb2, wrappers_pb2, struct_pb2, empty_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    f3 = descriptor_pb2.FileDescriptorProto(name="fj/sink.proto", package="fj", syntax="proto3")
    f3.dependency.extend(
        f"google/protobuf/{n}.proto" for n in ("timestamp", "duration", "field_mask", "wrappers", "struct", "empty")
    )
    color = f3.enum_type.add(name="Color")
    color.options.allow_alias = True
    for name, number in (("COLOR_UNSPECIFIED", 0), ("RED", 1), ("BLUE", 2), ("AZURE", 2)):
        color.value.add(name=name, number=number)
    sink = f3.message_type.add(name="Sink")
    number = iter(range(1, 1000))

    def add(name: str, ftype: int, label: int = _T.LABEL_OPTIONAL, type_name: str = "", **kw: Any) -> Any:
        if type_name:
            kw["type_name"] = type_name
        return sink.field.add(name=name, number=next(number), type=ftype, label=label, **kw)

    for name, ftype in SCALARS.items():
        add(name, ftype)
        add("r_" + name, ftype, _T.LABEL_REPEATED)
    add("color", _T.TYPE_ENUM, type_name=".fj.Color")
    add("r_color", _T.TYPE_ENUM, _T.LABEL_REPEATED, ".fj.Color")
    add("renamed_field", _T.TYPE_STRING, json_name="otherName")
    add("field_1_x", _T.TYPE_INT32)
    for name, key, value, value_type in (
        ("m_i64", _T.TYPE_STRING, _T.TYPE_INT64, ""), ("m_d", _T.TYPE_STRING, _T.TYPE_DOUBLE, ""),
        ("m_b", _T.TYPE_STRING, _T.TYPE_BOOL, ""), ("m_by", _T.TYPE_STRING, _T.TYPE_BYTES, ""),
        ("m_color", _T.TYPE_STRING, _T.TYPE_ENUM, ".fj.Color"), ("m_fl", _T.TYPE_STRING, _T.TYPE_FLOAT, ""),
        ("m_int_key", _T.TYPE_INT32, _T.TYPE_STRING, ""), ("m_bool_key", _T.TYPE_BOOL, _T.TYPE_STRING, ""),
        ("m_u64_key", _T.TYPE_UINT64, _T.TYPE_INT32, ""), ("m_msg", _T.TYPE_STRING, _T.TYPE_MESSAGE, ".fj.Sink"),
    ):
        entry = sink.nested_type.add(name=name.title().replace("_", "") + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, type=key, label=_T.LABEL_OPTIONAL)
        entry.field.add(name="value", number=2, type=value, label=_T.LABEL_OPTIONAL)
        if value_type:
            entry.field[1].type_name = value_type
        add(name, _T.TYPE_MESSAGE, _T.LABEL_REPEATED, f".fj.Sink.{entry.name}")
    add("child", _T.TYPE_MESSAGE, type_name=".fj.Sink")
    add("children", _T.TYPE_MESSAGE, _T.LABEL_REPEATED, ".fj.Sink")
    sink.oneof_decl.add(name="choice")
    for name, ftype, type_name in (("o_s", _T.TYPE_STRING, ""), ("o_i", _T.TYPE_INT32, ""),
                                   ("o_msg", _T.TYPE_MESSAGE, ".fj.Sink")):
        add(name, ftype, type_name=type_name, oneof_index=0)
    for name, ftype in (("opt_i", _T.TYPE_INT32), ("opt_s", _T.TYPE_STRING)):
        sink.oneof_decl.add(name="_" + name)
        add(name, ftype, oneof_index=len(sink.oneof_decl) - 1, proto3_optional=True)
    for name, wkt in (
        ("ts", "Timestamp"), ("dur", "Duration"), ("mask", "FieldMask"), ("w_i64", "Int64Value"),
        ("w_b", "BoolValue"), ("w_d", "DoubleValue"), ("w_by", "BytesValue"), ("w_s", "StringValue"),
        ("w_u32", "UInt32Value"), ("w_f", "FloatValue"), ("st", "Struct"), ("val", "Value"),
        ("lv", "ListValue"), ("empty", "Empty"),
    ):
        add(name, _T.TYPE_MESSAGE, type_name=f".google.protobuf.{wkt}")
    add("r_ts", _T.TYPE_MESSAGE, _T.LABEL_REPEATED, ".google.protobuf.Timestamp")
    add("r_w", _T.TYPE_MESSAGE, _T.LABEL_REPEATED, ".google.protobuf.Int32Value")
    add("nul", _T.TYPE_ENUM, type_name=".google.protobuf.NullValue")
    pool.Add(f3)

    f2 = descriptor_pb2.FileDescriptorProto(name="fj/legacy.proto", package="fj", syntax="proto2")
    shade = f2.enum_type.add(name="Shade")
    shade.value.add(name="DARK", number=1)
    shade.value.add(name="LIGHT", number=2)
    legacy = f2.message_type.add(name="Legacy")
    legacy.field.add(name="shade", number=1, type=_T.TYPE_ENUM, label=_T.LABEL_OPTIONAL, type_name=".fj.Shade")
    legacy.field.add(name="shades", number=2, type=_T.TYPE_ENUM, label=_T.LABEL_REPEATED, type_name=".fj.Shade")
    legacy.field.add(name="count", number=3, type=_T.TYPE_INT32, label=_T.LABEL_OPTIONAL, default_value="7")
    legacy.field.add(name="note", number=4, type=_T.TYPE_STRING, label=_T.LABEL_OPTIONAL)
    legacy.extension_range.add(start=100, end=200)
    f2.extension.add(name="tag", number=100, type=_T.TYPE_STRING, label=_T.LABEL_OPTIONAL, extendee=".fj.Legacy")
    pool.Add(f2)
    return pool


POOL = _test_pool()
Sink = message_factory.GetMessageClass(POOL.FindMessageTypeByName("fj.Sink"))
Legacy = message_factory.GetMessageClass(POOL.FindMessageTypeByName("fj.Legacy"))
L = library_pb2
MESSAGES: list[type[Message]] = [
    echo_pb2.EchoRequest, echo_pb2.EchoResponse, echo_pb2.Item, echo_pb2.GetItemRequest, L.Book,
    L.CreateBookRequest, L.ListBooksRequest, L.UpdateBookRequest, L.Shelf, L.SearchBooksRequest,
    L.SetBookCoverRequest, L.ListBooksResponse, Sink, Sink, Legacy,  # Sink twice: it has every field kind
]

# ---- JSON trees: right-looking values, edge values and junk ----------------------------------------

INT_EDGES = [0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63,
             -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**400]
TEXTS = ["", "é", "日本語", "\U0001f600", "\ud800", "\ud83d\ude00", "a b", "true", "null"]
NUMBER_TEXTS = ["5", "-5", "007", "-0", " 5", "+5", "5_0", "5.0", "1e3", "1.5", "٥", "²", "0x10", "--5", "-",
                "NaN", "nan", "Infinity", "-Infinity", "inf", "1e400", "1E5", "-0.0", ".5", "5.", ""]
junk = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INT_EDGES), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5), st.sampled_from(TEXTS + NUMBER_TEXTS),
    st.just([]), st.just({}), st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2),
                                                                                        st.integers(), max_size=2),
)
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-(2**65), 2**65), st.sampled_from(NUMBER_TEXTS),
                 st.sampled_from([5.0, 1.5, -0.0, 1e20, True, False]))
doubles = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(INT_EDGES),
                    st.integers(), st.sampled_from(NUMBER_TEXTS), st.booleans())
texts = st.one_of(st.text(max_size=12), st.sampled_from(TEXTS))
b64 = st.binary(max_size=12).flatmap(
    lambda raw: st.sampled_from([base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
                                 base64.b64encode(raw).decode().rstrip("="), "not base64!", "AAE"]))
timestamps = st.sampled_from(["2020-01-01T00:00:00Z", "1970-01-01T00:00:00.5+01:00", "0001-01-01T00:00:00Z",
                              "2020-13-01T00:00:00Z", "yesterday", "2020-01-01T00:00:00"])
durations = st.sampled_from(["1.5s", "-3s", "0s", "1.000000001s", "1m", "s", "315576000001s"])
masks = st.sampled_from(["", "a", "fooBar,baz.qux", "foo_bar", "A"])
json_any = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=3),
                        lambda c: st.lists(c, max_size=2) | st.dictionaries(st.text(max_size=2), c, max_size=2),
                        max_leaves=4)


# Clean trees hold only values of the field's own JSON type (json_format may still refuse some, e.g. an
# int out of range); messy ones add junk, the rarer forms json_format accepts, nulls and unknown keys.
clean_ints = st.sampled_from(INT_EDGES[:-1]) | st.integers(-(2**64), 2**64) | st.sampled_from(["5", "-12", "007"])
clean_doubles = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70) | st.just("-1.5e3")
clean_b64 = st.binary(max_size=12).map(lambda raw: base64.b64encode(raw).decode())


@functools.cache
def tree_of(desc: Descriptor, clean: bool, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects for `desc`: up to five of its keys (either name) with values for their field."""
    entries = [
        st.tuples(st.just(key), value_of(field, clean, depth))
        for field in desc.fields
        for key in sorted({field.name, field.json_name})
    ]
    if not clean:
        entries.append(st.tuples(st.sampled_from(["typo", "[fj.tag]", *(o.name for o in desc.oneofs)]), junk))
    if depth > 1 or not entries:
        return st.just({})
    return st.lists(st.one_of(entries), max_size=5).map(dict)


@functools.cache
def value_of(field: FieldDescriptor, clean: bool, depth: int) -> st.SearchStrategy[Any]:
    if is_map(field):
        keys = st.sampled_from(["a", "true", "false", "1", "-7", "x y", "é", "18446744073709551616", "\ud800"])
        if field.message_type.fields_by_name["key"].type != _F.TYPE_STRING and not clean:
            keys = keys | st.sampled_from([1, True])
        return st.dictionaries(keys, scalar_of(field.message_type.fields_by_name["value"], clean, depth), max_size=3)
    if is_repeated(field):
        items = st.lists(scalar_of(field, clean, depth), max_size=3)
        return items if clean else items | junk
    return scalar_of(field, clean, depth)


@functools.cache
def scalar_of(field: FieldDescriptor, clean: bool, depth: int) -> st.SearchStrategy[Any]:
    right = _right_scalar(field, clean, depth)
    return right if clean else st.one_of(right, junk)


def _right_scalar(field: FieldDescriptor, clean: bool, depth: int) -> st.SearchStrategy[Any]:
    ftype = field.type
    if ftype == _F.TYPE_MESSAGE:
        full = field.message_type.full_name
        special = {"google.protobuf.Timestamp": timestamps, "google.protobuf.Duration": durations,
                   "google.protobuf.FieldMask": masks}.get(full)
        if special is not None:
            return special
        if field.message_type.file.name == "google/protobuf/wrappers.proto":
            return scalar_of(field.message_type.fields_by_name["value"], clean, depth)
        if full.startswith("google.protobuf.") and full != "google.protobuf.Empty":
            return json_any
        return st.deferred(lambda: tree_of(field.message_type, clean, depth + 1))
    if ftype == _F.TYPE_ENUM:
        names = st.sampled_from([v.name for v in field.enum_type.values])
        numbers = st.sampled_from([v.number for v in field.enum_type.values])
        if clean:
            return names | numbers
        return st.one_of(names, st.sampled_from(["NOPE", "red", "3", 0, 1, 2, 3, 7, -1, 2**31, 1.0, 1.5, True]))
    if ftype == _F.TYPE_BOOL:
        return st.booleans() if clean else st.booleans() | st.sampled_from([0, 1, "true", "false"])
    if ftype == _F.TYPE_STRING:
        return texts
    if ftype == _F.TYPE_BYTES:
        return clean_b64 if clean else b64
    if ftype in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return clean_doubles if clean else doubles
    return clean_ints if clean else ints


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the exception itself is what is compared
        return "raised", exc


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(MESSAGES), data=st.data(), ignore_unknown=st.booleans(), clean=st.booleans())
def test_parse_matches_json_format(cls: type[Message], data: st.DataObject, ignore_unknown: bool,
                                   clean: bool) -> None:
    doc = data.draw(tree_of(cls.DESCRIPTOR, clean))
    before = repr(doc)
    theirs = outcome(lambda: json_format.ParseDict(copy.deepcopy(doc), cls(), ignore_unknown_fields=ignore_unknown))
    ours = outcome(lambda: fastjson.parser_for(cls).parse(doc, ignore_unknown_fields=ignore_unknown))
    assert repr(doc) == before, "the tree was modified"
    if theirs[0] == "raised":
        # The fast path never raises on its own: errors are json_format's, word for word.
        assert ours[0] == "raised" and type(ours[1]) is type(theirs[1]) and str(ours[1]) == str(theirs[1])
    else:
        assert ours[0] == "ok", ours[1]
        assert ours[1] == theirs[1]
        assert ours[1].SerializeToString(deterministic=True) == theirs[1].SerializeToString(deterministic=True)


# ---- messages: values of the right type, edges included ----------------------------------------------

INT_RANGES = {
    _F.CPPTYPE_INT32: (-(2**31), 2**31 - 1), _F.CPPTYPE_UINT32: (0, 2**32 - 1),
    _F.CPPTYPE_INT64: (-(2**63), 2**63 - 1), _F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
EXTREME_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 0.1, 3.4028234663852886e38]


def python_value(draw: Any, field: FieldDescriptor) -> Any:
    return draw(_python_values(field))


@functools.cache
def _python_values(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp in INT_RANGES:
        low, high = INT_RANGES[cpp]
        return st.sampled_from([low, high, 0, -1 if low else 1]) | st.integers(low, high)
    if cpp == _F.CPPTYPE_DOUBLE:
        return st.sampled_from(EXTREME_FLOATS) | st.floats()
    if cpp == _F.CPPTYPE_FLOAT:
        return st.sampled_from(EXTREME_FLOATS[:5]) | st.floats(width=32)
    if cpp == _F.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == _F.CPPTYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        if field.enum_type.is_closed:
            return st.sampled_from(known)
        return st.sampled_from([*known, 7, -1, 2**31 - 1, -(2**31)])
    if field.type == _F.TYPE_BYTES:
        return st.binary(max_size=8)
    return st.text(max_size=8) | st.sampled_from(["", "é", "\U0001f600", '"\\\n'])


@functools.cache
def _fields_to_set(desc: Descriptor) -> st.SearchStrategy[list[FieldDescriptor]]:
    return st.lists(st.sampled_from(list(desc.fields)), max_size=6) if desc.fields else st.just([])


def fill(draw: Any, message: Message, depth: int = 0) -> Message:
    desc = message.DESCRIPTOR
    full = desc.full_name
    if full == "google.protobuf.Timestamp":
        message.seconds = draw(st.integers(-62135596800, 253402300799))  # type: ignore[attr-defined]
        message.nanos = draw(st.sampled_from([0, 1, 500000000, 999999999]))  # type: ignore[attr-defined]
        return message
    if full == "google.protobuf.Duration":
        seconds = draw(st.integers(-315576000000, 315576000000))
        message.seconds = seconds  # type: ignore[attr-defined]
        message.nanos = draw(st.sampled_from([0, 1, 999999999])) * (-1 if seconds < 0 else 1)  # type: ignore[attr-defined]
        return message
    if full == "google.protobuf.FieldMask":
        message.paths.extend(draw(st.lists(st.sampled_from(["a", "foo_bar", "x.y_z", "Bad"]), max_size=2)))  # type: ignore[attr-defined]
        return message
    if full in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        json_format.ParseDict(draw(json_any if full == "google.protobuf.Value" else
                                   st.dictionaries(st.text(max_size=2), json_any, max_size=2)
                                   if full.endswith("Struct") else st.lists(json_any, max_size=2)), message)
        return message
    for field in draw(_fields_to_set(desc)):
        target = getattr(message, field.name)
        if is_map(field):
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = python_value(draw, key_field)
                if value_field.type == _F.TYPE_MESSAGE:
                    if depth < 2:
                        fill(draw, target[key], depth + 1)
                else:
                    target[key] = python_value(draw, value_field)
        elif field.type == _F.TYPE_MESSAGE:
            if depth >= 2:
                continue
            if is_repeated(field):
                for _ in range(draw(st.integers(0, 2))):
                    fill(draw, target.add(), depth + 1)
            else:
                target.SetInParent()
                fill(draw, target, depth + 1)
        elif is_repeated(field):
            target.extend(python_value(draw, field) for _ in range(draw(st.integers(0, 3))))
        else:
            setattr(message, field.name, python_value(draw, field))
    if desc.full_name == "fj.Legacy" and draw(st.booleans()):
        message.Extensions[POOL.FindExtensionByName("fj.tag")] = "x"  # type: ignore[index]
    return message


OPTIONS = [(a, p, e) for a in (False, True) for p in (False, True) for e in (False, True)]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(MESSAGES), data=st.data())
def test_print_matches_json_format(cls: type[Message], data: st.DataObject) -> None:
    message = fill(data.draw, cls())
    for options in OPTIONS:
        theirs = outcome(lambda o=options: orjson.dumps(json_format.MessageToDict(message, *o)))
        ours = outcome(lambda o=options: orjson.dumps(fastjson.message_to_dict(message, *o)))
        if theirs[0] == "raised":
            assert ours[0] == "raised" and type(ours[1]) is type(theirs[1])
        else:
            assert ours == theirs, options


# ---- the fast path is taken where it should be ---------------------------------------------------------


def test_common_shapes_take_the_fast_path() -> None:
    parser = fastjson.parser_for(L.CreateBookRequest)
    before = parser.fallbacks
    parser.parse({"parent": "shelves/1", "book": {
        "title": "T", "author": {"name": "A"}, "genre": "POETRY", "tags": ["a"], "pageCount": "12",
        "labels": {"k": "v"}, "print": {"isbn": "1"}, "rating": 4, "copiesSold": 5, "edition": 0, "subtitle": "s",
        "checksum": "AAEC", "publishedAt": "2020-01-01T00:00:00Z", "readTime": "1.5s", "reviews": [{"stars": 3}],
    }})
    assert parser.fallbacks == before
    printer = fastjson.printer_for(L.Book.DESCRIPTOR, False, False, False)
    before = printer.fallbacks
    fastjson.message_to_dict(L.Book(title="T", genre=99, rating=math.nan, labels={"a": "b"}))
    assert printer.fallbacks == before


@pytest.mark.parametrize(
    "doc",
    [
        {"title": "a", "page_count": 1, "pageCount": 2},  # both names: json_format lets the last one win
        {"print": {}, "ebook": {}},  # two members of a oneof
        {"title": None},
        {"pageCount": 1.0},
        {"rating": "NaN"},
        {"genre": "NOPE"},
        {"typo": 1},
    ],
)
def test_unsure_inputs_go_to_json_format(doc: dict[str, Any]) -> None:
    parser = fastjson.parser_for(L.Book)
    before = parser.fallbacks
    theirs = outcome(lambda: json_format.ParseDict(doc, L.Book(), ignore_unknown_fields=True))
    ours = outcome(lambda: parser.parse(doc, ignore_unknown_fields=True))
    assert parser.fallbacks == before + 1
    assert (ours[0], str(ours[1])) == (theirs[0], str(theirs[1]))


def test_parsers_follow_a_new_pool_of_the_same_name() -> None:
    pool = _test_pool()
    other = message_factory.GetMessageClass(pool.FindMessageTypeByName("fj.Sink"))
    assert fastjson.parser_for(other).message_class is other
    assert fastjson.parser_for(Sink).message_class is Sink
