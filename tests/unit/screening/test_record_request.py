"""`record.from_request`: a request message (protobuf, JSON bytes or text, a document) to the record the
gateway and `explain` both score; no sockets."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

import protos
from screening import features, record
from screening.values import request_values

protos.add_generated_path()
from echo.v1 import echo_pb2
from library.v1 import library_pb2

BODY = {"message": "1' OR '1'='1' --", "repeat": 3, "labels": {"user": "o'brien", "<script>": "x", "k": "v"}}


def test_a_message_gives_the_leaves_of_its_json_object() -> None:
    message = json_format.ParseDict(BODY, echo_pb2.EchoRequest())
    leaves, dropped = record.message_leaves(message)
    assert sorted(leaves) == sorted(record.leaves(BODY)[0]) and dropped == 0
    by_message = record.from_request("POST", "/v1/echo", [], {}, message)
    for raw in (json.dumps(BODY).encode(), json.dumps(BODY), BODY):
        other = record.from_request("POST", "/v1/echo", [], {}, raw)
        assert sorted(other.body) == sorted(by_message.body)
        assert (features.extract(other) == features.extract(by_message)).all()


def test_nested_repeated_enum_and_well_known_fields_walk_like_json() -> None:
    doc = {"name": "shelves/1/books/2", "title": "<svg onload=alert(1)>", "author": {"name": "O'Brien"},
           "genre": "POETRY", "tags": ["a", "b'--"], "published_at": "2020-01-02T03:04:05Z", "page_count": "12",
           "labels": {"$where": "1==1"}, "reviews": [{"reviewer": "x", "stars": 5}, {"text": "${jndi:ldap://a}"}],
           "rating": 4.5}
    book = json_format.ParseDict(doc, library_pb2.Book())
    as_json = json_format.MessageToDict(book, preserving_proto_field_name=True)
    assert sorted(record.message_leaves(book)[0]) == sorted(record.leaves(as_json)[0])
    leaves = dict(record.message_leaves(book)[0])
    assert leaves["genre"] == "POETRY" and leaves["reviews[].text"] == "${jndi:ldap://a}"
    assert leaves["labels#"] == "$where" and leaves["published_at"] == "2020-01-02T03:04:05Z"


def test_default_values_are_not_leaves() -> None:
    message = json_format.ParseDict({"message": "hi", "repeat": 0}, echo_pb2.EchoRequest())
    assert record.from_request("POST", "/v1/echo", [], {}, message).body == (("message", "hi"),)


def test_headers_are_picked_alike_from_a_multidict_and_a_dict() -> None:
    given = [("User-Agent", "curl/8"), ("Host", "x"), ("cookie", "a=1"), ("Cookie", "b=2"), ("REFERER", "r")]
    multidict = CIMultiDictProxy(CIMultiDict(given))
    picked = record.pick_headers(multidict)
    assert picked == record.pick_headers(given)
    assert picked == (("user-agent", "curl/8"), ("referer", "r"), ("cookie", "a=1"), ("cookie", "b=2"))
    assert record.pick_headers(dict(given[:3]), ("HOST",)) == (("host", "x"),)


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe not json", "plain text", b"[1, 2]", None])
def test_bad_or_odd_bodies_never_raise(raw: object) -> None:
    rec = record.from_request("POST", "/x", [], {}, raw)
    assert all(isinstance(v, str) for _, v in rec.body)


def test_huge_and_deep_messages_are_bounded() -> None:
    big = {"labels": {f"k{i}": "v" * 5000 for i in range(1000)}}
    rec = record.from_request("POST", "/v1/echo", [], {}, json_format.ParseDict(big, echo_pb2.EchoRequest()))
    assert len(rec.body) <= record.MAX_FIELDS and rec.dropped > 0
    assert sum(len(v) for _, v in rec.body) <= record.MAX_TOTAL_CHARS
    deep: object = "x"
    for _ in range(50_000):
        deep = [deep]
    assert record.from_request("POST", "/x", [], {}, deep).body == (("[]" * 50_000, "x"),)


def test_later_stream_messages_are_ws_fields() -> None:
    rec = record.from_message("GET", "/ws/echo.v1.EchoService/Chat", b'{"message": "<svg onload=1>"}')
    assert [f.name for f in rec.fields()] == ["path", "ws.message"]


@pytest.mark.parametrize(
    ("argv", "path", "query"),
    [
        (["curl", "-X", "POST", "localhost:8080/v1/echo", "-d", '{"message": "hi"}'], "/v1/echo", []),
        (["http://127.0.0.1:8080/v1/items/a%2Fb?verbose=true&q="], "/v1/items/a%2Fb", [("verbose", "true"), ("q", "")]),
        (["/v1/items/x?tag=a&tag=b"], "/v1/items/x", [("tag", "a"), ("tag", "b")]),
        (["curl localhost:8080"], "/", []),
    ],
)
def test_explain_reads_a_curl_url_with_or_without_scheme(argv: list[str], path: str, query: list[tuple[str, str]]) -> None:
    from screening.cli import parse_request

    request = parse_request(argv, None)
    assert request["path"] == path
    assert request["query"] == query


def test_request_values_are_the_records_field_values() -> None:
    """The policy's shortcut (values without a record) scores exactly what the record would give."""
    headers = CIMultiDict([("User-Agent", "curl/8"), ("Cookie", "a=b"), ("cookie", "c=d"), ("Accept", "*/*")])
    query = [("q", "x"), ("q", "' or 1=1"), ("we ird", "v"), ("k", "y" * 5000)]
    book = json_format.ParseDict({"title": "<svg onload=alert(1)>", "tags": ["a", "b'--"], "labels": {"$w": "1"}},
                                 library_pb2.Book())
    messages: list[object] = [json_format.ParseDict(BODY, echo_pb2.EchoRequest()), book, json.dumps(BODY).encode(),
                              b"not json", None, "plain text", {"a": [1, {"b": None}]}]
    for message in messages:
        for q in (query, []):
            rec = record.from_request("POST", "/v1/echo", q, headers, message, record.SCREENED_HEADERS)
            got = request_values("/v1/echo", q, headers, message, record.SCREENED_HEADERS)
            assert got == (features.field_values(rec), rec.dropped)


def test_a_message_walk_keeps_field_order_and_odd_keys_first() -> None:
    message = echo_pb2.EchoRequest(message="m", repeat=2, labels={"<k>": "v"})
    assert record.message_leaves(message) == ([("message", "m"), ("repeat", "2"), ("labels#", "<k>"),
                                               ("labels.?", "v")], 0)
    book = json_format.ParseDict({"name": "n", "author": {"name": "a"}, "title": "t"}, library_pb2.Book())
    assert [path for path, _ in record.message_leaves(book)[0]] == ["name", "title", "author.name"]


# --- the policy's shortcut, `values.request_values`, against its definition --------------------------------
_NAMES = st.sampled_from(["User-Agent", "user-agent", "USER-AGENT", "Cookie", "cookie", "COO\u212aIE", "Referer",
                          "Content-Type", "X-Forwarded-For", "x-api-version", "Host", "Accept", "X-Other"])
_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "a", "x" * 5000, "' or 1=1--", "<svg onload=1>"]))
_KEYS = st.one_of(st.text(max_size=12), st.sampled_from(["user", "ticket_id", "lang-x", "<k>", "$where", "_", "",
                                                         "k" * 70, "a.b"]))


def _definition(path: str, query: object, headers: object, message: object,
                screened: tuple[str, ...]) -> tuple[list[str], int]:
    rec = record.from_request("POST", path, query, headers, message, screened)  # type: ignore[arg-type]
    return features.field_values(rec), rec.dropped


@settings(max_examples=400, deadline=None)
@given(path=_TEXT, query=st.lists(st.tuples(_KEYS, _TEXT), max_size=4),
       headers=st.lists(st.tuples(_NAMES, _TEXT), max_size=6), text=_TEXT, repeat=st.integers(-3, 3),
       labels=st.dictionaries(_KEYS, _TEXT, max_size=6),
       screened=st.sampled_from([record.SCREENED_HEADERS, ("Cookie", "host"), ()]))
def test_request_values_equal_the_records_values(path: str, query: list[tuple[str, str]],
                                                 headers: list[tuple[str, str]], text: str, repeat: int,
                                                 labels: dict[str, str], screened: tuple[str, ...]) -> None:
    message = echo_pb2.EchoRequest(message=text, repeat=repeat, labels=labels)
    for given_headers in (headers, CIMultiDict(headers), CIMultiDictProxy(CIMultiDict(headers)), dict(headers)):
        for q in (query, CIMultiDict(query).items()):
            assert request_values(path, q, given_headers, message, screened) == _definition(
                path, q, given_headers, message, screened)


def test_request_values_fall_back_to_the_walk_beyond_its_bounds() -> None:
    """Messages the flat walk does not take (nested, odd keys, over the text or leaf budget) give the walk's
    values and dropped count."""
    headers = CIMultiDict([("User-Agent", "curl/8")])
    book = json_format.ParseDict({"title": "<svg onload=alert(1)>", "tags": ["a", "b'--"], "labels": {"$w": "1"},
                                  "author": {"name": "x"}, "genre": "POETRY"}, library_pb2.Book())
    messages: list[object] = [
        book,
        echo_pb2.EchoRequest(message="m" * 4097, labels={f"k{i}": "v" * 4000 for i in range(12)}),
        echo_pb2.EchoRequest(labels={f"k{i}": str(i) for i in range(300)}),
        echo_pb2.EchoRequest(message="x" * 32767, labels={"a": "b"}),
        echo_pb2.EchoRequest(message="x" * 32768),
        echo_pb2.EchoRequest(message="x" * 32000, labels={"a": "y" * 767, "b": ""}),
        echo_pb2.EchoRequest(message="x" * 32000, labels={"a": "y" * 768, "b": ""}),
        echo_pb2.EchoRequest(labels={"<k>": "v", "ok": "w"}),
        echo_pb2.EchoRequest(labels={"a": "y" * 5000, "b": "z"}),  # one label clipped, the total within budget
        echo_pb2.EchoRequest(labels={"a": "y" * 4096, "b": "z"}, repeat=-2147483648),
        json.dumps(BODY).encode(), b"not json", "plain text", {"a": [1, {"b": None}]}, None,
    ]
    for message in messages:
        for screened in (record.SCREENED_HEADERS, ["user-agent"]):
            got = request_values("/v1/echo", [("q", "1"), ("we ird", "v")], headers, message, screened)
            assert got == _definition("/v1/echo", [("q", "1"), ("we ird", "v")], headers, message, tuple(screened))
