"""The compiled value path (`screening/field_path.pyx`) is its Python definitions: `plain` is
`preprocess.python_plain` for every value, and a value's and a request's contributions are
`features.python_value_vectors`' and `python_field_vectors`', byte for byte.

It must be built: a checkout where `make setup` did not compile it fails here rather than passing on
the Python path (the same features, more instructions per new value)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from screening import features, preprocess
from screening.features import FieldVector


def test_the_value_path_is_built_and_serves_the_features() -> None:
    from screening import field_path

    assert preprocess.plain is field_path.plain
    for served in (features.field_vectors, features._value_vectors):
        assert isinstance(getattr(served, "__self__", None), field_path.FieldPath)
    assert isinstance(features._field_cached, field_path.ValueCache)


def test_the_cache_is_bounded_and_gives_what_it_was_given() -> None:
    from screening import field_path

    path = field_path.FieldPath(
        classes=lambda text: features.tokens.classes(text), contribution=features._contribution,
        field_vector=FieldVector, normalize_with_rounds=preprocess.normalize_with_rounds,
        base64_text=preprocess.base64_text, cache_size=2, cache_chars=8, max_chars=preprocess.MAX_CHARS,
    )
    first = path.cached("one")
    assert path.cached("one") is first and len(path.cached) == 1
    path.cached("two")
    assert len(path.cached) == 2
    path.cached("three")  # full: emptied, then this one kept
    assert len(path.cached) == 1 and path.cached("one") is not first
    assert _bytes(path.cached("one")) == _bytes(first)
    path.cached.cache_clear()
    assert len(path.cached) == 0
    long = "a long value, not cached"
    assert _bytes(path.field_vectors(["one", long])) == _bytes([*first, *features.python_value_vectors(long)])
    assert len(path.cached) == 1  # only the short one


class Text(str):
    """A str subclass: plain gives back a str, as `lower` does."""


_ASCII_PIECE = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x7F),
    st.sampled_from([" ", "  ", "   ", "*", "/", "-", "--", ">", "<", "!", "<!-", "<!--", "-->", "--->", "/*", "*/",
                     "/ *", "* /", "SeLeCt", "O'Brien", "%41", "&amp;", "\\x41", "\t", "\x7f", "AZaz@[`{"]),
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.lists(_ASCII_PIECE, max_size=80).map("".join), st.text(max_size=40)),
       st.sampled_from([preprocess.MAX_CHARS, 0, 1, 5, 40]))
@example("", preprocess.MAX_CHARS)
@example("x", 0)
def test_plain_is_the_definition(value: str, max_chars: int) -> None:
    expected = preprocess.python_plain(value, max_chars)
    got = preprocess.plain(value, max_chars)
    assert got == expected
    assert type(got) is type(expected)
    assert preprocess.plain(Text(value), max_chars) == expected
    if expected is not None:
        assert type(preprocess.plain(Text(value), max_chars)) is str


@pytest.mark.parametrize("value", [b"abc", bytearray(b"abc"), None, 3, "A" * preprocess.MAX_CHARS,
                                   "A" * (preprocess.MAX_CHARS + 1), "x " * 5000, "é", "a\u2019b", "\ud800"])
def test_plain_on_its_edges(value: object) -> None:
    assert preprocess.plain(value, preprocess.MAX_CHARS) == preprocess.python_plain(value)  # type: ignore[arg-type]


def _bytes(fields: list[FieldVector] | tuple[FieldVector, ...]) -> list[tuple[bytes, bytes]]:
    return [(f.dense_bytes, f.grams_bytes) for f in fields]


_B64 = st.text(max_size=40).map(lambda t: base64.b64encode(t.encode()).decode())
_VALUE = st.one_of(
    st.lists(_ASCII_PIECE, max_size=60).map("".join),
    st.text(max_size=60),
    _B64,
    _B64.map(lambda b: b.rstrip("=").replace("+", "-").replace("/", "_")),
    st.sampled_from(["Hi team, could you summarise the Q3 report?", "/v1/echo", "curl/7.88.1", "en-GB", "1",
                     "1' UNION SELECT username, password FROM users--", "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
                     "%3Cscript%3E", "x" * 300]),
)


@settings(max_examples=600, deadline=None)
@given(_VALUE)
@example("PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==")  # base64 of text: two contributions
def test_a_values_contributions_are_the_definitions(raw: str) -> None:
    assert _bytes(features._value_vectors(raw)) == _bytes(features.python_value_vectors(raw))


@settings(max_examples=300, deadline=None)
@given(st.lists(_VALUE, max_size=12))
def test_a_requests_contributions_are_the_definitions(values: list[str]) -> None:
    expected = [field for raw in values for field in features.python_value_vectors(raw)]
    assert _bytes(features.field_vectors(values)) == _bytes(expected)
    assert _bytes(features.field_vectors(values)) == _bytes(expected)  # again: from the cache
    assert _bytes(features.python_field_vectors(values)) == _bytes(expected)
