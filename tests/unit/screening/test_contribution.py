"""The compiled contribution (`screening/contribution.pyx`) is `features.python_contribution`, byte for
byte, for every value.

It must be built: a checkout where `make setup` did not compile it fails here rather than passing on
the Python path (same bytes, several times the CPU)."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from screening import features, preprocess, tokens
from screening.corpus import generators


def test_the_contribution_is_built_and_serves_the_features() -> None:
    from screening import contribution

    assert isinstance(getattr(features._contribution, "__self__", None), contribution.Contributor)
    assert isinstance(getattr(features.combine, "__self__", None), contribution.Combiner)


def same(raw: str, base64: bool = False) -> None:
    text, rounds = preprocess.normalize_with_rounds(raw)
    classes = tokens.python_classes(text)
    for r in {rounds, 0, preprocess.MAX_ROUNDS}:
        assert features._contribution(text, raw, r, base64, classes) == features.python_contribution(
            text, raw, r, base64, classes), repr(raw)


_PIECE = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from(["' or 1=1--", "<script>", "%27", "&amp;", "\\x41", "SeLeCt", "UNION", "O'Brien", "  ", "\n",
                     "é", "\u2019", "../", "${jndi:ldap://x}", "{{7*7}}", "aGVsbG8gd29ybGQ=", "Ab" * 30]),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECE, max_size=60).map("".join), st.booleans())
@example("", False)
@example("", True)
@example("a", False)
def test_the_contribution_is_the_definitions(raw: str, base64: bool) -> None:
    same(raw, base64)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=3000),
       st.text(alphabet=st.characters(exclude_categories=()), max_size=300))
def test_the_contribution_of_any_text_and_raw_value(text: str, raw: str) -> None:
    """The text need not be the raw value's normal form: each statistic reads the one it names."""
    classes = tokens.python_classes(text)
    assert features._contribution(text, raw, 1, False, classes) == features.python_contribution(
        text, raw, 1, False, classes)


def test_huge_values_and_every_generated_payload() -> None:
    rng = random.Random(7)
    samples = [s.text for s in generators.generated(rng, 200)]
    for raw in samples:
        same(raw)
        same(raw, True)
    same("SeLeCt ' oR 1=1 " * 400)  # past 4,096 bytes (the entropy's other sum) and 1,024 tokens
    same("x" * 100_000)
    same("é\ud800%&\\ Ab" * 3000)
    same(" ".join(samples))


def test_field_vectors_are_the_definitions() -> None:
    rng = random.Random(8)
    for sample in generators.generated(rng, 100):
        raw = sample.text
        text, rounds = preprocess.normalize_with_rounds(raw)
        vector = features.field_vector(raw)
        dense, grams = features.python_contribution(text, raw, rounds, False, tokens.python_classes(text))
        assert (vector.dense_bytes, vector.grams_bytes) == (dense, grams)


_VALUES = [s.text for s in generators.generated(random.Random(9), 60)] + [
    "", "a", "/v1/echo", "alice.martin", "SeLeCt ' oR 1=1", "x" * 5000, "é\ud800%&\\ Ab", "aGVsbG8gd29ybGQgaGVsbG8=",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_VALUES), max_size=12), st.integers(0, 3))
def test_the_request_vector_is_the_definitions(values: list[str], dropped: int) -> None:
    fields = features.field_vectors(values)
    compiled, python = features.combine(fields, dropped), features.python_combine(fields, dropped)
    assert compiled.dtype == python.dtype and compiled.shape == python.shape
    assert compiled.tobytes() == python.tobytes()
    assert compiled.flags.writeable and compiled.flags.c_contiguous


def test_the_request_vector_of_many_fields_is_the_definitions() -> None:
    for n in (1024, 1025, 1500):  # the table of log1p(fields) ends at 1,024
        fields = features.field_vectors([_VALUES[i % len(_VALUES)] for i in range(n)])
        assert features.combine(fields, 0).tobytes() == features.python_combine(fields, 0).tobytes()
    assert features.combine([]).tobytes() == features.python_combine([]).tobytes()
