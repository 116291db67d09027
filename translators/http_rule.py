"""Path templates of `google.api.HttpRule`, compiled once at start-up and matched per request.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

`**` matches zero or more segments and may only stand last (before the verb). A template is parsed
into a flat tuple of segment matchers plus variable spans, as grpc-gateway's `runtime/pattern.go`
does, so matching a request is a walk over its raw path segments with no parsing. Matching works on
the *raw* (still percent-encoded) path, so an encoded `%2F` never splits a segment. Variable values
are decoded by the spec's rule: a single-segment variable is fully percent-decoded; a multi-segment
one is decoded except `%2F`/`%2f`, which stay encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

LITERAL, ANY, DEEP = 0, 1, 2  # segment kinds, in the order used to rank templates
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LITERAL = re.compile(r"^[A-Za-z0-9\-._~%!$&'()+,;=@]+$")
_ENCODED_SLASH = re.compile(r"%2[fF]")


class TemplateError(ValueError):
    """A template that does not follow the grammar; raised at start-up, never per request."""


@dataclass(frozen=True, slots=True)
class Variable:
    field_path: tuple[str, ...]
    start: int  # index of the first segment it covers
    end: int  # one past its last segment; -1 when it ends in `**` (to the end of the path)

    @property
    def multi_segment(self) -> bool:
        return self.end == -1 or self.end - self.start > 1


@dataclass(frozen=True, slots=True)
class PathTemplate:
    source: str
    segments: tuple[tuple[int, str], ...]  # (kind, literal text or "")
    variables: tuple[Variable, ...]
    verb: str

    @property
    def rank(self) -> tuple[object, ...]:
        """Sort key: at the first segment where two templates differ, a literal wins over `*`, `*` over
        `**`; then a template with a verb before one without; then the longer one."""
        return (tuple(kind for kind, _ in self.segments), 0 if self.verb else 1, -len(self.segments))

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Variables by dotted field path when `raw_path` (no query, still encoded) matches, else None."""
        if not raw_path.startswith("/"):
            return None
        parts = raw_path[1:].split("/")
        if self.verb:
            last = parts[-1]
            suffix = ":" + self.verb
            if not last.endswith(suffix):
                return None
            parts[-1] = last[: -len(suffix)]
        segments = self.segments
        n = len(segments)
        deep = n > 0 and segments[-1][0] == DEEP
        if deep:
            if len(parts) < n - 1:
                return None
        elif len(parts) != n:
            return None
        for i, (kind, text) in enumerate(segments):
            if kind == DEEP:
                break
            part = parts[i]
            if kind == LITERAL:
                if part != text and unquote(part) != text:
                    return None
            elif not part:
                return None
        # `/a/**` would otherwise match "/a/" with one empty segment: keep that a miss for `*`,
        # but an empty tail is zero segments for `**`.
        if deep and len(parts) == n and parts[-1] == "" and n > 1:
            parts = parts[:-1]
        out: dict[str, str] = {}
        for var in self.variables:
            chunk = parts[var.start :] if var.end == -1 else parts[var.start : var.end]
            if var.multi_segment:
                out[".".join(var.field_path)] = "%2F".join(
                    unquote(piece) for piece in _ENCODED_SLASH.split("/".join(chunk))
                )
            else:
                out[".".join(var.field_path)] = unquote(chunk[0])
        return out


def parse_template(source: str) -> PathTemplate:
    """Compile one template; raise `TemplateError` naming the problem."""
    if not source.startswith("/"):
        raise TemplateError(f"template {source!r} must start with '/'")
    body, verb = source[1:], ""
    # The verb is the text after the last ':' that is outside any variable braces.
    depth, cut = 0, -1
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == ":" and depth == 0:
            cut = i
    if depth != 0:
        raise TemplateError(f"template {source!r} has unbalanced braces")
    if cut >= 0:
        body, verb = body[:cut], body[cut + 1 :]
        if not verb or not _LITERAL.match(verb):
            raise TemplateError(f"template {source!r} has an invalid verb {verb!r}")
    segments: list[tuple[int, str]] = []
    variables: list[Variable] = []
    seen: set[tuple[str, ...]] = set()
    for token in _split_top(body, source):
        if token.startswith("{"):
            if not token.endswith("}"):
                raise TemplateError(f"template {source!r}: bad variable {token!r}")
            inner = token[1:-1]
            name, _, sub = inner.partition("=")
            if not _IDENT.match(name):
                raise TemplateError(f"template {source!r}: bad field path {name!r}")
            path = tuple(name.split("."))
            if path in seen:
                raise TemplateError(f"template {source!r}: variable {name!r} bound twice")
            seen.add(path)
            start = len(segments)
            for sub_token in (sub.split("/") if sub else ["*"]):
                segments.append(_segment(sub_token, source))
            end = -1 if segments[-1][0] == DEEP else len(segments)
            variables.append(Variable(path, start, end))
        else:
            segments.append(_segment(token, source))
    for i, (kind, _) in enumerate(segments):
        if kind == DEEP and i != len(segments) - 1:
            raise TemplateError(f"template {source!r}: '**' must be the last segment")
    return PathTemplate(source, tuple(segments), tuple(variables), verb)


def _segment(token: str, source: str) -> tuple[int, str]:
    if token == "*":
        return (ANY, "")
    if token == "**":
        return (DEEP, "")
    if not token or not _LITERAL.match(token):
        raise TemplateError(f"template {source!r}: bad segment {token!r}")
    return (LITERAL, token)


def _split_top(body: str, source: str) -> list[str]:
    """Split on '/' outside braces; `{name=shelves/*}` stays one token."""
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in body:
        if ch == "{":
            if depth:
                raise TemplateError(f"template {source!r}: nested variables")
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "/" and depth == 0:
            tokens.append("".join(current))
            current = []
        else:
            current.append(ch)
    tokens.append("".join(current))
    return tokens
