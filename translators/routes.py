"""The compiled route table: every `google.api.http` binding of every served method, built once.

`compile_routes` turns `ServiceInfo`s (and optional extra rules from config, like grpc-gateway's
`grpc_api_configuration`) into immutable `Binding`s with their request and response plans resolved.
Any bad template, unknown field or duplicate route fails here, at start-up, naming the method and
where its descriptor came from. `RouteTable.match` then finds the binding for a request: templates
are tried per HTTP method in rank order (a literal segment before a variable, `*` before `**`), so
the most specific template wins; a path that matches under another method is a 405 with `Allow`.

WebSocket upgrades (`match_websocket`) reach every streaming method: on the path of any of its
HTTP bindings, whatever their HTTP method, and, for a streaming method without an HTTP binding, on
`/ws/{package.Service}/{Method}` (those bindings are kept apart, in `ws_paths`: they are no HTTP
routes and stay out of `/routes` and OpenAPI). gRPC-Web requests name their method by its gRPC
path (`match_rpc`), annotated or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.api import http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from grpc import StatusCode

from translators.descriptors import ServiceInfo
from translators.errors import GatewayError, MethodNotAllowed, NotFound
from translators.http_rule import LITERAL, PathTemplate, TemplateError, parse_template
from translators.options import DEFAULT_OPTIONS, TranscodeOptions
from translators.request import PlanError, RequestPlan, make_plan
from translators.response import ResponsePlan

_PATTERNS = ("get", "put", "post", "delete", "patch")


class RouteError(ValueError):
    """A binding that cannot be compiled; raised at start-up."""


@dataclass(frozen=True, slots=True)
class Binding:
    name: str  # "pkg.Service.Method", with "#N" for the N-th additional binding
    service: str  # "pkg.Service"
    rpc_path: str  # "/pkg.Service/Method", the gRPC path
    http_method: str
    template: PathTemplate
    method: MethodDescriptor
    request: RequestPlan
    response: ResponsePlan
    response_class: type[Message]
    source: str
    # From `method`, read once here: the lean server and the handlers test them per request.
    client_streaming: bool = field(init=False)
    server_streaming: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "client_streaming", bool(self.method.client_streaming))
        object.__setattr__(self, "server_streaming", bool(self.method.server_streaming))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "http_method": self.http_method,
            "path": self.template.source,
            "grpc_method": self.rpc_path,
            "body": self.request.body or None,
            "response_body": self.response.response_field.name if self.response.response_field else None,
            "client_streaming": self.client_streaming,
            "server_streaming": self.server_streaming,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class RouteTable:
    bindings: tuple[Binding, ...]
    _by_method: dict[str, tuple[Binding, ...]] = field(repr=False)
    ws_paths: Mapping[str, Binding] = field(default_factory=dict)  # "/ws/pkg.Service/Method" -> binding
    rpc_paths: Mapping[str, Binding] = field(default_factory=dict)  # "/pkg.Service/Method" -> a binding
    # Per method, the templates made only of literals (no variable, no verb) by their exact path: such
    # a template ranks before every other one that matches the same path, so when the request's path
    # is exactly it, it is the answer without trying the templates one by one.
    _exact: dict[str, dict[str, Binding]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        exact: dict[str, dict[str, Binding]] = {}
        for method, group in self._by_method.items():
            for binding in group:  # in rank order: the first of identical templates wins, as in `match`
                template = binding.template
                if template.verb or not template.segments or any(kind != LITERAL for kind, _ in template.segments):
                    continue
                path = "/" + "/".join(text for _, text in template.segments)
                exact.setdefault(method, {}).setdefault(path, binding)
        object.__setattr__(self, "_exact", exact)

    def match(self, http_method: str, raw_path: str) -> tuple[Binding, dict[str, str]]:
        """The binding and its decoded path variables; `NotFound` or `MethodNotAllowed` otherwise."""
        candidates = self._by_method.get(http_method)
        method = http_method
        if candidates is None and http_method == "HEAD":
            candidates = self._by_method.get("GET")
            method = "GET"
        exact = self._exact.get(method)
        if exact is not None:
            found = exact.get(raw_path)
            if found is not None:
                return found, {}
        for binding in candidates or ():
            variables = binding.template.match(raw_path)
            if variables is not None:
                return binding, variables
        allowed = [
            method
            for method, group in self._by_method.items()
            if method != http_method and any(b.template.match(raw_path) is not None for b in group)
        ]
        if allowed:
            raise MethodNotAllowed(http_method, allowed)
        raise NotFound(f"no route for {http_method} {raw_path.split('?', 1)[0]}")

    def match_websocket(self, raw_path: str) -> tuple[Binding, dict[str, str]]:
        """The streaming method a WebSocket upgrade on `raw_path` opens, and its path variables."""
        found = self.ws_paths.get(raw_path)
        if found is not None:
            return found, {}
        unary = None
        for group in self._by_method.values():
            for binding in group:
                variables = binding.template.match(raw_path)
                if variables is None:
                    continue
                if binding.client_streaming or binding.server_streaming:
                    return binding, variables
                unary = binding
        if unary is not None:
            raise GatewayError(
                StatusCode.UNIMPLEMENTED, f"{unary.rpc_path} is a unary method: call it over HTTP, not WebSocket"
            )
        raise NotFound(f"no streaming method on {raw_path.split('?', 1)[0]}")

    def match_rpc(self, rpc_path: str) -> Binding:
        """The method a gRPC path names (gRPC-Web requests), whether or not it has an HTTP binding."""
        found = self.rpc_paths.get(rpc_path)
        if found is None:
            raise GatewayError(StatusCode.UNIMPLEMENTED, f"unknown method {rpc_path}")
        return found

    def all_bindings(self) -> tuple[Binding, ...]:
        """Every binding that needs route settings: HTTP, WebSocket-only and gRPC-path-only ones."""
        seen = {b.name for b in self.bindings}
        extra = [b for b in (*self.ws_paths.values(), *self.rpc_paths.values()) if b.name not in seen]
        return (*self.bindings, *{b.name: b for b in extra}.values())

    def describe(self) -> list[dict[str, Any]]:
        return [b.describe() for b in self.bindings]


def compile_routes(
    services: Iterable[ServiceInfo],
    options_for: Callable[[str], TranscodeOptions] = lambda _name: DEFAULT_OPTIONS,
    extra_rules: Mapping[str, http_pb2.HttpRule] | None = None,
) -> RouteTable:
    """Compile every annotated method; `options_for` gets "pkg.Service.Method"."""
    extra = dict(extra_rules or {})
    bindings: list[Binding] = []
    ws_paths: dict[str, Binding] = {}
    rpc_paths: dict[str, Binding] = {}
    seen: dict[tuple[str, str], str] = {}
    for info in services:
        for method in info.descriptor.methods:
            full = f"{info.name}.{method.name}"
            rule = extra.pop(full, None) or info.rules.get(method.name)
            if rule is None:
                # No HTTP binding: reachable over WebSocket (streaming) and gRPC-Web only.
                streaming = method.client_streaming or method.server_streaming
                kind, path = ("WEBSOCKET", f"/ws/{info.name}/{method.name}") if streaming else (
                    "GRPC", f"/{info.name}/{method.name}")
                plain = http_pb2.HttpRule(body="*")
                plain.custom.kind, plain.custom.path = kind, path
                only = _compile_one(full, info, method, plain, options_for(full))
                if streaming:
                    ws_paths[only.template.source] = only
                rpc_paths.setdefault(only.rpc_path, only)
                continue
            options = options_for(full)
            rules = [rule, *rule.additional_bindings]
            for index, one in enumerate(rules):
                if index and one.additional_bindings:
                    raise RouteError(f"{full} ({info.source}): additional_bindings may not nest")
                name = full if index == 0 else f"{full}#{index}"
                binding = _compile_one(name, info, method, one, options)
                key = (binding.http_method, binding.template.source)
                if key in seen:
                    raise RouteError(
                        f"{name} ({info.source}): {key[0]} {key[1]} is already bound to {seen[key]}"
                    )
                seen[key] = name
                bindings.append(binding)
                rpc_paths.setdefault(binding.rpc_path, binding)
    if extra:
        raise RouteError(f"http rules for unknown methods: {', '.join(sorted(extra))}")
    by_method: dict[str, list[Binding]] = {}
    for b in bindings:
        by_method.setdefault(b.http_method, []).append(b)
    ordered = {m: tuple(sorted(group, key=lambda b: b.template.rank)) for m, group in by_method.items()}
    return RouteTable(tuple(bindings), ordered, ws_paths, rpc_paths)


def _compile_one(
    name: str, info: ServiceInfo, method: MethodDescriptor, rule: http_pb2.HttpRule, options: TranscodeOptions
) -> Binding:
    where = f"{name} ({info.source})"
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError(f"{where}: http rule has no pattern")
    if kind == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    else:
        http_method, path = kind.upper(), getattr(rule, kind)
    try:
        template = parse_template(path)
    except TemplateError as exc:
        raise RouteError(f"{where}: {exc}") from None
    if rule.body and http_method in ("GET", "DELETE") and kind != "custom":
        # http.proto: GET and DELETE have no request body; grpc-gateway refuses such rules too.
        raise RouteError(f"{where}: {http_method} {path} may not have a body")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    variables = [".".join(v.field_path) for v in template.variables]
    try:
        request_plan = make_plan(request_class, variables, rule.body, options)
    except PlanError as exc:
        raise RouteError(f"{where}: {exc}") from None
    response_field = None
    if rule.response_body:
        response_field = method.output_type.fields_by_name.get(rule.response_body)
        if response_field is None:
            raise RouteError(
                f"{where}: response_body {rule.response_body!r} is not a field of {method.output_type.full_name}"
            )
    return Binding(
        name=name,
        service=info.name,
        rpc_path=f"/{info.name}/{method.name}",
        http_method=http_method,
        template=template,
        method=method,
        request=request_plan,
        response=ResponsePlan(response_field, options),
        response_class=response_class,
        source=info.source,
    )
