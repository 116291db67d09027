"""Records and features: bounded, deterministic, fixed width, and reading attack languages as such."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening import features, tokens
from screening.preprocess import normalize
from screening.record import MAX_FIELDS, MAX_VALUE_CHARS, RequestRecord, from_parts, leaves


def names(text: str) -> list[str]:
    return [tokens.NAMES[c - 1] for c in tokens.classes(normalize(text))]


def test_leaves_have_key_paths_and_keys_as_values() -> None:
    found, dropped = leaves({"user": {"name": "O'Brien", "tags": ["a", 2]}, "$where": "1", "ok": None})
    assert ("user.name", "O'Brien") in found and ("user.tags[]", "2") in found and ("ok", "null") in found
    assert ("#", "$where") in found  # an unusual key is screened as a value
    assert dropped == 0


def test_leaves_are_bounded_and_iterative() -> None:
    deep: object = "x"
    for _ in range(10_000):  # far beyond the recursion limit
        deep = [deep]
    found, _ = leaves(deep)
    assert found == [("" + "[]" * 10_000, "x")]
    found, dropped = leaves(list(range(MAX_FIELDS + 10)))
    assert len(found) == MAX_FIELDS and dropped == 10
    long_value, _ = leaves("a" * 100_000)
    assert len(long_value[0][1]) <= MAX_VALUE_CHARS + 1


def test_record_round_trips_as_json() -> None:
    record = from_parts("post", "/v1/echo", [("q", "x")], {"User-Agent": "curl/8", "Authorization": "secret"},
                        {"message": "hi"})
    assert record.headers == (("user-agent", "curl/8"),)  # credentials are never part of a record
    assert RequestRecord.from_json(record.to_json()) == record


def test_token_classes_read_the_attack_languages() -> None:
    assert names("' or 1=1--") == names('" OR 2>1 #'.replace(">", "=")) or "sql_logic" in names('" OR 2>1 #')
    assert "html_danger_tag" in names("<img src=x onerror=alert(1)>")
    assert "event_handler" in names("<img src=x onerror=alert(1)>")
    assert names("${jndi:ldap://x/a}")[:2] == ["dollar_brace", "jndi"]
    assert "tpl_open" in names("{{7*7}}") and "path_up" in names("..%2f..%2fetc/passwd")
    assert "internal_host" in names("http://169.254.169.254/latest/meta-data/")
    assert "nosql_op" in names('{"$ne": null}') and "crlf_header" in names("x\r\nSet-Cookie: a=b")
    assert "deser" in names("rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA")
    assert "sql_select" in names("select specialty hospital")  # a word is a word: context decides


def test_vector_is_fixed_width_and_deterministic() -> None:
    record = from_parts("POST", "/v1/echo", [], {}, {"message": "hello world", "n": 3})
    first = features.extract(record)
    features._field_cached.cache_clear()
    assert first.shape == (features.N_FEATURES,) and first.dtype == np.float32
    assert np.array_equal(first, features.extract(record))
    assert len(features.NAMES) == features.N_FEATURES
    assert features.SCHEMA.startswith(f"f{features.VERSION}-p")


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=200), st.integers(), st.none()), max_size=8))
def test_features_never_raise_and_stay_finite(body: dict[str, object]) -> None:
    vector = features.extract(from_parts("POST", "/x", [("k", "v")], {"User-Agent": "x"}, body))
    assert np.all(np.isfinite(vector))


def test_describe_names_the_ngrams_of_a_request() -> None:
    values = ["' or 1=1--"]
    vector = features.extract_values(values)
    described = features.describe(values)
    hit = [i for i in np.flatnonzero(vector) if features._BI0 <= i < features._MAX0]
    assert hit and all(i in described for i in hit)
    assert any(name.startswith("bi:single_quote>sql_logic") for name in described.values())


# The lexer's pattern as it reads: alternatives in their order of precedence, blanks skipped by the search.
PLAIN_LEXEME = re.compile(
    r"\n|&#?\w+;|0x[0-9a-f]+|[0-9]+(?:\.[0-9]+)*|[^\W\d_]\w*|_\w*"
    r"|\.\.+[/\\]|[/\\]\.\.+|://|\$\{|\$\(\(?|\{\{|\}\}|\{%|%\}|\{#|#\}|<%=?|%>|#\{|\[\[|\]\]|<!|<\?|&&|\|\|"
    r"|==|!=|<>|>=|<=|=~|--|/\*|\*/|::-|:-|\*\)|\)\(|[^\w\s]"
)
LEXER_TEXT = st.text(
    st.sampled_from(list("aZ_0x9 \t\n\r\x0b\u00a0\u2003'\"<>;(){}$|&`=\\*%#-/.:!?,@~^+[]\u00e9\u0663\u4e2d\U0001f600")),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(LEXER_TEXT)
def test_the_fast_lexer_pattern_finds_the_plain_patterns_lexemes(text: str) -> None:
    assert tokens.LEXEME.findall(text) == PLAIN_LEXEME.findall(text)


@settings(max_examples=200, deadline=None)
@given(st.one_of(LEXER_TEXT, st.text(max_size=300)))
def test_a_values_features_follow_their_definition(raw: str) -> None:
    """The table look-ups and the histogram of `_field` against the features' plain definitions: the
    n-gram positions `describe` hashes one by one, log(1 + count) per class, the byte entropy."""
    field = features.field_vector(raw)
    text = normalize(raw)
    assert set(field.grams.tolist()) == set(features.describe([raw]))
    expected = np.zeros(features._N_CLS, dtype=np.float32)
    for cls, count in Counter(tokens.classes(text)).items():
        expected[cls - 1] = math.log1p(count)
    assert np.array_equal(field.dense[: features._N_CLS], expected)
    data = text.encode("utf-8", "replace")
    entropy = math.log2(len(data)) - sum(c * math.log2(c) for c in Counter(data).values()) / len(data) if data else 0
    assert field.stats[features.STATS.index("entropy")] == pytest.approx(entropy / 8, abs=1e-6)


def test_a_large_body_costs_bounded_time() -> None:
    import time

    body = {"items": [{"text": "word " * 80, "n": i} for i in range(2000)]}  # about 900 KB of JSON
    record = from_parts("POST", "/x", [], {}, body)
    started = time.perf_counter()
    features.extract(record)
    assert time.perf_counter() - started < 0.5
    assert record.dropped > 0
