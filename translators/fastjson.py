"""A compiled proto3 JSON path that gives `json_format`'s results exactly: it is sure, or it defers.

`parser_for(cls)` (at plan-build time) and `printer_for(descriptor, ...)` (on first use) compile one
message type into per-field converters. `MessageParser.parse` reads a JSON tree (from `orjson.loads`,
plus path and query strings) into a message like `json_format.ParseDict`; `message_to_dict` prints
like `json_format.MessageToDict`, key order included. The parser takes only forms that json_format
reads the same way: strings, bools, exact ints and ASCII digit strings for integer fields, finite
numbers and plain number strings for doubles, enum names and numbers, base64 for bytes, lists,
string-keyed maps and nested messages of those, Timestamp, Duration, FieldMask and wrappers. On
anything else (null, an unknown or doubled key, two members of a oneof, float32, Struct, Any, ...)
or any error, json_format parses the untouched tree and succeeds or raises its own error. The
printer handles every field kind (Any, Struct and Value print through json_format per value; its
printer is context-free); an extension or an error sends the whole message to json_format.
`fallbacks` on each parser and printer counts the hand-overs. The parser is `fastjson_parser`, the
printer `fastjson_printer`, what both share `fastjson_shapes`; this module is the one name the
translators import them by. Property tests: test_fastjson.py.
"""

from translators.fastjson_parser import MessageParser, parser_for
from translators.fastjson_printer import MessagePrinter, message_to_dict, printer_for

__all__ = ["MessageParser", "MessagePrinter", "message_to_dict", "parser_for", "printer_for"]
