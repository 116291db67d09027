"""The HTTP-to-message mapping: path variables, query parameters, bodies and their conflicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from translators.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from translators.request import build_request
from translators.routes import RouteTable

from .conftest import table_with


def build(table: RouteTable, method: str, path: str, query: list[tuple[str, str]] | None = None,
          body: Any = None, content_type: str | None = "application/json") -> dict[str, Any]:
    binding, variables = table.match(method, path)
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    message = build_request(binding.request, variables, query or [], content_type, raw)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def test_body_star_maps_whole_message(table: RouteTable) -> None:
    got = build(table, "POST", "/v1/echo", body={"message": "hi", "repeat": 2, "labels": {"a": "b"}})
    assert got == {"message": "hi", "repeat": 2, "labels": {"a": "b"}}


def test_both_field_names_accepted(table: RouteTable) -> None:
    camel = build(table, "POST", "/v1/shelves", body={"name": "shelves/x", "bookCount": "3"})
    snake = build(table, "POST", "/v1/shelves", body={"name": "shelves/x", "book_count": 3})
    assert camel == snake == {"shelf": {"name": "shelves/x", "book_count": "3"}}


def test_path_variable_and_query(table: RouteTable) -> None:
    got = build(table, "GET", "/v1/items/abc", [("verbose", "true")])
    assert got == {"id": "abc", "verbose": True}


def test_query_nested_repeated_enum_map_and_wkt(table: RouteTable) -> None:
    got = build(
        table, "GET", "/v1/shelves/1/books",
        [
            ("tags", "a"), ("tags", "b"), ("genre", "POETRY"), ("filter.author.name", "Ann"),
            ("filter.minRating", "4.5"), ("labels[lang]", "en"), ("published_after", "2020-01-01T00:00:00Z"),
            ("filter.min_page_count", "100"), ("pageSize", "5"),
        ],
    )
    assert got == {
        "parent": "shelves/1", "tags": ["a", "b"], "genre": "POETRY",
        "filter": {"author": {"name": "Ann"}, "min_rating": 4.5, "min_page_count": "100"},
        "labels": {"lang": "en"}, "published_after": "2020-01-01T00:00:00Z", "page_size": 5,
    }


def test_enum_by_number(table: RouteTable) -> None:
    assert build(table, "GET", "/v1/shelves/1/books", [("genre", "3")])["genre"] == "POETRY"


def test_body_field_with_path_variable_in_it(table: RouteTable) -> None:
    got = build(table, "PATCH", "/v1/shelves/1/books/2", [("update_mask", "title,author.name")],
                body={"title": "T", "pageCount": "12"})
    assert got == {"book": {"name": "shelves/1/books/2", "title": "T", "page_count": "12"},
                   "update_mask": "title,author.name"}


def test_same_value_in_path_and_body_is_accepted(table: RouteTable) -> None:
    got = build(table, "PATCH", "/v1/shelves/1/books/2", body={"name": "shelves/1/books/2"})
    assert got["book"]["name"] == "shelves/1/books/2"


def test_conflicting_path_and_body_is_rejected(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="bound by the path"):
        build(table, "PATCH", "/v1/shelves/1/books/2", body={"name": "shelves/9/books/9"})


def test_conflict_path_wins_when_configured(services: list[Any]) -> None:
    lax = table_with(services, path_conflict="path_wins")
    got = build(lax, "PATCH", "/v1/shelves/1/books/2", body={"name": "shelves/9/books/9"})
    assert got["book"]["name"] == "shelves/1/books/2"


def test_unknown_query_parameter_rejected_by_default(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="unknown query parameter 'nope'"):
        build(table, "GET", "/v1/items/a", [("nope", "1")])


def test_unknown_query_parameter_ignorable(services: list[Any]) -> None:
    lax = table_with(services, reject_unknown_query_parameters=False)
    assert build(lax, "GET", "/v1/items/a", [("nope", "1")]) == {"id": "a"}


def test_unknown_json_field_rejected_by_default(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="no field named"):
        build(table, "POST", "/v1/echo", body={"message": "x", "typo": 1})


def test_unknown_json_field_ignorable(services: list[Any]) -> None:
    lax = table_with(services, reject_unknown_fields=False)
    assert build(lax, "POST", "/v1/echo", body={"message": "x", "typo": 1}) == {"message": "x"}


def test_body_star_takes_no_query(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="unknown query parameter"):
        build(table, "POST", "/v1/echo", [("message", "x")], body={})


def test_query_cannot_set_body_field(table: RouteTable) -> None:
    with pytest.raises(BadRequest):
        build(table, "POST", "/v1/shelves", [("shelf.name", "x")], body={})


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"repeat": "many"}', "invalid request"),
        (b'{"repeat": 1.5}', "invalid request"),
        (b'{"message": 5}', "invalid request"),
        (b'{"labels": []}', "invalid request"),
    ],
)
def test_bad_bodies(table: RouteTable, body: bytes, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        build(table, "POST", "/v1/echo", body=body)


def test_wrong_scalar_in_query(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="not a boolean"):
        build(table, "GET", "/v1/items/a", [("verbose", "maybe")])
    with pytest.raises(BadRequest):
        build(table, "GET", "/v1/shelves", [("page_size", "ten")])
    with pytest.raises(BadRequest):
        build(table, "GET", "/v1/shelves/1/books", [("genre", "SCIFI")])


def test_repeated_scalar_given_twice_is_rejected(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="given twice"):
        build(table, "GET", "/v1/items/a", [("verbose", "true"), ("verbose", "false")])


def test_map_needs_bracket_syntax(table: RouteTable) -> None:
    with pytest.raises(BadRequest, match="map"):
        build(table, "GET", "/v1/shelves/1/books", [("labels", "x")])


def test_deeply_nested_body_is_a_400(table: RouteTable) -> None:
    deep = b'{"labels": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(BadRequest):
        build(table, "POST", "/v1/echo", body=deep)


def test_media_type_and_size(table: RouteTable, services: list[Any]) -> None:
    with pytest.raises(UnsupportedMediaType):
        build(table, "POST", "/v1/echo", body={"message": "x"}, content_type="application/xml")
    assert build(table, "POST", "/v1/echo", body={"message": "x"}, content_type="application/merge-patch+json")
    assert build(table, "POST", "/v1/echo", body={"message": "x"}, content_type=None)
    small = table_with(services, max_body_bytes=10)
    with pytest.raises(PayloadTooLarge):
        build(small, "POST", "/v1/echo", body={"message": "more than ten bytes"})


def test_empty_body_is_an_empty_message(table: RouteTable) -> None:
    assert build(table, "POST", "/v1/echo") == {}


def test_additional_binding_fills_its_own_fields(table: RouteTable) -> None:
    got = build(table, "POST", "/v1/shelves/7/books/b1", body={"title": "X"})
    assert got == {"shelf_id": "7", "book_id": "b1", "book": {"title": "X"}}


def test_bytes_int64_and_wkt_in_body(table: RouteTable) -> None:
    got = build(table, "POST", "/v1/shelves/1/books", body={
        "title": "T", "checksum": "AAEC", "copiesSold": "9007199254740993", "readTime": "1.5s",
        "publishedAt": "2021-05-01T10:00:00Z", "print": {"isbn": "1"}, "subtitle": "sub", "edition": 0,
    })
    book = got["book"]
    assert book["checksum"] == "AAEC" and book["copies_sold"] == "9007199254740993"
    assert book["read_time"] == "1.500s" and book["print"] == {"isbn": "1"} and book["edition"] == 0


json_scalar = st.one_of(st.text(max_size=20), st.integers(-(2**31), 2**31 - 1))


@settings(max_examples=200)
@given(
    message=st.text(max_size=50),
    repeat=st.integers(-(2**31), 2**31 - 1),
    labels=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
)
def test_body_round_trip_matches_json_format(table: RouteTable, message: str, repeat: int,
                                             labels: dict[str, str]) -> None:
    """The translator accepts exactly what json_format.Parse accepts and builds the same message."""
    binding, variables = table.match("POST", "/v1/echo")
    doc = {"message": message, "repeat": repeat, "labels": labels}
    raw = json.dumps(doc).encode()
    ours = build_request(binding.request, variables, [], "application/json", raw)
    theirs = json_format.Parse(raw, binding.request.message_class())
    assert ours == theirs


@given(st.binary(max_size=200))
def test_arbitrary_bodies_never_crash(table: RouteTable, raw: bytes) -> None:
    binding, variables = table.match("POST", "/v1/echo")
    try:
        build_request(binding.request, variables, [], "application/json", raw)
    except BadRequest:
        pass


@given(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=10)), max_size=6))
def test_arbitrary_queries_never_crash(table: RouteTable, query: list[tuple[str, str]]) -> None:
    binding, variables = table.match("GET", "/v1/shelves/1/books")
    try:
        build_request(binding.request, variables, query, None, b"")
    except BadRequest:
        pass
