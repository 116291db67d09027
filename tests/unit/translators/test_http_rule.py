"""Path templates: the grammar of google/api/http.proto, matching, ranking and decoding."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translators.http_rule import ANY, DEEP, LITERAL, TemplateError, parse_template

MATCHES = [
    # template, path, expected variables (None: no match)
    ("/v1/messages/{message_id}", "/v1/messages/123456", {"message_id": "123456"}),
    ("/v1/messages/{message_id}", "/v1/messages/123/456", None),
    ("/v1/{name=messages/*}", "/v1/messages/123456", {"name": "messages/123456"}),
    ("/v1/users/{user_id}/messages/{message_id}", "/v1/users/me/messages/123",
     {"user_id": "me", "message_id": "123"}),
    ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2", {"name": "shelves/1/books/2"}),
    ("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books", None),
    ("/v1/books/{name=**}", "/v1/books/a/b/c", {"name": "a/b/c"}),
    ("/v1/books/{name=**}", "/v1/books/a", {"name": "a"}),
    ("/v1/*/items", "/v1/anything/items", {}),
    ("/v1/*/items", "/v1//items", None),
    ("/v1/**", "/v1/a/b", {}),
    ("/v1/items:stream", "/v1/items:stream", {}),
    ("/v1/items:stream", "/v1/items", None),
    ("/v1/{name=shelves/*/books/*}:publish", "/v1/shelves/1/books/2:publish", {"name": "shelves/1/books/2"}),
    ("/v1/{name=shelves/*/books/*}:publish", "/v1/shelves/1/books/2:print", None),
    ("/v1/{name=**}:undelete", "/v1/a/b:undelete", {"name": "a/b"}),
    # A colon in a segment is data when the template has no verb.
    ("/v1/items/{id}", "/v1/items/a:b", {"id": "a:b"}),
    # Single-segment variables decode everything, %2F included.
    ("/v1/items/{id}", "/v1/items/a%2Fb%20c", {"id": "a/b c"}),
    # Multi-segment variables keep %2F encoded and decode the rest.
    ("/v1/{name=shelves/*/books/*}", "/v1/shelves/a%2fb/books/%C3%A9", {"name": "shelves/a%2Fb/books/é"}),
    ("/v1/books/{name=**}", "/v1/books/x%2Fy/z", {"name": "x%2Fy/z"}),
    ("/v1/{a.b.c}", "/v1/x", {"a.b.c": "x"}),
    ("/v1/literal", "/v1/literal", {}),
    ("/v1/literal", "/v1/literal/", None),
    ("/v1/literal", "v1/literal", None),
]


@pytest.mark.parametrize(("template", "path", "expected"), MATCHES)
def test_match_table(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert parse_template(template).match(path) == expected


BAD = [
    "v1/no-leading-slash",
    "/v1/{unclosed",
    "/v1/unopened}",
    "/v1/{a={b}}",
    "/v1/**/tail",
    "/v1/{name=**}/tail",
    "/v1/{1bad}",
    "/v1/{a}/{a}",
    "/v1/items:",
    "/v1/sp ace",
    "/v1//double",
]


@pytest.mark.parametrize("template", BAD)
def test_bad_templates_fail_at_compile(template: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(template)


def test_parse_shape() -> None:
    t = parse_template("/v1/{name=shelves/*/books/*}:publish")
    assert t.verb == "publish"
    assert [k for k, _ in t.segments] == [LITERAL, LITERAL, ANY, LITERAL, ANY]
    assert t.variables[0].field_path == ("name",)
    assert t.variables[0].multi_segment
    assert parse_template("/v1/{x=**}").segments[-1] == (DEEP, "")


def test_rank_literal_before_variable() -> None:
    literal = parse_template("/v1/shelves/special")
    variable = parse_template("/v1/shelves/{id}")
    deep = parse_template("/v1/shelves/{id=**}")
    ordered = sorted([deep, variable, literal], key=lambda t: t.rank)
    assert ordered == [literal, variable, deep]
    assert parse_template("/v1/{n=*}:verb").rank < parse_template("/v1/{n=*}").rank


segment = st.text(alphabet=string.ascii_letters + string.digits + "-._~", min_size=1, max_size=12)
value = st.text(min_size=1, max_size=20).filter(lambda s: s.isprintable())


@given(st.lists(segment, min_size=1, max_size=5))
def test_literal_templates_match_themselves(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    assert parse_template(path).match(path) == {}


@given(st.lists(segment, min_size=1, max_size=4), value)
def test_single_segment_variable_round_trips(prefix: list[str], text: str) -> None:
    template = parse_template("/" + "/".join(prefix) + "/{v}")
    encoded = quote(text, safe="-_.~")
    assert template.match("/" + "/".join(prefix) + "/" + encoded) == {"v": text}


@given(st.lists(value, min_size=1, max_size=4))
def test_deep_variable_keeps_encoded_slashes(pieces: list[str]) -> None:
    template = parse_template("/v1/{name=**}")
    encoded = "/".join(quote(p, safe="-_.~") for p in pieces)
    expected = "/".join(p.replace("/", "%2F") for p in pieces)
    # %2F inside a piece stays encoded; every other escape is decoded.
    result = template.match("/v1/" + encoded)
    assert result is not None
    assert result["name"] == expected


@given(st.text(max_size=40))
def test_matching_never_raises(path: str) -> None:
    for source in ("/v1/{a}", "/v1/{a=**}:x", "/v1/*/b/{c=d/*}"):
        parse_template(source).match("/" + path)
