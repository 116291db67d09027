"""Per-route transcoding options: how strictly requests are read and how responses are printed.

Defaults are deliberately strict where Envoy is lax: an unknown query parameter or JSON field is a
400 (Envoy drops it and answers 200, which hides client typos), and a field given both in the path
and, with a different value, in the body or query is a 400 rather than silently overwritten.
Server streams are newline-delimited JSON unless a route asks for a JSON array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class TranscodeOptions:
    reject_unknown_query_parameters: bool = True
    reject_unknown_fields: bool = True
    # "reject": a path-bound field given again in the body or query with another value is a 400;
    # "path_wins": the path value silently replaces it (grpc-gateway's behaviour).
    path_conflict: Literal["reject", "path_wins"] = "reject"
    always_print_primitive_fields: bool = False
    preserve_proto_field_names: bool = False
    enums_as_ints: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    # How a server stream is framed over plain HTTP when the client does not ask for SSE:
    # newline-delimited JSON (grpc-gateway's framing) or one JSON array (Envoy's default).
    stream_format: Literal["ndjson", "json_array"] = "ndjson"


DEFAULT_OPTIONS = TranscodeOptions()
