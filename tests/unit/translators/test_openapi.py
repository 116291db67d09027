"""The OpenAPI document generated from the route table: valid, complete, and true to the JSON mapping."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from google.api import http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from openapi_spec_validator import validate

from translators.descriptors import ServiceInfo, from_modules
from translators.openapi import build_openapi
from translators.options import TranscodeOptions
from translators.routes import RouteTable, compile_routes

ECHO = "echo.v1.echo_pb2"
LIBRARY = "library.v1.library_pb2"
_F = descriptor_pb2.FieldDescriptorProto


@pytest.fixture(scope="module")
def echo_table() -> RouteTable:
    return compile_routes(from_modules([ECHO]))


@pytest.fixture(scope="module")
def library_table() -> RouteTable:
    return compile_routes(from_modules([LIBRARY]))


@pytest.fixture(scope="module")
def echo(echo_table: RouteTable) -> dict[str, Any]:
    return build_openapi(echo_table)


@pytest.fixture(scope="module")
def library(library_table: RouteTable) -> dict[str, Any]:
    return build_openapi(library_table)


def _synthetic_table() -> RouteTable:
    """A service the demo protos lack: a recursive message, every odd scalar, clashing templates."""
    file = descriptor_pb2.FileDescriptorProto(name="t/v1/t.proto", package="t.v1", syntax="proto3")
    node = file.message_type.add(name="Node")
    entry = node.nested_type.add(name="NodesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="key")
    entry.field.add(
        name="value",
        number=2,
        type=_F.TYPE_MESSAGE,
        type_name=".t.v1.Node",
        label=_F.LABEL_OPTIONAL,
        json_name="value",
    )
    for number, (name, ftype, label, type_name) in enumerate(
        [
            ("id", _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
            ("child", _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, ".t.v1.Node"),
            ("kids", _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".t.v1.Node"),
            ("big_count", _F.TYPE_UINT64, _F.LABEL_OPTIONAL, ""),
            ("small", _F.TYPE_FIXED32, _F.LABEL_OPTIONAL, ""),
            ("blob", _F.TYPE_BYTES, _F.LABEL_OPTIONAL, ""),
            ("ratio", _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, ""),
            ("nodes", _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".t.v1.Node.NodesEntry"),
        ],
        start=1,
    ):
        camel = re.sub(r"_(.)", lambda m: m.group(1).upper(), name)
        field = node.field.add(name=name, number=number, type=ftype, label=label, json_name=camel)
        if type_name:
            field.type_name = type_name
    service = file.service.add(name="TreeService")
    rules = {
        "Get": http_pb2.HttpRule(get="/v1/{id}"),
        # Same URLs as Get: nothing can tell them apart, so it is shadowed.
        "GetByChild": http_pb2.HttpRule(get="/v1/{child.id}"),
        "Wild": http_pb2.HttpRule(get="/v1/*/nodes/{id}"),
        "Options": http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="OPTIONS", path="/v1/nodes")),
        "Upload": http_pb2.HttpRule(post="/v1/nodes:upload", body="*"),
        "Deep": http_pb2.HttpRule(
            get="/v2/{id}",
            additional_bindings=[
                http_pb2.HttpRule(get="/v2/{id=nodes/**}"),
                http_pb2.HttpRule(get="/v3/{id=nodes/**}"),
            ],
        ),
    }
    for name in rules:
        service.method.add(
            name=name, input_type=".t.v1.Node", output_type=".t.v1.Node", client_streaming=name == "Upload"
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    info = ServiceInfo(pool.FindServiceByName("t.v1.TreeService"), rules, "test")
    return compile_routes([info])


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) for every operation, in path items and in the two extensions."""
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation
    for key in ("x-portcullis-custom-methods", "x-portcullis-shadowed-operations"):
        for entry in doc.get(key, []):
            yield entry["method"], entry["path"], entry["operation"]


def _params(operation: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in operation.get("parameters", []) if p["in"] == where}


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return doc["components"]["schemas"][name]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


@pytest.mark.parametrize("modules", [[ECHO], [LIBRARY], [ECHO, LIBRARY]])
def test_document_validates(modules: list[str]) -> None:
    doc = build_openapi(compile_routes(from_modules(modules)), title="Demo", version="2.0.0")
    validate(doc)
    assert doc["openapi"] == "3.0.3"
    assert doc["info"] == {"title": "Demo", "version": "2.0.0"}


def test_synthetic_document_validates() -> None:
    validate(build_openapi(_synthetic_table()))


@pytest.mark.parametrize("make", ["echo", "library", "synthetic"])
def test_every_binding_is_exactly_one_operation(make: str, request: pytest.FixtureRequest) -> None:
    table = _synthetic_table() if make == "synthetic" else request.getfixturevalue(f"{make}_table")
    doc = build_openapi(table)
    operations = list(_operations(doc))
    seen = Counter(op["x-portcullis-binding"] for _, _, op in operations)
    assert seen == Counter(b.name for b in table.bindings)
    by_name = {op["x-portcullis-binding"]: (method, op) for method, _, op in operations}
    for binding in table.bindings:
        method, operation = by_name[binding.name]
        assert method == binding.http_method
        assert operation["tags"] == [binding.service]
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[A-Za-z0-9._]+", i) for i in ids)


def test_additional_binding_ids_drop_the_hash(library: dict[str, Any]) -> None:
    post = library["paths"]["/v1/shelves/{shelf_id}/books/{book_id}"]["post"]
    assert post["operationId"] == "library.v1.LibraryService.CreateBook_1"
    assert post["x-portcullis-binding"] == "library.v1.LibraryService.CreateBook#1"


def test_echo_post_body_is_the_request_message(echo: dict[str, Any]) -> None:
    post = echo["paths"]["/v1/echo"]["post"]
    assert post["requestBody"]["required"] is True
    assert post["requestBody"]["content"]["application/json"]["schema"] == _ref("echo.v1.EchoRequest")
    assert "parameters" not in post  # body "*": nothing is left for the query
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == _ref("echo.v1.EchoResponse")
    assert post["responses"]["default"]["content"]["application/json"]["schema"] == _ref("google.rpc.Status")


def test_get_item_has_path_id_and_query_verbose(echo: dict[str, Any]) -> None:
    get = echo["paths"]["/v1/items/{id}"]["get"]
    assert _params(get, "path") == {
        "id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    }
    assert _params(get, "query") == {
        "verbose": {"name": "verbose", "in": "query", "schema": {"type": "boolean"}}
    }
    assert "requestBody" not in get


def test_int64_is_a_string_and_maps_are_objects(echo: dict[str, Any], library: dict[str, Any]) -> None:
    response = _schema(echo, "echo.v1.EchoResponse")["properties"]
    assert response["receivedAtUnixNanos"] == {"type": "string", "format": "int64"}
    assert response["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    book = _schema(library, "library.v1.Book")["properties"]
    assert book["pageCount"] == {"type": "string", "format": "int64"}
    assert _schema(library, "library.v1.Shelf")["properties"]["bookCount"]["type"] == "string"


def test_enum_lists_value_names(library: dict[str, Any]) -> None:
    assert _schema(library, "library.v1.Genre") == {
        "type": "string",
        "enum": ["GENRE_UNSPECIFIED", "FICTION", "NONFICTION", "POETRY", "DRAMA", "BIOGRAPHY"],
    }
    assert _schema(library, "library.v1.Book")["properties"]["genre"] == _ref("library.v1.Genre")


def test_book_follows_the_json_mapping(library: dict[str, Any]) -> None:
    book = _schema(library, "library.v1.Book")
    props = book["properties"]
    assert props["publishedAt"] == {"type": "string", "format": "date-time"}
    assert props["readTime"]["type"] == "string"
    assert props["checksum"] == {"type": "string", "format": "byte"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["reviews"] == {"type": "array", "items": _ref("library.v1.Review")}
    assert props["subtitle"] == {"type": "string", "nullable": True}
    assert props["edition"] == {"type": "integer", "format": "int32"}
    assert props["rating"] == {"type": "number", "format": "double"}
    assert props["print"] == _ref("library.v1.PrintDetails")
    # The oneof is documented; proto3 `optional` (a synthetic oneof) is not a choice.
    assert "`format`" in book["description"] and "`print`, `ebook`" in book["description"]
    assert "edition" not in book["description"]
    assert set(props) >= {"name", "title", "author", "labels", "copiesSold", "published"}


def test_server_streaming_is_ndjson_of_results(echo: dict[str, Any]) -> None:
    get = echo["paths"]["/v1/items:stream"]["get"]
    content = get["responses"]["200"]["content"]
    assert list(content) == ["application/x-ndjson"]
    line = content["application/x-ndjson"]["schema"]
    assert line["properties"]["result"] == _ref("echo.v1.Item")
    assert line["properties"]["error"] == _ref("google.rpc.Status")
    assert set(_params(get, "query")) == {"count", "prefix"}


def test_status_schema(echo: dict[str, Any]) -> None:
    status = _schema(echo, "google.rpc.Status")["properties"]
    assert status["code"] == {
        "type": "integer",
        "format": "int32",
        "description": "The google.rpc.Code number.",
    }
    assert status["message"] == {"type": "string"}
    assert status["details"]["type"] == "array"
    assert "@type" in status["details"]["items"]["properties"]


def test_custom_verbs_and_collapsed_patterns(library: dict[str, Any]) -> None:
    publish = library["paths"]["/v1/{name}:publish"]["post"]
    name = _params(publish, "path")["name"]
    assert name["schema"] == {"type": "string", "pattern": "^shelves/[^/]+/books/[^/]+$"}
    assert "shelves/*/books/*" in name["description"]
    # Body "*" with `name` from the path: the body schema is the message less `name`.
    body = publish["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"publishTime", "note"}
    deep = _params(library["paths"]["/v1/books/{name}"]["get"], "path")["name"]
    assert deep["schema"]["pattern"] == "^.*$"


def test_custom_method_goes_to_the_extension(library: dict[str, Any]) -> None:
    [search] = library["x-portcullis-custom-methods"]
    assert search["method"] == "SEARCH" and search["path"] == "/v1/books:search"
    assert search["operation"]["operationId"] == "library.v1.LibraryService.SearchBooks"
    body = search["operation"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == _ref("library.v1.SearchBooksRequest")
    assert not any("search" in item for item in library["paths"].values())


def test_collapsed_paths_are_disambiguated(library: dict[str, Any]) -> None:
    """GetShelf keeps `/v1/{name}`; GetBook, whose template collapses to the same GET, takes its
    expanded path, whose shape CreateBook#1 already named."""
    paths = library["paths"]
    shapes = [re.sub(r"\{[^}]*\}", "{}", p) for p in paths]
    assert len(shapes) == len(set(shapes))  # OpenAPI: same shape with other names is the same path
    shelf = paths["/v1/{name}"]
    assert shelf["get"]["x-portcullis-binding"].endswith(".GetShelf")
    assert shelf["delete"]["x-portcullis-binding"].endswith(".DeleteShelf")
    # Same shape, free method: joins under the owner's name, described by its own field.
    update_shelf = _params(shelf["put"], "path")["name"]
    assert (
        "`shelf.name`" in update_shelf["description"]
        and update_shelf["schema"]["pattern"] == "^shelves/[^/]+$"
    )
    assert shelf["patch"]["x-portcullis-binding"].endswith(".UpdateBook")
    expanded = paths["/v1/shelves/{shelf_id}/books/{book_id}"]
    assert expanded["get"]["x-portcullis-binding"].endswith(".GetBook")
    assert expanded["delete"]["x-portcullis-binding"].endswith(".DeleteBook")
    segment = _params(expanded["get"], "path")["shelf_id"]
    assert "`name`" in segment["description"] and "shelves/*/books/*" in segment["description"]
    assert "x-portcullis-shadowed-operations" not in library


def test_query_parameters_cover_every_settable_leaf(library: dict[str, Any]) -> None:
    get = library["paths"]["/v1/{parent}/books"]["get"]
    query = _params(get, "query")
    assert set(query) == {
        "pageSize", "pageToken", "tags", "genre", "publishedAfter",
        "filter.author.name", "filter.author.email", "filter.minRating", "filter.minPageCount", "labels",
    }  # fmt: skip
    assert query["tags"]["style"] == "form" and query["tags"]["explode"] is True
    assert query["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert query["genre"]["schema"] == _ref("library.v1.Genre")
    assert query["publishedAfter"]["schema"] == {"type": "string", "format": "date-time"}
    assert query["filter.minPageCount"]["schema"] == {"type": "string", "format": "int64"}
    assert query["labels"]["style"] == "deepObject"
    assert query["labels"]["schema"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert "labels[key]=value" in query["labels"]["description"]


def test_body_field_binding(library: dict[str, Any]) -> None:
    post = library["paths"]["/v1/shelves"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == _ref("library.v1.Shelf")
    assert set(_params(post, "query")) == {"shelfId"}
    patch = library["paths"]["/v1/{name}"]["patch"]  # UpdateBook: body `book`, update_mask from the query
    assert patch["requestBody"]["content"]["application/json"]["schema"] == _ref("library.v1.Book")
    [mask] = _params(patch, "query").values()
    assert mask == {
        "name": "updateMask",
        "in": "query",
        "schema": {"type": "string", "example": "title,author.name"},
    }


def test_response_body_and_empty(library: dict[str, Any]) -> None:
    cover = library["paths"]["/v1/{name}/cover"]["get"]
    assert cover["responses"]["200"]["content"]["application/json"]["schema"] == _ref("library.v1.BookCover")
    delete = library["paths"]["/v1/{name}"]["delete"]
    assert delete["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "object"}
    assert set(_params(delete, "query")) == {"force"}


def test_preserve_proto_field_names_gets_its_own_schemas(echo_table: RouteTable) -> None:
    options = TranscodeOptions(preserve_proto_field_names=True, enums_as_ints=True)
    doc = build_openapi(compile_routes(from_modules([ECHO, LIBRARY]), options_for=lambda _name: options))
    validate(doc)
    response = _schema(doc, "echo.v1.EchoResponse-ProtoNames-EnumInts")["properties"]
    assert "received_at_unix_nanos" in response and "receivedAtUnixNanos" not in response
    assert _schema(doc, "library.v1.Genre-EnumInts") == {
        "type": "integer",
        "format": "int32",
        "enum": [0, 1, 2, 3, 4, 5],
    }
    query = _params(doc["paths"]["/v1/{parent}/books"]["get"], "query")
    assert "filter.min_rating" in query and "page_size" in query
    assert "echo.v1.EchoResponse" not in doc["components"]["schemas"]


def test_recursive_messages_and_odd_scalars() -> None:
    doc = build_openapi(_synthetic_table())
    node = _schema(doc, "t.v1.Node")["properties"]
    assert node["child"] == _ref("t.v1.Node")
    assert node["kids"] == {"type": "array", "items": _ref("t.v1.Node")}
    assert node["nodes"] == {"type": "object", "additionalProperties": _ref("t.v1.Node")}
    assert node["bigCount"] == {"type": "string", "format": "uint64"}
    assert node["small"] == {"type": "integer", "format": "int64", "minimum": 0}
    assert node["ratio"] == {"type": "number", "format": "float"}
    get = doc["paths"]["/v1/{id}"]["get"]
    query = set(_params(get, "query"))
    # A message recurs once along a name; repeated messages and message-valued maps are not settable.
    assert "child.id" in query and "child.bigCount" in query
    assert not any(q.startswith("child.child.") for q in query)
    assert not any(q.startswith(("kids", "nodes", "child.kids", "child.nodes")) for q in query)


def test_synthetic_edge_cases() -> None:
    doc = build_openapi(_synthetic_table())
    [shadowed] = doc["x-portcullis-shadowed-operations"]
    assert shadowed["method"] == "GET" and shadowed["path"] == "/v1/{child.id}"
    wild = _params(doc["paths"]["/v1/{wildcard}/nodes/{id}"]["get"], "path")
    assert set(wild) == {"wildcard", "id"}
    assert doc["paths"]["/v1/nodes"]["options"]["x-portcullis-binding"] == "t.v1.TreeService.Options"
    # `**` keeps its pattern when collapsed, and is one parameter when expanded (`/v2/{id}` took GET).
    deep = _params(doc["paths"]["/v3/{id}"]["get"], "path")["id"]
    assert deep["schema"] == {"type": "string", "pattern": "^nodes(/.*)?$"}
    expanded = doc["paths"]["/v2/nodes/{id_1}"]["get"]
    assert expanded["x-portcullis-binding"] == "t.v1.TreeService.Deep#1"
    assert "`nodes/**`" in _params(expanded, "path")["id_1"]["description"]
    upload = doc["paths"]["/v1/nodes:upload"]["post"]
    assert set(upload["responses"]) == {"501", "default"} and "Client-streaming" in upload["description"]


def test_comments_become_summaries_and_descriptions(echo_table: RouteTable) -> None:
    comments = {
        "echo.v1.EchoService": "The benchmark contract.",
        "echo.v1.EchoService.Echo": "Unary, JSON body.\nMapped onto the whole request.",
        "echo.v1.EchoRequest": "What to echo.",
        "echo.v1.EchoRequest.repeat": "How many times.",
        "echo.v1.Item.tags": "Free-form tags.",
    }
    doc = build_openapi(echo_table, comments=comments)
    validate(doc)
    assert doc["tags"] == [{"name": "echo.v1.EchoService", "description": "The benchmark contract."}]
    echo = doc["paths"]["/v1/echo"]["post"]
    assert echo["summary"] == "Unary, JSON body."
    assert echo["description"] == comments["echo.v1.EchoService.Echo"]
    request = _schema(doc, "echo.v1.EchoRequest")
    assert request["description"] == "What to echo."
    assert request["properties"]["repeat"]["description"] == "How many times."
    assert _schema(doc, "echo.v1.Item")["properties"]["tags"]["description"] == "Free-form tags."


def test_document_is_deterministic_and_independent(echo_table: RouteTable) -> None:
    first = build_openapi(echo_table)
    first["components"]["schemas"]["google.rpc.Status"]["properties"]["details"]["items"]["x"] = 1
    assert build_openapi(echo_table) != first  # no shared mutable state between documents
    assert build_openapi(echo_table) == build_openapi(echo_table)
