"""The one normalisation every screened value goes through, in training, evaluation and serving.

`normalize(value) -> str` is pure, versioned (`VERSION`) and total: it never raises, whatever it is
given (invalid UTF-8, lone surrogates, megabytes), and its work is bounded by `MAX_ROUNDS` passes
over at most `record.MAX_VALUE_CHARS` (plus what decoding makes of them). It undoes the encodings
attackers stack to slip past filters:

1. bytes are decoded as UTF-8, with overlong forms of ASCII (`C0 AF` for `/`) mapped to what they
   spell and anything else invalid replaced;
2. up to `MAX_ROUNDS` rounds of: URL decoding (`%XX`, IIS `%uXXXX`), JavaScript escapes
   (`\\xXX`, `\\uXXXX`), HTML entities, Unicode NFKC and case folding, null bytes removed;
3. if decoding still changes the text after those rounds, the escapes left are neutralised (their
   `%`, `&` or backslash becomes a space), which both bounds the work and keeps the function
   idempotent: `normalize(normalize(x)) == normalize(x)` for every `x`;
4. comment folding (SQL `/* */` and MySQL `/*!50000 */`, HTML `<!-- -->` become spaces: their
   content stays, since MySQL runs it) and whitespace folding (runs of blanks become one space, runs
   containing a line break become one `\\n`, so CRLF injection stays visible).

`decoding_rounds(value)` reports how many rounds changed something: stacked encodings are
themselves a signal. `base64_text(value)` decodes a value that is plausibly base64 of readable text
(cheap checks first), so a payload hidden that way is screened as what it says.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata

VERSION = "1"
MAX_ROUNDS = 4
MAX_CHARS = 8192  # a guard for direct callers; records already clip values to 4 KiB

_PERCENT = re.compile(r"%(?:u([0-9a-fA-F]{4})|([0-9a-fA-F]{2}))")
_JS_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2}))")
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]{1,31});?")
_COMMENT = re.compile(r"/\*!?[0-9]*|\*/|<!--|-->")
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f\u200b-\u200d\u2060\ufeff]+")
# What makes an ASCII value need more than case folding: an escape or entity start, a backslash, a
# control character, or a comment marker. Checked by C-level searches (`_plain_ascii`): a regex
# alternation tried at every position cost four times as much.
_NEEDS_WORK_BYTES = bytes([*b"%&\\", *range(0x20), 0x7F])
_NEEDS_WORK_MARKERS = ("/*", "*/", "<!--", "-->")
_SPACES = re.compile(r"  +")
_OVERLONG2 = re.compile(rb"[\xc0\xc1][\x80-\xbf]")
_OVERLONG3 = re.compile(rb"\xe0[\x80-\x9f][\x80-\xbf]")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


def _decode_bytes(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    raw = _OVERLONG2.sub(lambda m: bytes([((m[0][0] & 0x1F) << 6) | (m[0][1] & 0x3F)]), raw)
    raw = _OVERLONG3.sub(
        lambda m: chr(((m[0][1] & 0x3F) << 6) | (m[0][2] & 0x3F)).encode("utf-8", "replace"), raw
    )
    return raw.decode("utf-8", "replace")


def _url_decode(text: str) -> str:
    if "%" not in text:
        return text

    # Percent escapes decode to bytes, which may spell multi-byte (or overlong) UTF-8 together.
    def one(match: re.Match[str]) -> str:
        if match[1] is not None:
            return _char(int(match[1], 16))
        return "\udc00" + match[2]  # placeholder byte, decoded below with its neighbours

    marked = _PERCENT.sub(one, text)
    if "\udc00" not in marked:
        return marked
    out: list[str] = []
    pending = bytearray()
    i = 0
    while i < len(marked):
        ch = marked[i]
        if ch == "\udc00":
            pending.append(int(marked[i + 1 : i + 3], 16))
            i += 3
            continue
        if pending:
            out.append(_decode_bytes(bytes(pending)))
            pending.clear()
        out.append(ch)
        i += 1
    if pending:
        out.append(_decode_bytes(bytes(pending)))
    return "".join(out)


def _char(code: int) -> str:
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)


def _js_decode(text: str) -> str:
    if "\\" not in text:
        return text
    return _JS_ESCAPE.sub(lambda m: _char(int(m[1] or m[2], 16)), text)


def _round(text: str) -> tuple[str, bool]:
    """One decoding round, and whether it decoded anything (case folding alone does not count)."""
    decoded = _url_decode(text)
    decoded = _js_decode(decoded)
    if "&" in decoded:
        decoded = html.unescape(decoded)
    decoded = unicodedata.normalize("NFKC", decoded)
    decoded_anything = decoded != text and decoded != text.casefold() and decoded.casefold() != text.casefold()
    return decoded.casefold().replace("\x00", ""), decoded_anything


def _neutralise(text: str) -> str:
    text = _PERCENT.sub(lambda m: " " + m[0][1:], text)
    text = _JS_ESCAPE.sub(lambda m: " " + m[0][1:], text)
    return _ENTITY.sub(lambda m: " " + m[0][1:], text)


def _fold(text: str) -> str:
    text = _COMMENT.sub(" ", text)
    return _BLANKS.sub(lambda m: "\n" if ("\n" in m[0] or "\r" in m[0]) else " ", text)


def _clean(value: str | bytes) -> str:
    if isinstance(value, bytes | bytearray):
        value = _decode_bytes(bytes(value[: MAX_CHARS * 4]))
    text = value[:MAX_CHARS]
    # Lone surrogates (from a JSON "\ud800") cannot be encoded or normalised reliably: replace them.
    return text.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(text) else text


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _stable(text: str) -> tuple[str, int]:
    """Rounds until nothing changes: (text, rounds that decoded something), or (text, -1) if unsettled."""
    rounds = 0
    for _ in range(MAX_ROUNDS):
        decoded, decoded_anything = _round(text)
        if decoded == text:
            return text, rounds
        text, rounds = decoded, rounds + decoded_anything
    return text, -1


def _plain_ascii(value: str) -> bool:
    """Whether an ASCII value has none of what `_NEEDS_WORK_BYTES` and `_NEEDS_WORK_MARKERS` list.

    For ASCII, `isprintable` is false exactly for the control characters (0x00-0x1f, 0x7f); the comment
    markers are looked for only when their common character (`*`, `--`) is there. A handful of C-level
    searches: a generator over the markers and a `bytes.translate` cost three times as much."""
    return (value.isprintable() and "%" not in value and "&" not in value and "\\" not in value
            and not ("*" in value and ("/*" in value or "*/" in value))
            and not ("--" in value and ("<!--" in value or "-->" in value)))


def python_plain(value: str | bytes, max_chars: int = MAX_CHARS) -> str | None:
    """The normal form of a plain printable ASCII str of at most `max_chars` characters (no round can
    change it but case folding: the common case, kept cheap), else None. The definition of `plain`,
    which is the compiled one (`field_path.pyx`) when it is built."""
    if isinstance(value, str) and value.isascii() and len(value) <= max_chars and _plain_ascii(value):
        lowered = value.lower()
        return _SPACES.sub(" ", lowered) if "  " in lowered else lowered
    return None


def _normalize(value: str | bytes) -> tuple[str, int]:
    text = plain(value, MAX_CHARS)
    return (text, 0) if text is not None else _decoded(value)


def _decoded(value: str | bytes) -> tuple[str, int]:
    """`_normalize` by the rounds and folds alone: what the plain-ASCII fast path must equal."""
    text, rounds = _stable(_clean(value))
    changed = MAX_ROUNDS if rounds < 0 else rounds
    if rounds < 0:
        text = _neutralise(text)
    # Folding can make new escapes meet ("%2/**/5" does not, comments become spaces, but NFKC after
    # neutralising can), so fold and re-check until a pass changes nothing: that is the fixpoint.
    for _ in range(MAX_ROUNDS):
        folded = _fold(text)
        again, more = _stable(folded)
        if again == folded:
            return folded, changed
        text = _neutralise(again) if more < 0 else again
        changed = min(changed + max(more, 0), MAX_ROUNDS)
    return _fold(_neutralise(_ascii_safe(text))), changed


def _ascii_safe(text: str) -> str:
    # The last resort of a pathological input: keep what cannot change under another round.
    return "".join(ch if ch.isascii() and ch not in "%&\\" else " " for ch in text)


def normalize(value: str | bytes) -> str:
    """The canonical form of one screened value (see the module docstring); never raises."""
    return _normalize(value)[0]


def normalize_with_rounds(value: str | bytes) -> tuple[str, int]:
    """`normalize(value)` and how many decoding rounds changed it (0 to `MAX_ROUNDS`)."""
    return _normalize(value)


def base64_text(value: str) -> str | None:
    """What a base64 value says, when it is base64 of mostly printable UTF-8 text; else None."""
    if len(value) < 16 or len(value) > MAX_CHARS or " " in value:
        return None
    if not _BASE64.fullmatch(value):
        return None
    if value.isalpha() or value.isdigit() or value.islower():  # words, numbers, hex ids: not base64
        return None
    padded = value + "=" * (-len(value) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if not text or printable < 0.9 * len(text):
        return None
    return normalize(text)


# The compiled plain-ASCII path, when built (`make setup` builds it): the same text for every value,
# held to `python_plain` by property tests (test_field_path.py, which also fails when it is not built).
try:
    from screening.field_path import plain
except ImportError:  # a checkout that was not built
    plain = python_plain
