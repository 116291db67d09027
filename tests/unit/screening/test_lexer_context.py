"""The lexer reads context: apostrophes, entity references and shell commands are told from prose."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest

from screening import feature_schema, features, tokens
from screening.preprocess import normalize

_classes: Callable[[str], list[int]] = tokens.classes


@pytest.fixture(autouse=True, params=["python", "compiled"])
def lexer(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every rule below holds for the definition and for the compiled scanner."""
    global _classes
    _classes = tokens.python_classes if request.param == "python" else tokens.classes
    yield
    _classes = tokens.classes


def names(text: str) -> list[str]:
    return [tokens.NAMES[c - 1] for c in _classes(normalize(text))]


def test_an_apostrophe_inside_a_word_is_not_a_string_delimiter() -> None:
    assert names("Jane O'Brien") == ["word", "word", "apostrophe", "word"]
    assert "single_quote" not in names("don't, it's, rock'n'roll")
    assert names("it\u2019s") == ["word", "apostrophe", "word"]  # the typographic apostrophe too
    # ... unless SQL follows it: an evasion that glues the quote to a keyword stays a quote.
    assert names("admin'or'1'='1")[1:3] == ["single_quote", "sql_logic"]
    assert names("' or 1=1--")[0] == "single_quote" and names("1' and '1")[1] == "single_quote"


def test_an_ampersand_is_an_entity_reference_only_with_its_semicolon() -> None:
    assert names("Tom & Jerry") == ["word", "amp", "word"]
    assert names("AT&T") == ["word", "amp", "word"]
    assert "entity_ref" in names("<foo>&xxe;</foo>")


def test_a_shell_word_is_a_command_only_in_command_position() -> None:
    assert names(";cat /etc/passwd")[:2] == ["semicolon", "shell_weak"]
    assert names("|id")[-1] == "shell_weak" and names("a && uname -a")[2] == "shell_strong"
    assert names("id") == ["shell_weak"]  # first in its field
    assert "shell_weak" not in names("/v1/echo") and "shell_weak" not in names("the echo of time")
    assert names("written in python and perl") == ["word", "sql_logic", "cmd_word", "sql_logic", "cmd_word"]
    assert names("/bin/bash")[-1] == "shell_strong"  # a path to a shell names the shell


def test_every_token_class_has_a_role_and_role_trigrams_are_named() -> None:
    assert all(features._ROLE[tokens.C[name]] > 0 for name in tokens.NAMES)
    vector = features.extract_values(["' or 1=1--"])
    hit = {features.NAMES[i] for i in np.flatnonzero(vector) if feature_schema._ROLE3_0 <= i < feature_schema._ROLE4_0}
    assert "role3:|>quote>keyword" in hit
    # An LDAP filter shares the role sequence "quote, keyword" family-independently with SQL.
    ldap = features.extract_values(["*)(uid=*))(|(uid=*"])
    assert ldap.shape == vector.shape


def test_prose_with_ampersands_and_names_shares_no_sequence_with_sql_injection() -> None:
    prose = features.extract_values(["Jane O'Brien, select specialty hospital", "Tom & Jerry"])
    attack = features.extract_values(["' union select password from users--"])
    quoted = [i for i in range(feature_schema._ROLE3_0, feature_schema._ROLE4_0) if "quote" in features.NAMES[i]]
    assert attack[quoted].any() and not prose[quoted].any()
