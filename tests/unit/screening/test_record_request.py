"""`record.from_request`: a request message (protobuf, JSON bytes or text, a document) to the record the
gateway and `explain` both score; no sockets."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from multidict import CIMultiDict, CIMultiDictProxy

import protos
from screening import features, record

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
            got = features.request_values("/v1/echo", q, headers, message, record.SCREENED_HEADERS)
            assert got == (features.field_values(rec), rec.dropped)


def test_a_message_walk_keeps_field_order_and_odd_keys_first() -> None:
    message = echo_pb2.EchoRequest(message="m", repeat=2, labels={"<k>": "v"})
    assert record.message_leaves(message) == ([("message", "m"), ("repeat", "2"), ("labels#", "<k>"),
                                               ("labels.?", "v")], 0)
    book = json_format.ParseDict({"name": "n", "author": {"name": "a"}, "title": "t"}, library_pb2.Book())
    assert [path for path, _ in record.message_leaves(book)[0]] == ["name", "title", "author.name"]
