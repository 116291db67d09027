"""REST/JSON through a real gateway to real gRPC backends: mapping, metadata and every error path."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from .conftest import Backends, Gateway, StartGateway, demo_config


async def test_echo_post(gw: Gateway) -> None:
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "hi", "repeat": 2, "labels": {"k": "v"}}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("application/json")
        body = await r.json()
    assert body["message"] == "hihi" and body["labels"] == {"k": "v"}
    assert isinstance(body["receivedAtUnixNanos"], str)  # int64 as a string
    assert r.headers["X-Request-Id"]


async def test_get_item_with_path_and_query(gw: Gateway) -> None:
    async with gw.http.get(f"{gw.url}/v1/items/a%2Fb", params={"verbose": "true"}) as r:
        assert r.status == 200
        assert await r.json() == {"id": "a/b", "name": "item a/b", "price": 9.99, "tags": ["a", "b"]}


async def test_library_crud_and_mapping(gw: Gateway) -> None:
    url = gw.url
    async with gw.http.post(f"{url}/v1/shelves", json={"theme": "Maps"}) as r:
        assert r.status == 200, await r.text()
        shelf = await r.json()
    name = shelf["name"]
    book = {"title": "Atlas", "genre": "NONFICTION", "pageCount": "300", "tags": ["geo"],
            "publishedAt": "2020-02-03T04:05:06Z", "print": {"isbn": "978-0", "hardcover": True}}
    async with gw.http.post(f"{url}/v1/{name}/books", json=book) as r:
        assert r.status == 200, await r.text()
        created = await r.json()
    assert created["genre"] == "NONFICTION" and created["pageCount"] == "300"
    book_name = created["name"]
    async with gw.http.patch(f"{url}/v1/{book_name}", params={"update_mask": "title"},
                             json={"title": "Atlas 2"}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["title"] == "Atlas 2"
    async with gw.http.get(f"{url}/v1/{name}/books", params=[("tags", "geo"), ("genre", "NONFICTION")]) as r:
        assert r.status == 200
        assert [b["name"] for b in (await r.json())["books"]] == [book_name]
    async with gw.http.get(f"{url}/v1/books/{book_name}") as r:  # additional binding, {name=**}
        assert r.status == 200 and (await r.json())["name"] == book_name
    async with gw.http.post(f"{url}/v1/{book_name}:publish", json={"note": "go"}) as r:  # custom verb
        assert r.status == 200, await r.text()
    async with gw.http.delete(f"{url}/v1/{book_name}") as r:
        assert r.status == 200 and await r.json() == {}
    async with gw.http.get(f"{url}/v1/{book_name}") as r:
        assert r.status == 404
        assert (await r.json())["code"] == 5


async def test_response_body_and_custom_method(gw: Gateway) -> None:
    async with gw.http.get(f"{gw.url}/v1/shelves/1/books") as r:
        first = (await r.json())["books"][0]["name"]
    async with gw.http.put(f"{gw.url}/v1/{first}/cover", json={"image": "iVBO", "mimeType": "image/png"}) as r:
        assert r.status == 200, await r.text()
    async with gw.http.get(f"{gw.url}/v1/{first}/cover") as r:
        assert r.status == 200
        assert await r.json() == {"image": "iVBO", "mimeType": "image/png"}  # the cover field only
    async with gw.http.request("SEARCH", f"{gw.url}/v1/books:search", json={}) as r:
        assert r.status == 200, await r.text()


async def test_backend_error_details(gw: Gateway) -> None:
    async with gw.http.post(f"{gw.url}/v1/shelves/1/books", json={"title": ""}) as r:
        assert r.status == 400
        doc = await r.json()
    assert doc["code"] == 3
    assert doc["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    async with gw.http.post(f"{gw.url}/v1/shelves", json={"name": "shelves/1", "theme": "x"}) as r:
        assert r.status in (200, 409)


@pytest.mark.parametrize(
    ("code", "status"),
    [("CANCELLED", 499), ("INVALID_ARGUMENT", 400), ("DEADLINE_EXCEEDED", 504), ("NOT_FOUND", 404),
     ("ALREADY_EXISTS", 409), ("PERMISSION_DENIED", 403), ("RESOURCE_EXHAUSTED", 429),
     ("FAILED_PRECONDITION", 400), ("ABORTED", 409), ("OUT_OF_RANGE", 400), ("UNIMPLEMENTED", 501),
     ("INTERNAL", 500), ("UNAVAILABLE", 503), ("DATA_LOSS", 500), ("UNAUTHENTICATED", 401), ("UNKNOWN", 500)],
)
async def test_every_backend_code_maps(gw: Gateway, code: str, status: int) -> None:
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": f"__error__:{code}"}) as r:
        assert r.status == status
        doc = await r.json()
        assert set(doc) == {"code", "message", "details"}
        assert ("WWW-Authenticate" in r.headers) == (code == "UNAUTHENTICATED")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/nowhere", {}, 404),
        ("PUT", "/v1/echo", {}, 405),
        ("POST", "/v1/echo", {"data": b"{bad json", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "/v1/echo", {"json": {"repeat": "lots"}}, 400),
        ("POST", "/v1/echo", {"json": {"message": "x", "unknown": 1}}, 400),
        ("POST", "/v1/echo", {"data": b"<xml/>", "headers": {"Content-Type": "application/xml"}}, 415),
        ("POST", "/v1/echo", {"data": b"{" + b" " * (5 * 1024 * 1024) + b"}",
                              "headers": {"Content-Type": "application/json"}}, 413),
        ("GET", "/v1/items/a?unknown=1", {}, 400),
        ("GET", "/v1/items/a?verbose=perhaps", {}, 400),
        ("GET", "/v1/items/a", {"headers": {"Grpc-Timeout": "soon"}}, 400),
    ],
)
async def test_gateway_errors_share_the_status_shape(gw: Gateway, method: str, path: str, kwargs: dict,
                                                     status: int) -> None:
    async with gw.http.request(method, gw.url + path, **kwargs) as r:
        assert r.status == status
        doc = await r.json()
        assert set(doc) == {"code", "message", "details"} and doc["message"]
        assert r.headers["X-Request-Id"]
        if status == 405:
            assert r.headers["Allow"] == "POST"


async def test_headers_forwarded_as_metadata(demo_backends: Backends, start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_config(demo_backends, metadata={"forward_headers": ["x-tenant"]}))
    headers = {"Authorization": "Bearer abc", "Grpc-Metadata-Color": "blue", "X-Tenant": "t1",
               "X-Secret": "no", "X-Request-Id": "req-1", "Grpc-Metadata-Data-Bin": "AAEC"}
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "__metadata__"}, headers=headers) as r:
        assert r.status == 200
        labels = (await r.json())["labels"]
        assert r.headers["X-Request-Id"] == "req-1"
    assert labels["authorization"] == "Bearer abc"
    assert labels["grpcgateway-authorization"] == "Bearer abc"
    assert labels["color"] == "blue"
    assert labels["x-tenant"] == "t1"
    assert labels["x-request-id"] == "req-1"
    assert labels["x-forwarded-for"] == "127.0.0.1"
    assert labels["x-forwarded-host"].startswith("127.0.0.1:")
    assert labels["data-bin"] == "AAEC"
    assert "x-secret" not in labels and "connection" not in labels


async def test_response_metadata_becomes_headers(gw: Gateway) -> None:
    async with gw.http.get(f"{gw.url}/v1/items/1", headers={"Grpc-Metadata-X-Echo-Metadata": "v1"}) as r:
        assert r.status == 200
        assert r.headers["Grpc-Metadata-x-echo-header"] == "v1"
        assert r.headers["Grpc-Trailer-x-echo-trailer"] == "v1"


async def test_route_timeout_and_grpc_timeout(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends)
    raw["services"]["echo.v1.EchoService"]["methods"] = {"Echo": {"timeout_ms": 200}}
    gw = await start_gateway(raw)
    started = time.monotonic()
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "__sleep__:2000"}) as r:
        assert r.status == 504
    assert time.monotonic() - started < 1.5
    async with gw.http.get(f"{gw.url}/v1/items/__sleep__:500", headers={"Grpc-Timeout": "100m"}) as r:
        assert r.status == 504


async def test_dead_backend_is_503_fast(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends)
    raw["backends"]["echo"] = {"addresses": ["127.0.0.1:1"], "health": {"interval_s": 0.2}}
    gw = await start_gateway(raw)
    started = time.monotonic()
    async with gw.http.post(f"{gw.url}/v1/echo", json={"message": "x"}) as r:
        assert r.status == 503
        assert (await r.json())["code"] == 14
    assert time.monotonic() - started < 3.5
    async with gw.http.get(f"{gw.admin}/readyz") as r:
        assert r.status == 503


async def test_server_stream_ndjson(gw: Gateway) -> None:
    async with gw.http.get(f"{gw.url}/v1/items:stream", params={"count": "3", "prefix": "p"}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert [line["result"]["id"] for line in lines] == ["p0", "p1", "p2"]


async def test_server_stream_error_mid_stream(gw: Gateway) -> None:
    async with gw.http.get(f"{gw.url}/v1/items:stream",
                           params={"count": "2", "prefix": "__error__:ABORTED"}) as r:
        assert r.status == 200
        lines = [json.loads(line) for line in (await r.text()).splitlines()]
    assert len(lines) == 3 and "result" in lines[0]
    assert lines[-1]["error"]["code"] == 10


async def test_admin_endpoints(gw: Gateway) -> None:
    async with gw.http.get(f"{gw.admin}/healthz") as r:
        assert r.status == 200
    for _ in range(50):
        async with gw.http.get(f"{gw.admin}/readyz") as r:
            if r.status == 200:
                break
        await asyncio.sleep(0.1)
    assert r.status == 200
    async with gw.http.get(f"{gw.admin}/routes") as r:
        routes = await r.json()
    assert {"POST /v1/echo", "GET /v1/{name=shelves/*/books/*}"} <= {f"{x['http_method']} {x['path']}" for x in routes}


async def test_concurrent_requests_lose_nothing(gw: Gateway) -> None:
    async def one(i: int) -> str:
        async with gw.http.post(f"{gw.url}/v1/echo", json={"message": str(i)}) as r:
            assert r.status == 200
            return (await r.json())["message"]

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert results == [str(i) for i in range(200)]


async def test_openapi_document_is_served_and_valid(gw: Gateway) -> None:
    from openapi_spec_validator import validate

    for base in (gw.url, gw.admin):
        async with gw.http.get(f"{base}/openapi.json") as r:
            assert r.status == 200
            doc = await r.json()
        validate(doc)
        assert "/v1/echo" in doc["paths"] and "post" in doc["paths"]["/v1/echo"]


async def test_print_options_per_method(demo_backends: Backends, start_gateway: StartGateway) -> None:
    raw = demo_config(demo_backends)
    raw["services"]["library.v1.LibraryService"]["methods"] = {
        "GetShelf": {"transcoding": {"preserve_proto_field_names": True, "always_print_primitive_fields": True}},
        "GetBook": {"transcoding": {"enums_as_ints": True}},
    }
    gw = await start_gateway(raw)
    async with gw.http.get(f"{gw.url}/v1/shelves/1") as r:
        shelf = await r.json()
    assert "book_count" in shelf and "bookCount" not in shelf
    async with gw.http.get(f"{gw.url}/v1/shelves/1/books/1") as r:
        book = await r.json()
    assert isinstance(book["genre"], int)
    async with gw.http.get(f"{gw.url}/v1/books/shelves/1/books/1") as r:  # same method, other binding
        assert isinstance((await r.json())["genre"], int)
    async with gw.http.get(f"{gw.url}/v1/shelves") as r:  # untouched methods keep the defaults
        assert "bookCount" in (await r.json())["shelves"][0]


async def test_expect_100_continue_still_goes_through_aiohttp(gw: Gateway) -> None:
    # The public server calls the edge directly, except for what aiohttp must handle itself: an
    # `Expect: 100-continue` request gets its interim 100 and then the same answer as any other.
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.serving.public_port)
    body = b'{"message":"hi"}'
    writer.write(
        b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    await writer.drain()
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(body)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    assert json.loads(await reader.readexactly(length))["message"] == "hi"
    writer.close()


async def test_openapi_on_the_public_port_is_routed_by_method(gw: Gateway) -> None:
    # /openapi.json is the public app's own route (GET/HEAD); other methods reach the edge's table.
    async with gw.http.head(f"{gw.url}/openapi.json") as r:
        assert r.status == 200
    async with gw.http.post(f"{gw.url}/openapi.json") as r:
        assert r.status == 404
        assert (await r.json())["code"] == 5
