# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled scanner: `tokens.classes` in C, with the same output for every string.

`tokens.py` is the definition (the lexeme pattern `LEXEME`, the apostrophe rule, the tables and the
context rules); this module is an accelerator it uses when it is built. It walks the text once,
character by character, with the predicates the `re` module uses for a `str` pattern (`\\w` is
`Py_UNICODE_ISALNUM` or `_`, `\\d` is `Py_UNICODE_ISDECIMAL`, `\\s` is `Py_UNICODE_ISSPACE`), takes
the alternatives of `LEXEME` in their order, and classifies each lexeme on the spot: punctuation from
tables indexed by character, words from an open-addressing table holding every word of `tokens`'
tables (no Python string is made per lexeme). The context rules run in the same pass, in order, as the
sequential definition in the lexer's tests does.

The grammar is written out here, so `Scanner` takes the pattern strings it implements and refuses
others: a change to `LEXEME` or `_APOSTROPHE` fails at import until this module follows it. The tables
themselves (`WORDS`, `PUNCT`, the word sets) are read from `tokens` when the scanner is built.
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memcmp

cdef extern from "Python.h":
    int PyUnicode_READY(object) except -1
    int PyUnicode_KIND(object)
    void* PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    unsigned int PyUnicode_READ(int kind, void* data, Py_ssize_t index) nogil
    bint Py_UNICODE_ISSPACE(unsigned int ch) nogil
    bint Py_UNICODE_ISALNUM(unsigned int ch) nogil
    bint Py_UNICODE_ISALPHA(unsigned int ch) nogil
    bint Py_UNICODE_ISDECIMAL(unsigned int ch) nogil
    bint Py_UNICODE_ISDIGIT(unsigned int ch) nogil

# The pattern strings this module implements (`tokens.LEXEME.pattern`, `tokens._APOSTROPHE.pattern`).
LEXEME_PATTERN = (
    r"[^\S\n]*("
    r"[^\W\d_]\w*"
    r"|[,?'\"(;@~^+`]"
    r"|\n"
    r"|&#?\w+;"
    r"|0x[0-9a-f]+"
    r"|[0-9]+(?:\.[0-9]+)*"
    r"|_\w*"
    r"|\.\.+[/\\]|[/\\]\.\.+|://|\$\{|\$\(\(?|\{\{|\}\}|\{%|%\}|\{#|#\}|<%=?|%>|#\{|\[\[|\]\]|<!|<\?|&&|\|\|"
    r"|==|!=|<>|>=|<=|=~|--|/\*|\*/|::-|:-|\*\)|\)\("
    r"|[^\w\s])"
)
_APOSTROPHE_WORDS = (
    "or", "and", "xor", "union", "select", "having", "order", "group", "like", "rlike", "regexp", "div", "is",
    "in", "not", "into", "from", "where", "limit", "procedure", "waitfor", "exec", "execute", "sleep",
    "benchmark", "waitfor",
)
APOSTROPHE_PATTERN = (
    r"(?<=[^\W\d_])'(?=[^\W\d_])(?!(?:or|and|xor|union|select|having|order|group|like|rlike|regexp|div|is|in|not"
    r"|into|from|where|limit|procedure|waitfor|exec|execute|sleep|benchmark|waitfor)\b)"
)
# The two-character operators of `LEXEME` (after the path ones); the three-character ones are
# tested by name in `_operator`.
_PAIRS = ("${", "$(", "{{", "}}", "{%", "%}", "{#", "#}", "<%", "%>", "#{", "[[", "]]", "<!", "<?", "&&", "||",
          "==", "!=", "<>", ">=", "<=", "=~", "--", "/*", "*/", ":-", "*)", ")(")
_TRIPLES = ("://", "$((", "<%=", "::-")

cdef enum:
    KEY_CHARS = 32      # longest word held in the table
    TABLE_SIZE = 4096   # a power of two, over twice the number of words
    STACK_TOKENS = 1024

# Character properties of ASCII, computed from the `str` methods the `re` module's categories use.
cdef enum:
    SPACE = 1
    WORD = 2       # \w
    LETTER = 4     # [^\W\d_]
    ALPHA = 8      # str.isalpha
    DIGIT = 16     # str.isdigit
    HEX = 32       # [0-9a-f]
    DIGIT09 = 64   # [0-9]

# Membership of a word in the tables the rules read besides `WORDS`.
cdef enum:
    F_EVENT = 1
    F_DANGER = 2
    F_JS = 4
    F_RARE = 8
    F_WEB = 16
    F_EXT = 32
    F_HEADER = 64
    F_NOSQL = 128

cdef unsigned char ASCII[128]
for _code in range(128):
    _ch = chr(_code)
    ASCII[_code] = (
        (SPACE if _ch.isspace() else 0)
        | (WORD if _ch.isalnum() or _ch == "_" else 0)
        | (LETTER if _ch.isalnum() and not _ch.isdecimal() and _ch != "_" else 0)
        | (ALPHA if _ch.isalpha() else 0)
        | (DIGIT if _ch.isdigit() else 0)
        | (HEX if _ch in "0123456789abcdef" else 0)
        | (DIGIT09 if _ch in "0123456789" else 0)
    )


cdef inline bint is_space(unsigned int c) noexcept nogil:
    return (ASCII[c] & SPACE) != 0 if c < 128 else Py_UNICODE_ISSPACE(c)


cdef inline bint is_word(unsigned int c) noexcept nogil:
    return (ASCII[c] & WORD) != 0 if c < 128 else Py_UNICODE_ISALNUM(c)


cdef inline bint is_letter(unsigned int c) noexcept nogil:
    return (ASCII[c] & LETTER) != 0 if c < 128 else Py_UNICODE_ISALNUM(c) and not Py_UNICODE_ISDECIMAL(c)


cdef inline bint is_alpha(unsigned int c) noexcept nogil:
    return (ASCII[c] & ALPHA) != 0 if c < 128 else Py_UNICODE_ISALPHA(c)


cdef inline bint is_digit(unsigned int c) noexcept nogil:
    return (ASCII[c] & DIGIT) != 0 if c < 128 else Py_UNICODE_ISDIGIT(c)


cdef inline bint has(unsigned int c, unsigned char prop) noexcept nogil:
    return c < 128 and (ASCII[c] & prop) != 0


cdef struct Entry:
    unsigned char key[KEY_CHARS]
    int length           # 0: an empty slot
    int word_class       # its class in `WORDS`, 0 when it is not there
    int flags            # F_*


cdef struct Text:
    int kind
    void* data
    Py_ssize_t length


cdef inline unsigned int at(Text* t, Py_ssize_t i) noexcept nogil:
    return PyUnicode_READ(t.kind, t.data, i) if i < t.length else 0


cdef inline bint starts(Text* t, Py_ssize_t start, Py_ssize_t end, const char* prefix) noexcept nogil:
    cdef Py_ssize_t i = 0
    while prefix[i]:
        if start + i >= end or PyUnicode_READ(t.kind, t.data, start + i) != <unsigned int>prefix[i]:
            return False
        i += 1
    return True


cdef inline unsigned int fnv(const unsigned char* key, Py_ssize_t n) noexcept nogil:
    cdef unsigned int h = 2166136261u
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ key[i]) * 16777619u
    return h


cdef class Scanner:
    """`classes(text)`, built from `tokens`' tables (see the module docstring)."""

    cdef Entry table[TABLE_SIZE]
    cdef int single[128]             # the class of a one-character ASCII lexeme
    cdef unsigned char pair[16384]   # the class of a two-character operator, by its two ASCII characters
    cdef unsigned char command_after[256]  # classes whose (only) lexemes are in `_COMMAND_AFTER`
    cdef int c_newline, c_single_quote, c_apostrophe, c_other, c_entity_ref, c_hex_number, c_number, c_ipv4
    cdef int c_internal_host, c_path_up, c_word, c_long_word, c_py_dunder, c_event_handler, c_deser, c_sql_func
    cdef int c_shell_weak, c_shell_strong, c_cmd_word, c_lt, c_slash, c_dot, c_dollar, c_percent, c_colon
    cdef int c_scheme_sep, c_js_scheme, c_rare_scheme, c_web_scheme, c_html_danger_tag, c_html_tag, c_file_ext
    cdef int c_nosql_op, c_shell_var, c_crlf_header
    cdef int triple[4]               # the classes of `_TRIPLES`, in order
    cdef tuple internal_prefixes

    def __init__(self, *, lexeme: str, apostrophe: str, classes: dict, words: dict, punct: dict,
                 events, danger_tags, js_schemes, rare_schemes, web_schemes, extensions, header_words,
                 nosql_ops, command_after, context_before, scheme_colons, tag_openers,
                 internal_prefixes: tuple) -> None:
        if lexeme != LEXEME_PATTERN or apostrophe != APOSTROPHE_PATTERN:
            raise ValueError("screening/scanner.pyx implements another LEXEME or _APOSTROPHE pattern than "
                             "screening/tokens.py defines: make them one again (the lexer tests hold them equal)")
        if (set(context_before) != {"<", "</", "/", ".", "$", "%", "\n"} or set(scheme_colons) != {":", "://"}
                or set(tag_openers) != {"<", "</"}):
            raise ValueError("screening/scanner.pyx implements other context rules than screening/tokens.py")
        self.c_newline = classes["newline"]
        self.c_single_quote = classes["single_quote"]
        self.c_apostrophe = classes["apostrophe"]
        self.c_other = classes["other"]
        self.c_entity_ref = classes["entity_ref"]
        self.c_hex_number = classes["hex_number"]
        self.c_number = classes["number"]
        self.c_ipv4 = classes["ipv4"]
        self.c_internal_host = classes["internal_host"]
        self.c_path_up = classes["path_up"]
        self.c_word = classes["word"]
        self.c_long_word = classes["long_word"]
        self.c_py_dunder = classes["py_dunder"]
        self.c_event_handler = classes["event_handler"]
        self.c_deser = classes["deser"]
        self.c_sql_func = classes["sql_func"]
        self.c_shell_weak = classes["shell_weak"]
        self.c_shell_strong = classes["shell_strong"]
        self.c_cmd_word = classes["cmd_word"]
        self.c_lt = classes["lt"]
        self.c_slash = classes["slash"]
        self.c_dot = classes["dot"]
        self.c_dollar = classes["dollar"]
        self.c_percent = classes["percent"]
        self.c_colon = classes["colon"]
        self.c_scheme_sep = classes["scheme_sep"]
        self.c_js_scheme = classes["js_scheme"]
        self.c_rare_scheme = classes["rare_scheme"]
        self.c_web_scheme = classes["web_scheme"]
        self.c_html_danger_tag = classes["html_danger_tag"]
        self.c_html_tag = classes["html_tag"]
        self.c_file_ext = classes["file_ext"]
        self.c_nosql_op = classes["nosql_op"]
        self.c_shell_var = classes["shell_var"]
        self.c_crlf_header = classes["crlf_header"]
        if max(classes.values()) > 255:
            raise ValueError("token classes must fit in a byte")
        # Lexemes are told apart by their class where a rule reads the lexeme before: each such class
        # must come from that one lexeme (or only from lexemes of the same set).
        self._check_unique(punct, words, {"<": self.c_lt, "/": self.c_slash, ".": self.c_dot, "$": self.c_dollar,
                                          "%": self.c_percent, "\n": self.c_newline, ":": self.c_colon,
                                          "://": self.c_scheme_sep})
        cdef int cls
        for lexeme_ in command_after:
            if lexeme_:
                cls = punct[lexeme_]
                if {k for k, v in punct.items() if v == cls} - set(command_after) or cls in words.values():
                    raise ValueError(f"class {cls} of {lexeme_!r} is not only a command separator's")
                self.command_after[cls] = 1
        for code in range(128):
            self.single[code] = punct.get(chr(code), 0)
        for op in _PAIRS:
            self.pair[ord(op[0]) * 128 + ord(op[1])] = punct[op]
        for index, op in enumerate(_TRIPLES):
            self.triple[index] = punct[op]
        if {k for k in punct if len(k) == 1 and ord(k) >= 128} != {"\u2019"}:
            raise ValueError("PUNCT's one non-ASCII character is the typographic apostrophe")
        self.internal_prefixes = tuple(internal_prefixes)
        flags: dict = {}
        for group, flag in ((events, F_EVENT), (danger_tags, F_DANGER), (js_schemes, F_JS),
                            (rare_schemes, F_RARE), (web_schemes, F_WEB), (extensions, F_EXT),
                            (header_words, F_HEADER), (nosql_ops, F_NOSQL)):
            for word in group:
                flags[word] = flags.get(word, 0) | flag
        for word in set(words) | set(flags):
            self._insert(word, words.get(word, 0), flags.get(word, 0))

    def _check_unique(self, dict punct, dict words, dict expected) -> None:
        for lexeme_, cls in expected.items():
            if punct.get(lexeme_) != cls or [k for k, v in punct.items() if v == cls] != [lexeme_] \
                    or cls in words.values():
                raise ValueError(f"{lexeme_!r} is not the only lexeme of class {cls}")

    def _insert(self, str word, int word_class, int flags) -> None:
        cdef bytes key = word.encode("ascii")  # a non-ASCII word raises: the table holds ASCII only
        cdef Py_ssize_t n = len(key)
        if n == 0 or n > KEY_CHARS:
            raise ValueError(f"{word!r}: a word in the tables must have 1 to {KEY_CHARS} characters")
        cdef const unsigned char* raw = key
        cdef unsigned int slot = fnv(raw, n) & (TABLE_SIZE - 1)
        while self.table[slot].length:
            slot = (slot + 1) & (TABLE_SIZE - 1)
        cdef Py_ssize_t i
        for i in range(n):
            self.table[slot].key[i] = raw[i]
        self.table[slot].length = <int>n
        self.table[slot].word_class = word_class
        self.table[slot].flags = flags

    cdef Entry* find(self, Text* t, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """The table's entry for text[start:end], NULL when the word is in none of the tables."""
        cdef Py_ssize_t n = end - start, i
        cdef unsigned char key[KEY_CHARS]
        cdef unsigned int c
        if n <= 0 or n > KEY_CHARS:
            return NULL
        for i in range(n):
            c = PyUnicode_READ(t.kind, t.data, start + i)
            if c >= 128:
                return NULL
            key[i] = <unsigned char>c
        return self.find_key(key, n, fnv(key, n))

    cdef inline Entry* find_key(self, const unsigned char* key, Py_ssize_t n, unsigned int h) noexcept nogil:
        cdef unsigned int slot = h & (TABLE_SIZE - 1)
        while self.table[slot].length:
            if self.table[slot].length == n and memcmp(self.table[slot].key, key, n) == 0:
                return &self.table[slot]
            slot = (slot + 1) & (TABLE_SIZE - 1)
        return NULL

    cdef Py_ssize_t _word(self, Text* t, Py_ssize_t p, bint* alnum, Entry** entry) noexcept nogil:
        """The end of the word that starts at p (`\\w*` after its first character), whether it is
        `str.isalnum` (no `_`), and its entry in the table, looked up as the word is read."""
        cdef unsigned char key[KEY_CHARS]
        cdef unsigned int h = 2166136261u, d
        cdef Py_ssize_t q = p, n = t.length
        cdef bint keyed = True  # ASCII and short enough for the table, so far
        alnum[0] = True
        while q < n:
            d = PyUnicode_READ(t.kind, t.data, q)
            if d < 128:
                if not ASCII[d] & WORD:
                    break
                if d == 95:
                    alnum[0] = False
                if keyed and q - p < KEY_CHARS:
                    key[q - p] = <unsigned char>d
                    h = (h ^ d) * 16777619u
                else:
                    keyed = False
            elif Py_UNICODE_ISALNUM(d):
                keyed = False
            else:
                break
            q += 1
        entry[0] = self.find_key(key, q - p, h) if keyed else NULL
        return q

    cdef bint _sql_follows(self, Text* t, Py_ssize_t start) noexcept:
        """Whether one of `_APOSTROPHE`'s SQL words starts at `start`, followed by a word boundary."""
        cdef Py_ssize_t end
        cdef bytes word
        for word in _APOSTROPHE_WORDS_BYTES:
            end = start + len(word)
            if end <= t.length and starts(t, start, end, word) and (end == t.length or not is_word(at(t, end))):
                return True
        return False

    cdef int _word_class(self, Text* t, Py_ssize_t start, Py_ssize_t end, Entry* entry) noexcept nogil:
        """`tokens._word` of text[start:end] (its first character is a letter or `_`)."""
        cdef Entry* rest
        cdef unsigned int first = PyUnicode_READ(t.kind, t.data, start)
        if entry is not NULL and entry.word_class:
            return entry.word_class
        # The prefixes `_word` tests, each only for the first letter it starts with.
        if first == 95:  # _
            if end - start > 4 and starts(t, start, end, b"__") and at(t, end - 2) == 95 and at(t, end - 1) == 95:
                return self.c_py_dunder
        elif first == 111:  # o
            if starts(t, start, end, b"on"):
                rest = self.find(t, start + 2, end)
                if rest is not NULL and rest.flags & F_EVENT:
                    return self.c_event_handler
        elif first == 114 or first == 97:  # r, a
            if starts(t, start, end, b"ro0ab") or starts(t, start, end, b"aced000"):
                return self.c_deser
        elif first == 112 or first == 100 or first == 117 or first == 115 or first == 120:  # p d u s x
            if (starts(t, start, end, b"pg_") or starts(t, start, end, b"dbms_") or starts(t, start, end, b"utl_")
                    or starts(t, start, end, b"sys_") or starts(t, start, end, b"xp_")
                    or starts(t, start, end, b"sp_")):
                return self.c_sql_func
        return self.c_long_word if end - start > 24 else self.c_word

    def classes(self, str text not None) -> list:
        """Token classes (1-based indexes into `tokens.NAMES`) of normalised text: `tokens.classes`."""
        PyUnicode_READY(text)
        cdef Text t
        t.kind = PyUnicode_KIND(text)
        t.data = PyUnicode_DATA(text)
        t.length = PyUnicode_GET_LENGTH(text)
        cdef int stack[STACK_TOKENS]
        cdef int* out = stack
        if t.length > STACK_TOKENS:  # a lexeme has at least one character
            out = <int*>malloc(t.length * sizeof(int))
            if out is NULL:
                raise MemoryError()
        cdef Py_ssize_t i, count
        try:
            count = self._scan(&t, text, out)
            result = [0] * count
            for i in range(count):
                result[i] = out[i]
            return result
        finally:
            if out is not stack:
                free(out)

    cdef Py_ssize_t _scan(self, Text* t, str text, int* out) except -1:
        cdef Py_ssize_t n = t.length, p = 0, q, count = 0, dots
        cdef unsigned int c, d
        cdef int cls, previous = 0  # the class of the punctuation lexeme before (0: none, -1: another lexeme)
        cdef bint punct, wordlike, alnum
        cdef Entry* entry
        cdef Entry* previous_entry = NULL
        while p < n:
            c = PyUnicode_READ(t.kind, t.data, p)
            if c != 10 and is_space(c):  # a blank is no lexeme
                p += 1
                continue
            entry = NULL
            punct = wordlike = False
            alnum = True
            if is_letter(c):
                q = self._word(t, p, &alnum, &entry)
                if is_alpha(c):
                    wordlike = True
                    cls = self._word_class(t, p, q, entry)
                else:  # a letter of `\w` that is no `str.isalpha` (`²`, `½`): `_context_free`'s digit test
                    cls = self.c_number if is_digit(c) else self.c_other
            elif c == 39:  # '
                punct = True
                cls = self.c_single_quote
                if (p > 0 and is_letter(PyUnicode_READ(t.kind, t.data, p - 1)) and is_letter(at(t, p + 1))
                        and not self._sql_follows(t, p + 1)):
                    cls = self.c_apostrophe
                q = p + 1
            elif c == 10:
                punct = True
                cls = self.c_newline
                q = p + 1
            elif c == 38 and self._entity_end(t, p) > 0:  # &: an entity reference
                q = self._entity_end(t, p)
                cls = self.c_entity_ref
            elif c == 48 and at(t, p + 1) == 120 and has(at(t, p + 2), HEX):  # 0x
                q = p + 3
                while has(at(t, q), HEX):
                    q += 1
                cls = self.c_hex_number
            elif has(c, DIGIT09):
                q = p + 1
                dots = 0
                while True:
                    while has(at(t, q), DIGIT09):
                        q += 1
                    if at(t, q) == 46 and has(at(t, q + 1), DIGIT09):
                        dots += 1
                        q += 1
                    else:
                        break
                cls = self.c_number
                if dots == 3:
                    cls = self.c_internal_host if text[p:q].startswith(self.internal_prefixes) else self.c_ipv4
            elif c == 95:  # _
                q = self._word(t, p, &alnum, &entry)
                wordlike = True
                cls = self._word_class(t, p, q, entry)
            elif not is_word(c):  # neither a word character nor a blank: an operator or one character
                q = self._operator(t, p)
                if q < 0:
                    q = -q
                    cls = self.c_path_up
                else:
                    punct = True
                    cls = self._punct_class(t, p, q, c)
                    if cls == 0:
                        punct = False
                        cls = self.c_other
            else:  # a digit of `\w` outside [0-9] matches no alternative: no lexeme
                p += 1
                continue
            # The context rules (`tokens._in_context`), in order: a lexeme's class depends on the one
            # before (`previous`, its context-free class, which names the lexeme where it matters).
            if (cls == self.c_shell_weak or cls == self.c_shell_strong or cls == self.c_colon
                    or cls == self.c_scheme_sep or previous == self.c_lt or previous == self.c_slash
                    or previous == self.c_dot or previous == self.c_dollar or previous == self.c_percent
                    or previous == self.c_newline):
                cls = self._in_context(cls, punct, wordlike, alnum, entry, previous, previous_entry, out, count)
            out[count] = cls
            count += 1
            previous = cls if punct else -1  # a rule reads only punctuation before; -1 is no class
            previous_entry = entry
            p = q
        return count

    cdef Py_ssize_t _entity_end(self, Text* t, Py_ssize_t p) noexcept:
        """The end of `&#?\\w+;` at p, or 0."""
        cdef Py_ssize_t q = p + 1, start
        if at(t, q) == 35:  # #
            q += 1
        start = q
        while q < t.length and is_word(PyUnicode_READ(t.kind, t.data, q)):
            q += 1
        if q > start and at(t, q) == 59:  # ;
            return q + 1
        return 0

    cdef Py_ssize_t _operator(self, Text* t, Py_ssize_t p) noexcept:
        """The end of the operator or character lexeme at p; negative for a path climb (`../`, `/..`)."""
        cdef unsigned int c = PyUnicode_READ(t.kind, t.data, p), d = at(t, p + 1)
        cdef Py_ssize_t q
        if c == 46 and d == 46:  # \.\.+[/\\]
            q = p + 2
            while at(t, q) == 46:
                q += 1
            if at(t, q) == 47 or at(t, q) == 92:
                return -(q + 1)
        if (c == 47 or c == 92) and d == 46 and at(t, p + 2) == 46:  # [/\\]\.\.+
            q = p + 3
            while at(t, q) == 46:
                q += 1
            return -q
        if c == 58 and d == 47 and at(t, p + 2) == 47:  # ://
            return p + 3
        if c == 36 and d == 40 and at(t, p + 2) == 40:  # $((
            return p + 3
        if c == 60 and d == 37 and at(t, p + 2) == 61:  # <%=
            return p + 3
        if c == 58 and d == 58 and at(t, p + 2) == 45:  # ::-
            return p + 3
        if c < 128 and d < 128 and self.pair[c * 128 + d]:
            return p + 2
        return p + 1

    cdef int _punct_class(self, Text* t, Py_ssize_t p, Py_ssize_t q, unsigned int c) noexcept:
        """The class of an operator or character lexeme; 0 for a character not in `PUNCT` (other)."""
        cdef unsigned int d
        if q - p == 1:
            if c < 128:
                return self.single[c]
            return self.c_apostrophe if c == 0x2019 else 0
        d = PyUnicode_READ(t.kind, t.data, p + 1)
        if q - p == 3:  # `_TRIPLES`: ://, $((, <%=, ::-
            if c == 58:
                return self.triple[0] if d == 47 else self.triple[3]
            return self.triple[1] if c == 36 else self.triple[2]
        return self.pair[c * 128 + d]

    cdef int _in_context(self, int cls, bint punct, bint wordlike, bint alnum, Entry* entry, int previous,
                         Entry* previous_entry, int* out, Py_ssize_t i) noexcept:
        if punct:
            if (cls == self.c_colon or cls == self.c_scheme_sep) and i > 0 and previous_entry is not NULL:
                # A scheme is only known once its colon is seen: re-class the word before it.
                if previous_entry.flags & F_JS:
                    out[i - 1] = self.c_js_scheme
                elif previous_entry.flags & F_RARE:
                    out[i - 1] = self.c_rare_scheme
                elif previous_entry.flags & F_WEB:
                    out[i - 1] = self.c_web_scheme
            return cls
        if not wordlike:
            return cls
        if (cls == self.c_shell_weak or cls == self.c_shell_strong) and not (
                i == 0 or previous > 0 and self.command_after[previous]):
            if cls == self.c_shell_strong and previous != self.c_slash:
                cls = self.c_cmd_word
            elif cls != self.c_shell_strong:
                cls = self.c_word
        if previous == self.c_lt or previous == self.c_slash and i > 1 and out[i - 2] == self.c_lt:
            cls = self.c_html_danger_tag if entry is not NULL and entry.flags & F_DANGER else self.c_html_tag
        elif previous == self.c_dot and entry is not NULL and entry.flags & F_EXT:
            cls = self.c_file_ext
        elif previous == self.c_dollar:
            cls = self.c_nosql_op if entry is not NULL and entry.flags & F_NOSQL else self.c_shell_var
        elif previous == self.c_percent and alnum:
            cls = self.c_shell_var
        elif previous == self.c_newline and entry is not NULL and entry.flags & F_HEADER:
            cls = self.c_crlf_header
        return cls


_APOSTROPHE_WORDS_BYTES = tuple(word.encode("ascii") for word in _APOSTROPHE_WORDS)
