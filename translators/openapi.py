"""The OpenAPI 3.0.3 document of a compiled `RouteTable`, generated from its `google.api.http` bindings.

This owns the description of the REST surface, written as grpc-gateway's protoc-gen-openapiv2 would but
in OpenAPI 3. It reads the frozen `Binding`s the request path matches, so it cannot drift from the routes
served; it is built on demand (`GET /openapi.json`, `portcullis openapi`), never per proxied request.
Schemas follow the proto3 JSON mapping of `json_format`: lowerCamelCase names unless a binding preserves
proto names, 64-bit integers as strings, enums by name (by number under `enums_as_ints`), well-known types
in their JSON forms. They are keyed by full proto name, with a suffix under non-default print options
(`pkg.Msg-ProtoNames`, `-EnumInts`). Every operation carries `x-portcullis-binding`, the name `/routes` shows.

What a path item cannot hold:
* A custom HTTP method (`custom: {kind: "SEARCH"}`): OpenAPI 3.0 path items have only the eight standard
  methods, so these go to the root extension `x-portcullis-custom-methods`, a list of
  `{method, path, operation}`.
* Two templates of one shape. `{name=shelves/*}` and `{name=shelves/*/books/*}` both collapse to
  `/v1/{name}` (the pattern goes to the parameter, as grpc-gateway does), and OpenAPI treats paths that
  differ only in parameter names as one. The first binding in table order fixes a shape's path and its
  parameter names; a later binding with a free method joins that path item under those names (its
  parameter descriptions name its own fields). When the method is taken, the binding uses its *expanded*
  path, one parameter per wildcard (`/v1/shelves/{name_1}/books/{name_2}`), by the same rule. If that is
  taken too (two templates matching the same URLs), it goes to `x-portcullis-shadowed-operations`.
Map query parameters (`labels[key]=value`) are OpenAPI's `deepObject` style. Fields a query string cannot
set (message-valued maps, repeated messages, `Struct`, `ListValue`, `Any`, `Empty`) are left out.
This module lays out paths, operations and parameters; the schemas they point to are `openapi_schemas`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# What a path or query string can set is `translators.request`'s rule; share it, do not restate it.
from translators.fields import STRING_WKT, WRAPPERS, is_map, is_repeated
from translators.http_rule import DEEP, Variable
from translators.openapi_schemas import _STATUS, _STATUS_SCHEMA, _WKT, _described, _ref, _Schemas
from translators.request import FieldChain
from translators.routes import Binding, RouteTable

OPENAPI_VERSION = "3.0.3"
_STANDARD_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})
# Query parameters stop this many fields deep, and a message recurs at most once along one name
# (`child.id`, not `child.child.id`), so a recursive message yields a short, finite list.
MAX_QUERY_DEPTH = 5
_MAX_VISITS = 2
_F = FieldDescriptor


def build_openapi(
    table: RouteTable,
    *,
    title: str = "Portcullis",
    version: str = "1.0.0",
    comments: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The OpenAPI document of every binding in `table`, as a JSON-ready dict.

    `comments` maps full proto names (`pkg.Service`, `pkg.Service.Method`, `pkg.Message`,
    `pkg.Message.field`, `pkg.Enum`) to their leading comments; neither the generated stubs nor a
    descriptor pool keeps `SourceCodeInfo`, so without it the document has no prose.
    """
    notes = dict(comments or {})
    components: dict[str, Any] = {_STATUS: copy.deepcopy(_STATUS_SCHEMA)}
    paths: dict[str, dict[str, Any]] = {}
    shape_owner: dict[str, str] = {}  # path with parameter names blanked -> the path key that holds it
    custom: list[dict[str, Any]] = []
    shadowed: list[dict[str, Any]] = []
    op_ids: set[str] = set()
    for binding in table.bindings:
        schemas = _Schemas(components, binding, notes)
        op_id = _unique(binding.name.replace("#", "_"), op_ids)
        method = binding.http_method.lower()
        if binding.http_method not in _STANDARD_METHODS:
            path, slots = _render_path(binding, expand=False)
            operation = _operation(binding, op_id, slots, schemas, notes)
            custom.append({"method": binding.http_method, "path": path, "operation": operation})
            continue
        for expand in (False, True):
            path, slots = _render_path(binding, expand)
            owner = shape_owner.setdefault(re.sub(r"\{[^}]*\}", "{}", path), path)
            if method in paths.get(owner, {}):
                continue
            # Same shape, same URLs: take the owner's parameter names; the descriptions name the fields.
            names = re.findall(r"\{([^}]*)\}", owner)
            slots = [slot._replace(name=name) for slot, name in zip(slots, names, strict=True)]
            paths.setdefault(owner, {})[method] = _operation(binding, op_id, slots, schemas, notes)
            break
        else:
            operation = _operation(binding, op_id, slots, schemas, notes)
            shadowed.append({"method": binding.http_method, "path": path, "operation": operation})
    services = dict.fromkeys(b.service for b in table.bindings)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version},
        "tags": [_described({"name": s}, notes.get(s)) for s in services],
        "paths": paths,
        "components": {"schemas": dict(sorted(components.items()))},
    }
    if custom:
        doc["x-portcullis-custom-methods"] = custom
    if shadowed:
        doc["x-portcullis-shadowed-operations"] = shadowed
    return doc


class _Slot(NamedTuple):
    """One `{parameter}` of an OpenAPI path and what it stands for in the template."""

    name: str
    field: str | None  # dotted field path, None for a bare `*` outside any variable
    pattern: str  # the template text it matches: "*", "**", "shelves/*/books/*"
    whole: bool  # True when it carries the whole variable, False for one piece of an expanded one


def _render_path(binding: Binding, expand: bool) -> tuple[str, list[_Slot]]:
    template = binding.template
    taken = {".".join(v.field_path) for v in template.variables}
    last = len(template.segments)
    spans = {i: v for v in template.variables for i in range(v.start, last if v.end == -1 else v.end)}
    parts: list[str] = []
    slots: list[_Slot] = []
    for i, (kind, text) in enumerate(template.segments):
        var = spans.get(i)
        dotted = ".".join(var.field_path) if var else ""
        if var is not None and (not expand or not var.multi_segment):
            if i == var.start:
                slots.append(_Slot(dotted, dotted, _pattern(binding, var), True))
                parts.append("{" + dotted + "}")
        elif text:
            parts.append(text)
        elif var is not None:  # one wildcard of an expanded variable
            n = 1 + sum(slot.field == dotted for slot in slots)
            slots.append(_Slot(_unique(f"{dotted}_{n}", taken), dotted, _pattern(binding, var), False))
            parts.append("{" + slots[-1].name + "}")
        else:  # a bare `*` or `**`: bound to no field, but still a path parameter in OpenAPI
            slots.append(_Slot(_unique("wildcard", taken), None, "**" if kind == DEEP else "*", True))
            parts.append("{" + slots[-1].name + "}")
    return "/" + "/".join(parts) + (":" + template.verb if template.verb else ""), slots


def _pattern(binding: Binding, var: Variable) -> str:
    """The variable's template text, e.g. `shelves/*/books/*`."""
    span = binding.template.segments[var.start : None if var.end == -1 else var.end]
    return "/".join(text or ("**" if kind == DEEP else "*") for kind, text in span)


def _operation(
    binding: Binding, op_id: str, slots: list[_Slot], schemas: _Schemas, notes: Mapping[str, str]
) -> dict[str, Any]:
    method_name = binding.name.split("#", 1)[0]
    operation: dict[str, Any] = {"operationId": op_id, "tags": [binding.service]}
    comment = notes.get(method_name, "").strip()
    if comment:
        operation["summary"] = comment.split("\n", 1)[0].strip()
        if "\n" in comment:
            operation["description"] = comment
    parameters = [_path_parameter(binding, slot, schemas) for slot in slots]
    parameters += _query_parameters(binding, schemas)
    if parameters:
        operation["parameters"] = parameters
    error = {"description": "An error.", "content": {"application/json": {"schema": _ref(_STATUS)}}}
    if binding.client_streaming:
        # Plain HTTP has no request stream: the REST handler answers UNIMPLEMENTED (501).
        note = "Client-streaming: not served over plain HTTP; the gateway answers 501 UNIMPLEMENTED."
        operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
        operation["responses"] = {"501": error, "default": error}
    else:
        body = _request_body(binding, schemas)
        if body is not None:
            operation["requestBody"] = body
        operation["responses"] = {"200": _success(binding, schemas), "default": error}
    operation["x-portcullis-binding"] = binding.name
    operation["x-portcullis-grpc-method"] = binding.rpc_path
    return operation


def _path_parameter(binding: Binding, slot: _Slot, schemas: _Schemas) -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": slot.name, "in": "path", "required": True}
    if slot.field is None:
        parameter["schema"] = {"type": "string"}
        parameter["description"] = f"What a bare `{slot.pattern}` of the template matches; not sent upstream."
    elif not slot.whole:
        parameter["schema"] = {"type": "string"}
        parameter["description"] = (
            f"One wildcard of `{slot.field}` (`{slot.pattern}`); the field gets all it spans, literals too."
        )
    elif slot.pattern == "*":
        parameter["schema"] = schemas.field(binding.request.path_fields[slot.field][-1])
        if slot.name != slot.field:
            parameter["description"] = f"The value of `{slot.field}`."
    else:
        parameter["schema"] = {"type": "string", "pattern": _regex(slot.pattern)}
        parameter["description"] = (
            f"The value of `{slot.field}`, matching `{slot.pattern}`; its slashes are sent unencoded."
        )
    return parameter


def _query_parameters(binding: Binding, schemas: _Schemas) -> list[dict[str, Any]]:
    plan = binding.request
    if plan.body == "*":  # every field not in the path comes from the body
        return []
    bound = {tuple(f.name for f in chain) for chain in plan.path_fields.values()}
    out: list[dict[str, Any]] = []

    def walk(desc: Descriptor, chain: FieldChain, seen: tuple[str, ...]) -> None:
        for field in desc.fields:
            here = (*chain, field)
            if tuple(f.name for f in here) in bound or field is plan.body_field:
                continue
            name = ".".join(schemas.name(f) for f in here)
            parameter: dict[str, Any] = {"name": name, "in": "query"}
            if is_map(field):
                value = field.message_type.fields_by_name["value"]
                if not _from_string(value):
                    continue
                parameter.update(style="deepObject", explode=True, schema=schemas.field(field))
                parameter["description"] = f"Map entries, one `{name}[key]=value` each."
            elif _from_string(field):
                parameter["schema"] = schemas.field(field)
                if is_repeated(field):
                    parameter.update(style="form", explode=True)
            else:  # a message the query cannot set whole; its fields may be
                nested = field.message_type
                deeper = (
                    not is_repeated(field) and nested.full_name not in _WKT and len(here) < MAX_QUERY_DEPTH
                )
                if deeper and seen.count(nested.full_name) < _MAX_VISITS:
                    walk(nested, here, (*seen, nested.full_name))
                continue
            out.append(_described(parameter, schemas.notes.get(field.full_name)))

    walk(plan.message_class.DESCRIPTOR, (), (plan.message_class.DESCRIPTOR.full_name,))
    return out


def _request_body(binding: Binding, schemas: _Schemas) -> dict[str, Any] | None:
    plan = binding.request
    if plan.body_field is not None:
        schema = schemas.field(plan.body_field)
    elif plan.body == "*":
        schema = schemas.message(plan.message_class.DESCRIPTOR)
        top = {schemas.name(chain[0]) for chain in plan.path_fields.values() if len(chain) == 1}
        if top and "$ref" in schema:  # the body is the message less the fields the path sets
            whole = schemas.components[schema["$ref"].rsplit("/", 1)[1]]
            props = {k: v for k, v in whole.get("properties", {}).items() if k not in top}
            schema = {**whole, "properties": props}
    else:
        return None
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _success(binding: Binding, schemas: _Schemas) -> dict[str, Any]:
    output = binding.method.output_type
    if binding.server_streaming:
        # The REST handler frames each message as one `{"result": ...}` line of the whole message (it
        # does not apply response_body to streams) and a failure mid-stream as a final `{"error": ...}`.
        line = {"type": "object", "properties": {"result": schemas.message(output), "error": _ref(_STATUS)}}
        text = "A stream of newline-delimited JSON objects, one per line, each of this schema."
        return {"description": text, "content": {"application/x-ndjson": {"schema": line}}}
    field = binding.response.response_field
    schema = schemas.message(output) if field is None else schemas.field(field)
    return {"description": "A successful response.", "content": {"application/json": {"schema": schema}}}


def _regex(pattern: str) -> str:
    """An anchored regular expression for a variable's value, e.g. `shelves/*` -> `^shelves/[^/]+$`."""
    out = ""
    for i, piece in enumerate(pattern.split("/")):
        if piece == "**":  # zero or more segments
            out += "(/.*)?" if i else ".*"
            continue
        out += ("/" if i else "") + (
            "[^/]+" if piece == "*" else re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", piece)
        )
    return f"^{out}$"


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _from_string(field: FieldDescriptor) -> bool:
    """Whether a query or path string can set this field (the rule of `translators.request._scalar`)."""
    if field.type != _F.TYPE_MESSAGE:
        return True
    return not is_map(field) and field.message_type.full_name in STRING_WKT | WRAPPERS
