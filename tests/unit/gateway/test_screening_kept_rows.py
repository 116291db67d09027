"""The repeat memo's keys (`gateway.policies.screening.kept_rows`): equal keys mean equal screened values
and `dropped` (what `screening.values.request_values` gives), for protobuf messages keyed by their bytes
before any walk, whatever order their maps were filled in; and why the bytes are not the deterministic
ones."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

import protos
from gateway.policies.screening.kept_rows import KEY_CHARS, copy_note, message_key, values_key
from screening import record
from screening.values import head_values, request_values

protos.add_generated_path()
from echo.v1 import echo_pb2
from google.protobuf import json_format
from library.v1 import library_pb2

HEADERS = CIMultiDict([("Host", "localhost:8080"), ("User-Agent", "curl/8.5.0"), ("Accept", "*/*")])
# Few keys and texts, so that two drawn messages are often equal in content, in another map order.
_KEYS = st.sampled_from(["user", "lang", "ticket", "<k>", "a.b", "", "x" * 70, "z1", "z2", "z3", "z4", "z5"])
_TEXTS = st.sampled_from(["", "a", "alice", "' or 1=1--", "<svg onload=1>", "y" * 300, "-0.0"])
_PAIRS = st.lists(st.tuples(_KEYS, _TEXTS), max_size=10)


def _echo(text: str, repeat: int, pairs: list[tuple[str, str]], order: random.Random, drop: int) -> object:
    """An EchoRequest with `pairs` put into its map in a shuffled order, `drop` of them deleted again."""
    message = echo_pb2.EchoRequest(message=text, repeat=repeat)
    shuffled = pairs.copy()
    order.shuffle(shuffled)
    for key, value in shuffled:
        message.labels[key] = value
    for key, _ in shuffled[:drop]:
        message.labels.pop(key, None)
    return message


def _book(title: str, pairs: list[tuple[str, str]], order: random.Random, rating: float | str = 0.0) -> object:
    """A Book (nested and repeated messages, repeated strings, a map, a double: the general walk), map
    order shuffled."""
    shuffled = pairs.copy()
    order.shuffle(shuffled)
    document = {"title": title, "rating": rating, "tags": [value for _, value in pairs][:3], "author": {"name": title},
                "labels": dict(shuffled), "reviews": [{"text": value} for _, value in shuffled[:2]]}
    return json_format.ParseDict(document, library_pb2.Book())


def _values(message: object, query: list[tuple[str, str]]) -> tuple[list[str], int]:
    return request_values("/v1/echo", query, HEADERS, message, record.SCREENED_HEADERS)


def _key(message: object, query: list[tuple[str, str]]) -> tuple[object, ...] | None:
    return message_key(head_values("/v1/echo", query, HEADERS, record.SCREENED_HEADERS), message)


@settings(max_examples=300, deadline=None)
@given(text=_TEXTS, repeat=st.sampled_from([0, 1, -2]), pairs=_PAIRS, other=_PAIRS, seeds=st.tuples(st.integers(),
       st.integers()), drop=st.integers(0, 3), query=st.sampled_from([[], [("q", "hello")], [("we ird", "1")]]),
       ratings=st.tuples(*[st.sampled_from([0.0, -0.0, 2.5, "NaN", "-Infinity"])] * 2))
def test_equal_keys_mean_equal_values(text: str, repeat: int, pairs: list[tuple[str, str]],
                                      other: list[tuple[str, str]], seeds: tuple[int, int], drop: int,
                                      query: list[tuple[str, str]], ratings: tuple[float | str, float | str]) -> None:
    """Messages of the same content filled in other orders, and messages of other content (0.0 is an unset
    double, -0.0 a set one): wherever two keys are equal, the values and `dropped` are; wherever the
    values differ, so do the keys."""
    first, second = random.Random(seeds[0]), random.Random(seeds[1])
    messages = [_echo(text, repeat, pairs, first, drop), _echo(text, repeat, pairs, second, drop),
                _echo(text, repeat, other, second, drop), _book(text, pairs, first, ratings[0]), _book(text, pairs, second, ratings[1]),
                _book(text, other, first, ratings[1])]
    keyed = [(key, _values(m, query)) for m in messages if (key := _key(m, query)) is not None]  # within KEY_CHARS
    assert len(keyed) >= 3  # the echo messages always are
    for key, values in keyed:
        for other_key, other_values in keyed:
            if key == other_key:
                assert values == other_values
            if values != other_values:
                assert key != other_key


def test_same_content_in_another_map_order_can_have_other_values_and_the_key_tells_them_apart() -> None:
    """upb iterates a map in an order that depends on the order its keys went in; the values follow that
    order. `SerializeToString(deterministic=True)` sorts map entries, so it would give such messages one
    key (wrong); the bytes the key uses keep the order."""
    found = 0
    for size in range(4, 40):
        keys = [f"label{size}-{i}" for i in range(size)]
        forward = echo_pb2.EchoRequest(labels={key: key.upper() for key in keys})
        backward = echo_pb2.EchoRequest()
        for key in reversed(keys):
            backward.labels[key] = key.upper()
        if list(forward.labels) == list(backward.labels):
            continue
        found += 1
        assert forward == backward  # equal content
        assert forward.SerializeToString(deterministic=True) == backward.SerializeToString(deterministic=True)
        assert _values(forward, []) != _values(backward, [])
        assert _key(forward, []) != _key(backward, [])
    assert found  # the case exists (it does for most sizes)


def test_keys_are_bounded_and_non_protobuf_messages_are_keyed_by_their_values() -> None:
    head = head_values("/v1/echo", [], HEADERS, record.SCREENED_HEADERS)
    assert message_key(head, echo_pb2.EchoRequest(message="x" * KEY_CHARS)) is None
    assert message_key(head, {"message": "x"}) is None and message_key(head, None) is None
    for message in ({"message": "x"}, None, b'{"a": 1}'):
        values, dropped = _values(message, [])
        assert values_key(values, dropped) == (*values, dropped)
    assert values_key(["x" * (KEY_CHARS + 1)], 0) is None
    # The two shapes cannot meet: a protobuf key ends in bytes, a values key in an int.
    message = echo_pb2.EchoRequest(message="x")
    assert message_key(head, message) != values_key(*_values(message, []))


def test_a_copied_note_shares_no_list_or_dict() -> None:
    note = {"verdict": "allow", "score": 0.1, "top_features": ["a"], "shadow": {"model": "m", "score": 0.2}}
    copied = copy_note(note)
    copied["top_features"].append("b")
    copied["shadow"]["disagrees"] = True
    copied["extra"] = 1
    assert note == {"verdict": "allow", "score": 0.1, "top_features": ["a"], "shadow": {"model": "m", "score": 0.2}}
