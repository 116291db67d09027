"""Route table compilation and matching: bindings, ranking, 404/405, and start-up failures."""

from __future__ import annotations

import pytest
from google.api import http_pb2

from translators.errors import GatewayError, MethodNotAllowed, NotFound
from translators.routes import RouteError, RouteTable, compile_routes


@pytest.mark.parametrize(
    ("method", "path", "route", "variables"),
    [
        ("POST", "/v1/echo", "echo.v1.EchoService.Echo", {}),
        ("GET", "/v1/items/7", "echo.v1.EchoService.GetItem", {"id": "7"}),
        ("GET", "/v1/items:stream", "echo.v1.EchoService.StreamItems", {}),
        ("GET", "/v1/shelves/1", "library.v1.LibraryService.GetShelf", {"name": "shelves/1"}),
        ("GET", "/v1/shelves/1/books/2", "library.v1.LibraryService.GetBook", {"name": "shelves/1/books/2"}),
        ("GET", "/v1/books/shelves/1/books/2", "library.v1.LibraryService.GetBook#1",
         {"name": "shelves/1/books/2"}),
        ("POST", "/v1/shelves/1/books/2:publish", "library.v1.LibraryService.PublishBook",
         {"name": "shelves/1/books/2"}),
        ("GET", "/v1/shelves/1/books/2/cover", "library.v1.LibraryService.GetBookCover",
         {"name": "shelves/1/books/2"}),
        ("SEARCH", "/v1/books:search", "library.v1.LibraryService.SearchBooks", {}),
        ("POST", "/v1/shelves/7/books/b", "library.v1.LibraryService.CreateBook#1",
         {"shelf_id": "7", "book_id": "b"}),
        ("HEAD", "/v1/items/7", "echo.v1.EchoService.GetItem", {"id": "7"}),
    ],
)
def test_match(table: RouteTable, method: str, path: str, route: str, variables: dict[str, str]) -> None:
    binding, got = table.match(method, path)
    assert binding.name == route
    assert got == variables


def test_unknown_route_is_404(table: RouteTable) -> None:
    with pytest.raises(NotFound):
        table.match("GET", "/v2/nothing")


def test_wrong_method_is_405_with_allow(table: RouteTable) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        table.match("PUT", "/v1/echo")
    assert info.value.headers["Allow"] == "POST"
    with pytest.raises(MethodNotAllowed) as info:
        table.match("PUT", "/v1/shelves/1/books/2")
    assert set(info.value.headers["Allow"].split(", ")) == {"GET", "PATCH", "DELETE", "POST"}


def test_literal_wins_over_variable(services: list) -> None:
    rule = http_pb2.HttpRule(get="/v1/items/special")
    table = compile_routes(services, extra_rules={"echo.v1.EchoService.StreamItems": rule})
    assert table.match("GET", "/v1/items/special")[0].name == "echo.v1.EchoService.StreamItems"
    assert table.match("GET", "/v1/items/other")[0].name == "echo.v1.EchoService.GetItem"


def _rule(**kw: str) -> http_pb2.HttpRule:
    return http_pb2.HttpRule(**kw)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_rule(get="/v1/{nope}"), "not a field"),
        (_rule(get="/v1/{labels}"), "singular scalar"),
        (_rule(get="/v1/{unclosed"), "unbalanced"),
        (_rule(post="/v1/x", body="nope"), "body 'nope'"),
        (_rule(get="/v1/x", body="*"), "may not have a body"),
        (_rule(post="/v1/x", response_body="nope"), "response_body"),
        (_rule(post="/v1/echo", body="*"), "already bound"),
        (http_pb2.HttpRule(), "no pattern"),
    ],
)
def test_bad_rules_fail_at_start_up_naming_the_method(services: list, rule: http_pb2.HttpRule,
                                                     message: str) -> None:
    with pytest.raises(RouteError, match=message) as info:
        compile_routes(services, extra_rules={"echo.v1.EchoService.Chat": rule})
    assert "echo.v1.EchoService.Chat" in str(info.value)


def test_rules_for_unknown_methods_are_refused(services: list) -> None:
    with pytest.raises(RouteError, match="unknown methods"):
        compile_routes(services, extra_rules={"echo.v1.EchoService.Nope": _rule(get="/x")})


def test_describe_lists_every_binding(table: RouteTable) -> None:
    rows = table.describe()
    assert len(rows) == len(table.bindings)
    assert {"name", "http_method", "path", "grpc_method"} <= rows[0].keys()


def test_websocket_matching(table: RouteTable) -> None:
    assert table.match_websocket("/v1/items:stream")[0].name == "echo.v1.EchoService.StreamItems"
    chat, variables = table.match_websocket("/ws/echo.v1.EchoService/Chat")  # no HTTP binding
    assert chat.rpc_path == "/echo.v1.EchoService/Chat" and variables == {}
    with pytest.raises(GatewayError) as unary:
        table.match_websocket("/v1/echo")
    assert unary.value.code.name == "UNIMPLEMENTED"
    with pytest.raises(NotFound):
        table.match_websocket("/ws/echo.v1.EchoService/Echo")  # unary methods get no /ws path
    assert "/ws/echo.v1.EchoService/Chat" not in {b.template.source for b in table.bindings}


def test_rpc_path_matching(table: RouteTable) -> None:
    assert table.match_rpc("/echo.v1.EchoService/Echo").name == "echo.v1.EchoService.Echo"
    assert table.match_rpc("/library.v1.LibraryService/GetBook").name == "library.v1.LibraryService.GetBook"
    assert table.match_rpc("/echo.v1.EchoService/Chat").client_streaming
    with pytest.raises(GatewayError):
        table.match_rpc("/echo.v1.EchoService/Nope")
    assert {b.name for b in table.all_bindings()} >= {"echo.v1.EchoService.Chat", "echo.v1.EchoService.Echo"}


def _scan(table: RouteTable, method: str, raw_path: str) -> str | None:
    """The binding `match` must pick, found the slow way: every candidate template in rank order."""
    candidates = table._by_method.get(method) or (table._by_method.get("GET") if method == "HEAD" else None)
    for binding in candidates or ():
        if binding.template.match(raw_path) is not None:
            return binding.name
    return None


@pytest.mark.parametrize(
    "path",
    ["/v1/echo", "/v1/echo/", "/v1/%65cho", "/v1/items", "/v1/items:stream", "/v1/shelves", "/v1/books:search",
     "/v1/shelves/1", "/v1//echo", "/v1", "/"],
)
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "SEARCH", "PATCH"])
def test_exact_literal_paths_pick_what_the_ranked_scan_picks(table: RouteTable, method: str, path: str) -> None:
    # All-literal templates are found by their exact path first; the answer must be the scan's.
    expected = _scan(table, method, path)
    if expected is None:
        with pytest.raises(GatewayError):
            table.match(method, path)
        return
    binding, variables = table.match(method, path)
    assert binding.name == expected
    assert variables == {} or binding.template.variables
    assert table._exact  # the echo and library tables have literal-only templates


def test_exact_literal_lookup_returns_a_fresh_variables_dict(table: RouteTable) -> None:
    _, first = table.match("POST", "/v1/echo")
    first["x"] = "y"
    assert table.match("POST", "/v1/echo")[1] == {}
