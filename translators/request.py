"""HTTP request parts to a protobuf request message, by the `google.api.http` mapping rules.

A `RequestPlan` is resolved once per binding at start-up (field descriptors of every path variable
and of the body field); per request, `build_request` assembles one JSON-shaped tree from the body,
the path variables and the query parameters, then parses it once with the plan's compiled
`fastjson.MessageParser`, which defers to `json_format.ParseDict` on anything it is not sure of, so
the proto3 JSON mapping (both field names, int64 strings, enums by name or number, well-known types)
is protobuf's own. All bad input ends here as `BadRequest`, `UnsupportedMediaType` or
`PayloadTooLarge`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from translators.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from translators.fastjson import MessageParser, parser_for
from translators.fields import STRING_WKT, WRAPPERS, is_map, is_repeated
from translators.options import TranscodeOptions

FieldChain = tuple[FieldDescriptor, ...]
_F = FieldDescriptor
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool, as grpc-gateway reads them
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}
class PlanError(ValueError):
    """A binding whose fields do not exist in its messages; raised at start-up."""


@dataclass(frozen=True, slots=True)
class RequestPlan:
    message_class: type[Message]
    path_fields: dict[str, FieldChain]  # dotted variable name -> its field chain
    body: str  # "" (no body), "*" (whole message) or a top-level field name
    body_field: FieldDescriptor | None
    options: TranscodeOptions
    parser: MessageParser  # of message_class, compiled once
    takes_body: bool = dataclasses.field(init=False)  # `body` is not "": read per request, so worked out once

    def __post_init__(self) -> None:
        object.__setattr__(self, "takes_body", bool(self.body))


def resolve_chain(message: Descriptor, dotted: str) -> FieldChain:
    """Field descriptors along `a.b.c`, each part by proto name or JSON name; KeyError if absent."""
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in dotted.split("."):
        if current is None:
            raise KeyError(dotted)
        field = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
        if field is None:
            raise KeyError(dotted)
        chain.append(field)
        current = field.message_type if field.type == _F.TYPE_MESSAGE else None
    return tuple(chain)


def make_plan(
    message_class: type[Message], variables: Iterable[str], body: str, options: TranscodeOptions
) -> RequestPlan:
    desc = message_class.DESCRIPTOR
    path_fields: dict[str, FieldChain] = {}
    for name in variables:
        try:
            chain = resolve_chain(desc, name)
        except KeyError:
            raise PlanError(f"path variable {name!r} is not a field of {desc.full_name}") from None
        leaf = chain[-1]
        if is_repeated(leaf) or (leaf.type == _F.TYPE_MESSAGE and leaf.message_type.full_name not in
                                  STRING_WKT | WRAPPERS):
            raise PlanError(f"path variable {name!r} must be a singular scalar field of {desc.full_name}")
        path_fields[name] = chain
    body_field = None
    if body and body != "*":
        body_field = desc.fields_by_name.get(body)
        if body_field is None:
            raise PlanError(f"body {body!r} is not a top-level field of {desc.full_name}")
    return RequestPlan(message_class, path_fields, body, body_field, options, parser_for(message_class))


def build_request(
    plan: RequestPlan,
    path_vars: dict[str, str],
    query: Iterable[tuple[str, str]],
    content_type: str | None,
    body: bytes,
) -> Message:
    """The request message, or `BadRequest` naming the offending field."""
    opts = plan.options
    tree: dict[str, Any] = {}
    if plan.body and body:
        if len(body) > opts.max_body_bytes:
            raise PayloadTooLarge(opts.max_body_bytes)
        _check_media_type(content_type)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON body: {exc}") from None
        if plan.body == "*":
            if not isinstance(parsed, dict):
                raise BadRequest("request body must be a JSON object")
            tree = parsed
        else:
            assert plan.body_field is not None
            tree[plan.body_field.name] = parsed
    for name, value in path_vars.items():
        chain = plan.path_fields[name]
        leaf = chain[-1]
        scalar = _scalar(leaf, value, name)
        if len(chain) == 1 and leaf.name not in tree and leaf.json_name not in tree:
            tree[leaf.name] = scalar  # what `_assign` does for a top-level field the body left unset
        else:
            _assign(tree, chain, scalar, name, opts, from_path=True)
    if query:
        _apply_query(plan, tree, query)
    try:
        return plan.parser.parse(tree, ignore_unknown_fields=not opts.reject_unknown_fields)
    except json_format.ParseError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    except RecursionError:
        raise BadRequest("request body nests too deeply") from None


def _check_media_type(content_type: str | None) -> None:
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return
    raise UnsupportedMediaType(media)


def _apply_query(plan: RequestPlan, tree: dict[str, Any], query: Iterable[tuple[str, str]]) -> None:
    opts = plan.options
    desc = plan.message_class.DESCRIPTOR
    for key, value in query:
        map_key = None
        dotted = key
        if key.endswith("]") and "[" in key:
            dotted, _, map_key = key[:-1].partition("[")
        try:
            chain = resolve_chain(desc, dotted) if plan.body != "*" else None
        except KeyError:
            chain = None
        if chain is None or (plan.body_field is not None and chain[0] is plan.body_field):
            if opts.reject_unknown_query_parameters:
                raise BadRequest(f"unknown query parameter {key!r}", field=key)
            continue
        leaf = chain[-1]
        if map_key is not None:
            if not is_map(leaf):
                raise BadRequest(f"query parameter {key!r}: {dotted} is not a map", field=key)
            value_field = leaf.message_type.fields_by_name["value"]
            _assign_map(tree, chain, map_key, _scalar(value_field, value, key))
        elif is_map(leaf):
            raise BadRequest(f"query parameter {key!r}: set map entries as {dotted}[key]=value", field=key)
        elif is_repeated(leaf):
            _append(tree, chain, _scalar(leaf, value, key))
        else:
            _assign(tree, chain, _scalar(leaf, value, key), key, opts, from_path=False)


def _scalar(field: FieldDescriptor, text: str, name: str) -> Any:
    """A path or query string as the JSON value `json_format` expects for this field."""
    ftype = field.type
    if ftype == _F.TYPE_BOOL:
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise BadRequest(f"{name}: {text!r} is not a boolean", field=name)
    if ftype == _F.TYPE_ENUM:
        return int(text) if text.lstrip("-").isdigit() else text
    if ftype == _F.TYPE_MESSAGE:
        full = field.message_type.full_name
        if full in STRING_WKT:
            return text
        if full in WRAPPERS:
            return _scalar(field.message_type.fields_by_name["value"], text, name)
        raise BadRequest(f"{name}: message field {field.full_name} cannot be set from a string", field=name)
    return text


def _container(tree: dict[str, Any], chain: FieldChain, name: str) -> dict[str, Any]:
    """The dict holding the leaf of `chain`, created as needed; either JSON key name is honoured."""
    node = tree
    for field in chain[:-1]:
        key = _key(node, field)
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise BadRequest(f"{name}: {field.name} must be an object", field=name)
        node = child
    return node


def _key(node: dict[str, Any], field: FieldDescriptor) -> str:
    if field.json_name in node:
        return field.json_name
    return field.name


def _assign(
    tree: dict[str, Any], chain: FieldChain, value: Any, name: str, opts: TranscodeOptions, from_path: bool
) -> None:
    node = _container(tree, chain, name)
    key = _key(node, chain[-1])
    if key in node and node[key] != value and str(node[key]).lower() != str(value).lower():
        if not from_path:
            raise BadRequest(f"query parameter {name!r} given twice or conflicts with the path", field=name)
        if opts.path_conflict == "reject":
            raise BadRequest(
                f"field {name!r} is bound by the path and given again with another value", field=name
            )
    node[key] = value


def _append(tree: dict[str, Any], chain: FieldChain, value: Any) -> None:
    node = _container(tree, chain, chain[-1].name)
    node.setdefault(_key(node, chain[-1]), []).append(value)


def _assign_map(tree: dict[str, Any], chain: FieldChain, map_key: str, value: Any) -> None:
    node = _container(tree, chain, chain[-1].name)
    node.setdefault(_key(node, chain[-1]), {})[map_key] = value
