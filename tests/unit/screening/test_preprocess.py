"""Preprocessing: idempotent, total (never raises), bounded, and undoing the encodings attackers stack."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screening import preprocess
from screening.preprocess import MAX_ROUNDS, base64_text, normalize, normalize_with_rounds

# Text biased towards the characters the decoders react to, so escapes actually meet.
_ALPHABET = st.sampled_from(list("%&#;\\xuU0123456789abcdefABCDEF/*!<>-'\" \r\n\t\x00ｓＳ％＆") + ["ß", "İ", "ﬁ"])
tricky_text = st.lists(_ALPHABET, max_size=80).map("".join)
escapes = st.lists(
    st.sampled_from(["%25", "%2", "%", "5", "27", "%u0025", "&amp;", "&#37;", "&", "#", "x", "\\x25", "\\u0025",
                     "/*", "*/", "<!--", "-->", "%c0%af", "%e0%80%af", "\ud800", "Ｓ", "ß"]),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), tricky_text, escapes))
def test_idempotent_on_text(value: str) -> None:
    once = normalize(value)
    assert normalize(once) == once


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_never_raises_on_invalid_utf8(value: bytes) -> None:
    once = normalize(value)
    assert isinstance(once, str)
    assert normalize(once) == once


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(), escapes))
def test_rounds_are_bounded(value: str) -> None:
    _, rounds = normalize_with_rounds(value)
    assert 0 <= rounds <= MAX_ROUNDS


def test_huge_values_cost_bounded_time() -> None:
    for value in ("%25" * 400_000, "&amp;" * 300_000, "/*" * 500_000, "a" * 5_000_000, b"\xc0" * 2_000_000):
        started = time.perf_counter()
        normalize(value)
        assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("%2527%2520OR%25201%3D1--", "' or 1=1--"),
        ("&lt;ScRiPt&gt;alert(1)&lt;/script&gt;", "<script>alert(1)</script>"),
        (b"..\xc0\xaf..\xc0\xafetc/passwd", "../../etc/passwd"),
        ("%c0%ae%c0%ae/etc", "../etc"),
        ("ＳＥＬＥＣＴ", "select"),
        ("UNION/**/SELECT", "union select"),
        ("/*!50000union*/ select", "union select"),
        ("a\x00b", "ab"),
        ("%u003cimg src=x%u003e", "<img src=x>"),
        ("\\x3csvg\\x3e", "<svg>"),
        ("x\r\nSet-Cookie: a", "x\nset-cookie: a"),
        ("<!--x-->", "x"),
    ],
)
def test_decodes_what_attackers_stack(raw: str | bytes, expected: str) -> None:
    assert normalize(raw).strip() == expected


def test_rounds_count_stacked_encodings_not_case() -> None:
    assert normalize_with_rounds("O'Brien")[1] == 0
    assert normalize_with_rounds("%2527")[1] == 2


def test_base64_text() -> None:
    assert base64_text("PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==") == "<script>alert(1)</script>"
    assert base64_text("rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcA") is None  # binary: not text
    assert base64_text("abcdefghijklmnopqrstuvwxyz") is None  # a word
    assert base64_text("d41d8cd98f00b204e9800998ecf8427e") is None  # a hex digest


# The fast path's condition as a pattern: an escape or entity start, a backslash, a control character
# or a comment marker anywhere.
NEEDS_WORK = re.compile(r"[%&\\\x00-\x1f\x7f]|/\*|\*/|<!--|-->")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([chr(c) for c in range(128)] + ["/*", "*/", "<!--", "-->"]), max_size=40).map("".join))
def test_the_plain_ascii_check_is_the_patterns(text: str) -> None:
    assert preprocess._plain_ascii(text) == (NEEDS_WORK.search(text) is None)


@pytest.mark.parametrize("text", ["", "plain text", "\x7f", "\t", "a\nb", "\x1f", "a-->b", "<!-", "<!--", "--", "-- x",
                                  "*/", "/ *", "a*b", "/*", "50%", "AT&T", "a\\b", "~!@#$^*()_+=-`{}[]|:;'\"<>,.?/"])
def test_the_plain_ascii_check_on_its_edges(text: str) -> None:
    assert preprocess._plain_ascii(text) == (NEEDS_WORK.search(text) is None)


# Printable ASCII with what the fast path must still get right (runs of spaces, case, the characters of
# the comment markers, apart and together) and, rarely, what sends a value to the general path.
_ASCII_PIECE = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(["  ", "   ", " ", "*", "/", "-", "--", "<!-", "/ *", "* /", "SeLeCt", "O'Brien", "+", "%41", "%",
                     "&amp;", "&lt", "&#37;", "&#x41;", "&", "\\x41", "\\u0041", "\t"]),
)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.lists(_ASCII_PIECE, max_size=80).map("".join), st.text(max_size=60), tricky_text))
def test_the_plain_ascii_fast_path_is_the_general_path(value: str) -> None:
    assert preprocess._normalize(value) == preprocess._decoded(value)


@pytest.mark.parametrize("value", ["", " ", "  ", " a  b ", "A" * preprocess.MAX_CHARS, "x " * 5000, "UNION  SELECT",
                                   "a*b-c/d<e>f", "-- comment", "AT&amp;T", "50%25", "a\\x41", "~!@#$^*()_+=-`{}[]|:;'\"<>,.?/"])
def test_the_plain_ascii_fast_path_on_its_edges(value: str) -> None:
    assert preprocess._normalize(value) == preprocess._decoded(value)
