"""The lexer: normalised text to a sequence of token classes, in the languages attacks are written in.

Like libinjection, screening does not look for payload strings: it reads the text as SQL, HTML and
JavaScript, shell, paths and URLs, template syntax, LDAP and XPath, XML, Log4j lookups and
serialisation formats, and keeps only the class of each token, so `' or 1=1--` and `" OR 2>1 #`
are the same sequence (quote, logic word, number, comparison, number, comment). Features are built
from those sequences (`features.py`).

Two steps keep it fast (a few microseconds for a typical value): one simple regex splits the text
into lexemes (words, numbers, multi-character operators, single characters), and a table look-up
classifies each, with a few rules that look at the previous lexeme (a word after `<` is a tag name,
a word before `:` may be a URL scheme, a word after `.` may be a file extension, after `$` a NoSQL
operator). `NAMES` and the tables are part of the feature schema: change them and bump
`features.VERSION`.
"""

from __future__ import annotations

import re
from itertools import chain, compress

NAMES: tuple[str, ...] = (
    "newline", "crlf_header", "xml_decl", "entity_ref", "jndi", "lookup_default", "tpl_open", "tpl_close",
    "dollar_brace", "dollar_paren", "py_dunder", "tpl_gadget", "deser", "html_danger_tag", "html_tag",
    "event_handler", "js_scheme", "js_sink", "sql_union", "sql_select", "sql_dml", "sql_clause", "sql_logic",
    "sql_time", "sql_func", "sql_meta", "sql_comment", "comment_open", "comment_close", "shell_strong",
    "shell_weak", "shell_var", "shell_and", "path_up", "path_sensitive", "scan_path", "file_ext",
    "rare_scheme", "web_scheme", "scheme_sep", "internal_host", "ipv4", "scanner", "ldap_attr", "xpath_func",
    "nosql_op", "hex_number", "number", "word", "long_word", "single_quote", "double_quote", "backtick",
    "semicolon", "lparen", "rparen", "comma", "compare", "equals", "lt", "gt", "pipe", "amp", "lbrace", "rbrace",
    "lbracket", "rbracket", "slash", "backslash", "colon", "dot", "star", "plus", "minus", "percent", "at",
    "question", "bang", "caret", "tilde", "dollar", "other", "apostrophe", "cmd_word",
)
SEPARATOR = 0  # class 0 separates fields in a concatenated sequence; real classes are 1-based
N_CLASSES = len(NAMES) + 1
C = {name: index + 1 for index, name in enumerate(NAMES)}

# One lexeme per match, the first alternative that matches wins: a newline, an entity reference, a hex
# then a decimal number, a word, a multi-character operator, else any single non-word character.
# Blanks (other than newlines) are no lexeme. The pattern is written for speed with the same matches:
# blanks before a lexeme are consumed by the match (`findall` returns the group), so the search does
# not try every alternative at each blank; a word, the commonest lexeme, is tried first, and the
# single characters that start no longer lexeme are one class. Moving them ahead changes no match:
# no alternative they pass can start with the characters they start with.
LEXEME = re.compile(
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


# A quote between two letters is an apostrophe (O'Brien, don't), not a string delimiter, unless a SQL
# word follows it (`admin'or'1'='1`); `\u2019` is the typographic apostrophe of real prose.
_APOSTROPHE = re.compile(
    r"(?<=[^\W\d_])'(?=[^\W\d_])(?!(?:or|and|xor|union|select|having|order|group|like|rlike|regexp|div|is|in|not"
    r"|into|from|where|limit|procedure|waitfor|exec|execute|sleep|benchmark|waitfor)\b)"
)
# A shell word is a command only in command position: first in its field, or after a shell separator;
# elsewhere ("the echo of", "/v1/echo", "cat food") it is a plain word or a noun naming a command.
_COMMAND_AFTER = frozenset(("", ";", "|", "&", "&&", "||", "`", "$(", "$((", "\n"))


def _table(cls: str, *words: str) -> dict[str, int]:
    return {w: C[cls] for w in words}


WORDS: dict[str, int] = {
    **_table("sql_logic", "and", "or", "xor", "not", "like", "rlike", "regexp", "between", "is", "null", "in",
             "div", "mod", "sounds", "true", "false", "exists"),
    **_table("sql_clause", "from", "where", "having", "group", "order", "by", "limit", "offset", "into", "values",
             "table", "procedure", "case", "when", "then", "else", "end", "join", "top", "all", "distinct",
             "collate", "escape", "begin", "declare"),
    **_table("sql_dml", "insert", "update", "delete", "drop", "truncate", "alter", "create", "replace", "execute",
             "merge", "grant", "revoke", "shutdown", "rename"),
    **_table("sql_time", "sleep", "benchmark", "waitfor", "delay", "pg_sleep", "dbms_pipe", "dbms_lock",
             "receive_message", "randomblob", "generate_series"),
    **_table("sql_func", "extractvalue", "updatexml", "concat", "concat_ws", "group_concat", "char", "chr", "nchar",
             "ascii", "substring", "substr", "mid", "ord", "hex", "unhex", "length", "len", "load_file", "outfile",
             "dumpfile", "version", "database", "user", "current_user", "system_user", "session_user", "schema",
             "count", "cast", "convert", "if", "ifnull", "iif", "isnull", "coalesce", "md5", "sha1", "elt",
             "make_set", "exp", "floor", "rand", "xp_cmdshell", "sp_executesql", "sp_password", "utl_inaddr",
             "utl_http", "xmltype", "json_keys", "instr", "char_length", "bin", "conv", "lpad", "rpad", "reverse",
             "nullif", "decode", "pg_read_file", "lo_import", "sqlite_version", "zeroblob", "glob", "row", "least",
             "greatest", "gtid_subset", "analyse", "polygon", "multipoint", "geometrycollection", "linestring",
             "json_extract", "ctxsys", "drithsx", "dbms_xdb_version", "dbms_utility", "unistr"),
    **_table("sql_meta", "information_schema", "sysobjects", "syscolumns", "sqlite_master", "all_tables",
             "user_tables", "msysaccessobjects", "dual", "sysdatabases", "master", "mysql", "schemata",
             "table_name", "column_name", "table_schema", "tables", "columns"),
    **_table("sql_union", "union"),
    **_table("sql_select", "select"),
    **_table("jndi", "jndi"),
    **_table("tpl_gadget", "getclass", "forname", "getruntime", "processbuilder", "newinstance", "classloader",
             "popen", "subprocess", "lipsum", "cycler", "joiner", "freemarker", "velocity", "ognl", "getenv",
             "getdeclaredmethod", "scriptengine", "nashorn", "getmethod", "invoke", "exec", "system", "passthru",
             "shell_exec", "proc_open", "runtime", "getattribute", "mro", "subclasses", "globals", "builtins",
             "import", "require", "child_process", "spawn", "execsync", "templateclassresolver",
             "objectconstructor", "setattr", "getattr"),
    **_table("js_sink", "alert", "prompt", "confirm", "eval", "fromcharcode", "atob", "settimeout", "setinterval",
             "constructor", "execscript", "expression", "innerhtml", "outerhtml", "srcdoc", "document", "cookie",
             "write", "writeln", "domain", "location", "localstorage", "fetch", "xmlhttprequest", "importscripts",
             "function", "prototype", "print", "window", "top", "parent", "frames", "globalthis", "src", "href",
             "xlink", "formaction", "dynsrc", "lowsrc", "style", "background", "javascript"),
    **_table("shell_strong", "whoami", "uname", "wget", "curl", "ncat", "netcat", "nc", "bash", "zsh", "ksh",
             "powershell", "chmod", "ifconfig", "ipconfig", "nslookup", "busybox", "sudo", "crontab", "xterm",
             "telnet", "socat", "perl", "python", "python3", "ruby", "php", "sh", "cmd", "systeminfo", "tasklist",
             "net1", "certutil", "bitsadmin", "mshta", "rundll32", "regsvr32", "wmic", "xxd", "base64", "hostname",
             "tftp", "chown", "mkfifo", "nohup", "awk", "sed", "xargs", "dig", "ifs", "usr", "bin"),
    **_table("shell_weak", "cat", "ls", "id", "echo", "ping", "rm", "cp", "mv", "touch", "kill", "env", "dir",
             "type", "more", "head", "tail", "pwd", "ps", "set", "export", "printf", "grep", "find", "net", "ver",
             "time", "exit", "cd", "mkdir", "which", "uid", "gid", "whoami"),
    **_table("path_sensitive", "passwd", "shadow", "htaccess", "htpasswd", "id_rsa", "system32", "win", "boot",
             "proc", "etc", "bash_history", "authorized_keys", "web", "inetpub", "wwwroot", "windows", "winnt",
             "hosts", "issue", "environ", "cmdline", "root", "var", "tmp", "dev", "tcp"),
    **_table("scan_path", "wp", "phpmyadmin", "xmlrpc", "phpinfo", "actuator", "cgi", "adminer", "jmx",
             "webdav", "solr", "jenkins", "wls", "owa", "autodiscover", "elmah", "trace", "axd", "server_status",
             "phpunit", "vendor", "manager", "wordpress", "joomla", "drupal", "magento", "install", "setup",
             "backup", "dump", "debug", "console", "shell", "webshell", "c99", "r57", "phpmyadmin2", "myadmin",
             "pma", "admin", "administrator", "config", "configuration", "secrets", "credentials"),
    **_table("internal_host", "localhost", "metadata", "internal", "instance", "burpcollaborator", "oastify",
             "interactsh", "requestbin", "ngrok", "dnslog", "xip", "nip", "localtest", "lvh", "kubernetes"),
    **_table("scanner", "sqlmap", "nikto", "nmap", "masscan", "acunetix", "netsparker", "burp", "burpsuite",
             "dirbuster", "gobuster", "wpscan", "zgrab", "nessus", "openvas", "w3af", "arachni", "havij", "hydra",
             "zaproxy", "nuclei", "ffuf", "wfuzz", "whatweb", "jaeles", "qualys", "commix", "xsstrike", "dirsearch",
             "fimap", "sqlninja", "bbqsql", "jbrofuzz", "paros", "webinspect", "appscan", "skipfish", "wapiti",
             "morfeus", "zmeu", "censys", "interactsh", "nmap", "feroxbuster", "xsser", "tplmap", "nosqlmap"),
    **_table("ldap_attr", "objectclass", "userpassword", "samaccountname", "objectcategory", "memberof",
             "distinguishedname", "cn", "ou", "dc", "sn", "givenname", "uidnumber"),
    **_table("xpath_func", "text", "node", "position", "last", "comment", "descendant", "ancestor", "child",
             "following", "preceding", "self", "contains", "translate", "boolean", "number", "string"),
    **_table("deser", "stdclass", "rce", "gadget", "ysoserial", "objectinputstream", "serializable",
             "typenamehandling", "objectdataprovider", "jdbcrowsetimpl", "templatesimpl", "invokertransformer",
             "commonscollections", "readobject", "yaml", "unserialize", "pickle", "marshal", "cpickle",
             "reduce", "apply", "ruby", "erb", "activesupport", "xstream", "hessian", "fastjson", "jackson"),
}
EVENTS = frozenset((
    "error", "load", "click", "dblclick", "mouseover", "mouseout", "mouseenter", "mouseleave", "mousedown",
    "mouseup", "mousemove", "mousewheel", "focus", "focusin", "focusout", "blur", "change", "input", "submit",
    "reset", "select", "keydown", "keyup", "keypress", "toggle", "animationstart", "animationend",
    "animationiteration", "transitionend", "transitionstart", "transitionrun", "transitioncancel", "begin", "end",
    "pointerover", "pointerdown", "pointerup", "pointerenter", "pointerleave", "pointermove", "pointerout",
    "scroll", "resize", "unload", "beforeunload", "hashchange", "pageshow", "pagehide", "popstate", "message",
    "copy", "cut", "paste", "drag", "dragstart", "dragend", "dragenter", "dragleave", "dragover", "drop",
    "contextmenu", "wheel", "play", "playing", "pause", "ended", "canplay", "loadstart", "loadeddata",
    "loadedmetadata", "progress", "seeked", "seeking", "timeupdate", "volumechange", "waiting", "abort",
    "afterprint", "beforeprint", "auxclick", "beforeinput", "search", "show", "invalid", "readystatechange",
    "start", "finish", "bounce", "touchstart", "touchend", "touchmove", "webkitanimationstart", "securitypolicyviolation",
    "storage", "online", "offline", "durationchange", "emptied", "stalled", "suspend", "ratechange", "selectstart",
    "selectionchange", "activate", "beforeactivate", "filterchange", "propertychange", "datasetchanged", "repeat",
))
DANGER_TAGS = frozenset((
    "script", "img", "svg", "iframe", "frame", "frameset", "object", "embed", "applet", "video", "audio", "source",
    "details", "marquee", "math", "style", "link", "meta", "form", "input", "textarea", "base", "isindex", "body",
    "html", "xss", "animate", "set", "image", "template", "portal", "select", "keygen", "button", "a", "svg",
    "foreignobject", "use", "handler", "listener", "xml", "import", "bgsound", "layer", "ilayer", "dialog",
    "noscript", "noembed", "title", "plaintext", "xmp", "table", "td", "div", "span", "animatetransform",
))
JS_SCHEMES = frozenset(("javascript", "vbscript", "livescript", "data", "mocha", "jscript"))
RARE_SCHEMES = frozenset((
    "file", "gopher", "dict", "ftp", "ldap", "ldaps", "rmi", "dns", "iiop", "corba", "nis", "nds", "jar", "php",
    "expect", "phar", "zip", "netdoc", "tftp", "sftp", "ssh2", "ogg", "glob", "jdbc", "ws", "wss", "smb",
    "telnet", "ssh", "redis", "mysql", "postgres", "mongodb", "rtsp", "compress", "input", "filter", "res",
))
WEB_SCHEMES = frozenset(("http", "https"))
EXTENSIONS = frozenset((
    "php", "php3", "php4", "php5", "php7", "phtml", "asp", "aspx", "jsp", "jspx", "cgi", "pl", "exe", "dll", "bat",
    "ps1", "sql", "ini", "conf", "cfg", "log", "inc", "sh", "py", "rb", "war", "jar", "bak", "old", "swp", "config",
    "htaccess", "htpasswd", "env", "git", "svn", "ds_store", "aws", "ssh", "idea", "yml", "yaml", "xml", "sqlite",
    "db", "mdb", "passwd", "shadow", "cmd", "vbs", "hta", "dmp", "pem", "key", "kdbx",
))
HEADER_WORDS = frozenset((
    "set", "location", "content", "refresh", "host", "x", "access", "transfer", "http", "cookie", "link",
    "cache", "connection", "upgrade", "referer", "authorization",
))
NOSQL_OPS = frozenset((
    "ne", "eq", "gt", "gte", "lt", "lte", "in", "nin", "regex", "where", "exists", "expr", "or", "and", "not",
    "nor", "elemmatch", "function", "accumulator", "lookup", "options", "size", "all", "type", "mod", "text",
    "jsonschema",
))
PUNCT: dict[str, int] = {
    "\n": C["newline"], "'": C["single_quote"], '"': C["double_quote"], "`": C["backtick"], ";": C["semicolon"],
    "(": C["lparen"], ")": C["rparen"], ",": C["comma"], "=": C["equals"], "<": C["lt"], ">": C["gt"],
    "|": C["pipe"], "&": C["amp"], "{": C["lbrace"], "}": C["rbrace"], "[": C["lbracket"], "]": C["rbracket"],
    "/": C["slash"], "\\": C["backslash"], ":": C["colon"], ".": C["dot"], "*": C["star"], "+": C["plus"],
    "-": C["minus"], "%": C["percent"], "@": C["at"], "?": C["question"], "!": C["bang"], "^": C["caret"],
    "~": C["tilde"], "$": C["dollar"], "\u2019": C["apostrophe"], "#": C["sql_comment"], "--": C["sql_comment"], "/*": C["comment_open"],
    "*/": C["comment_close"], "${": C["dollar_brace"], "$(": C["dollar_paren"], "$((": C["dollar_paren"],
    "{{": C["tpl_open"], "{%": C["tpl_open"], "{#": C["tpl_open"], "<%": C["tpl_open"], "<%=": C["tpl_open"],
    "#{": C["tpl_open"], "[[": C["tpl_open"], "}}": C["tpl_close"], "%}": C["tpl_close"], "#}": C["tpl_close"],
    "%>": C["tpl_close"], "]]": C["tpl_close"], "<!": C["xml_decl"], "<?": C["xml_decl"], "&&": C["shell_and"],
    "||": C["shell_and"], "==": C["compare"], "!=": C["compare"], "<>": C["compare"], ">=": C["compare"],
    "<=": C["compare"], "=~": C["compare"], "::-": C["lookup_default"], ":-": C["lookup_default"],
    "://": C["scheme_sep"], "*)": C["ldap_attr"], ")(": C["ldap_attr"],
}
_INTERNAL_PREFIXES = ("127.", "10.", "192.168.", "169.254.", "0.", "100.100.100.200",
                      *(f"172.{n}." for n in range(16, 32)))
_WORD, _LONG_WORD, _NUMBER = C["word"], C["long_word"], C["number"]
_LT, _DOT, _DOLLAR, _NEWLINE, _AMP, _PERCENT = C["lt"], C["dot"], C["dollar"], C["newline"], C["amp"], C["percent"]
_SHELL_STRONG, _SHELL_WEAK, _CMD_WORD = C["shell_strong"], C["shell_weak"], C["cmd_word"]
_TAG_OPENERS = frozenset(("<", "</"))


def _word(token: str) -> int:
    found = WORDS.get(token)
    if found is not None:
        return found
    if token.startswith("__") and token.endswith("__") and len(token) > 4:
        return C["py_dunder"]
    if token.startswith("on") and token[2:] in EVENTS:
        return C["event_handler"]
    if token.startswith(("ro0ab", "aced000")):
        return C["deser"]
    if token.startswith(("pg_", "dbms_", "utl_", "sys_", "xp_", "sp_")):
        return C["sql_func"]
    return _LONG_WORD if len(token) > 24 else _WORD


def _number(token: str) -> int:
    if token.count(".") == 3:
        if token.startswith(_INTERNAL_PREFIXES):
            return C["internal_host"]
        return C["ipv4"]
    return _NUMBER


def _context_free(token: str) -> int:
    """The class of a lexeme on its own; `classes` adjusts it by the lexeme before it where that matters."""
    cls = PUNCT.get(token)
    if cls is not None:
        return cls
    first = token[0]
    if first.isalpha() or first == "_":
        return _word(token)
    if first.isdigit():
        return C["hex_number"] if token.startswith("0x") else _number(token)
    if ".." in token:
        return C["path_up"]
    if first == "&":
        return C["entity_ref"]
    return C["other"]


# Lexemes whose class can depend on the one before: a word after one of these, a shell word anywhere, a
# colon (a URL scheme re-classes the word before it). Every other lexeme's class is its context-free one.
_CONTEXT_BEFORE = frozenset(("<", "</", "/", ".", "$", "%", "\n"))
_SCHEME_COLONS = frozenset((":", "://"))
_SHELL = frozenset((_SHELL_WEAK, _SHELL_STRONG))
# Every lexeme whose context-free class is negative (a shell word, a scheme colon: `_context_free` gives a
# shell class only to a `WORDS` entry) or that sets the next one's context; a test holds it to that.
_TRIGGERS = frozenset((*_CONTEXT_BEFORE, *_SCHEME_COLONS, *(w for w, c in WORDS.items() if c in _SHELL)))
_KNOWN: dict[str, int] = {}  # lexeme -> context-free class, or -class when it needs its context
_KNOWN_MAX = 65536
_KNOWN_CHARS = 48  # longer lexemes (rare: hashes, base64 runs) are classified each time, not kept


# The lexemes of text without a line break whose only non-ASCII character may be the typographic
# apostrophe (most values): no lexeme spans a blank, so the text is split at blanks (`str.split` and the
# pattern's `\s` use the same definition of a blank) and a chunk of letters is a word as it stands; only
# the other chunks go through the pattern, compiled for ASCII (inside a chunk, where no blank is, its
# classes match what the Unicode ones match). A property test holds the two ways equal.
_CHUNK_LEXEME = re.compile(LEXEME.pattern.replace(r"[^\W\d_]\w*", r"[a-zA-Z][a-zA-Z0-9_]*", 1), re.ASCII)

_CHUNKS: dict[str, tuple[str, ...]] = {}  # a blank-free chunk -> its lexemes (chunks repeat as words do)


def lexemes(text: str) -> list[str]:
    """`LEXEME.findall(text)`: the lexemes of `text`, blanks skipped."""
    if "\n" in text or not (text.isascii() or text.replace("\u2019", "").isascii()):
        return LEXEME.findall(text)
    chunks = text.split()
    found = list(map(_CHUNKS.get, chunks))
    if not all(found):  # every chunk has a lexeme: only unseen chunks are missing
        for i, lexed in enumerate(found):
            if lexed is None:
                chunk = chunks[i]
                lexed = found[i] = (chunk,) if chunk.isalpha() else tuple(_CHUNK_LEXEME.findall(chunk))
                if len(chunk) <= _KNOWN_CHARS:
                    if len(_CHUNKS) >= _KNOWN_MAX:
                        _CHUNKS.clear()
                    _CHUNKS[chunk] = lexed
    return list(chain.from_iterable(found))  # type: ignore[arg-type]  # filled: no None is left


def python_classes(text: str) -> list[int]:
    """Token classes (1-based indexes into `NAMES`) of normalised text; blanks are skipped.

    The definition of `classes`, which is the compiled scanner's (`scanner.pyx`) when it is built.

    Lexemes repeat (words of a language, punctuation), so each one's context-free class is looked up
    in a bounded table (all at once); only a lexeme that follows a context-setting one, or that is
    itself context-dependent, goes through the rules (`_in_context`), in order: a rule reads the
    classes before it and may re-class the one just before, never a later one."""
    if "'" in text:
        text = _APOSTROPHE.sub("\u2019", text)
    tokens = lexemes(text)
    known = _KNOWN
    out: list[int] = list(map(known.get, tokens))  # type: ignore[arg-type]  # its Nones are filled below
    if not all(out):  # classes are never 0: only unseen lexemes are missing
        for i, cls in enumerate(out):
            if cls is None:
                token = tokens[i]
                cls = _context_free(token)
                if cls in _SHELL or token in _SCHEME_COLONS:
                    cls = -cls
                if len(token) <= _KNOWN_CHARS:
                    if len(known) >= _KNOWN_MAX:
                        known.clear()
                    known[token] = cls
                out[i] = cls
    # The lexemes that make a class depend on context (`_TRIGGERS`: one that sets the next lexeme's
    # context, or one whose own class is negative) found in one C-level pass, then the positions they
    # touch taken in order.
    after: list[int] = []
    for j in compress(range(len(tokens)), map(_TRIGGERS.__contains__, tokens)):
        if out[j] < 0:
            after.append(j)
        if tokens[j] in _CONTEXT_BEFORE:
            after.append(j + 1)
    if after:
        if len(after) > 1:
            after = sorted(set(after))
        for i in after:
            if i < len(out):
                out[i] = _in_context(tokens[i], abs(out[i]), tokens[i - 1] if i else "", out, i)
    return out


def _in_context(token: str, cls: int, previous: str, out: list[int], i: int) -> int:
    """The class of `token` (context-free class `cls`) at position `i`, after `previous`; may re-class
    `out[i - 1]` (the classes before `i` are final, the ones after are not read)."""
    if token in PUNCT:
        if token in _SCHEME_COLONS and i > 0 and previous:
            # A scheme is only known once its colon is seen: re-class the word before it.
            if previous in JS_SCHEMES:
                out[i - 1] = C["js_scheme"]
            elif previous in RARE_SCHEMES:
                out[i - 1] = C["rare_scheme"]
            elif previous in WEB_SCHEMES:
                out[i - 1] = C["web_scheme"]
        return cls
    first = token[0]
    if not (first.isalpha() or first == "_"):
        return cls
    if (cls == _SHELL_WEAK or cls == _SHELL_STRONG) and previous not in _COMMAND_AFTER:
        cls = _CMD_WORD if cls == _SHELL_STRONG and previous != "/" else (
            _SHELL_STRONG if cls == _SHELL_STRONG else _WORD)
    if previous in _TAG_OPENERS or previous == "/" and i > 1 and out[i - 2] == _LT:
        cls = C["html_danger_tag"] if token in DANGER_TAGS else C["html_tag"]
    elif previous == "." and token in EXTENSIONS:
        cls = C["file_ext"]
    elif previous == "$":
        cls = C["nosql_op"] if token in NOSQL_OPS else C["shell_var"]
    elif previous == "%" and token.isalnum():
        cls = C["shell_var"]
    elif previous == "\n" and token in HEADER_WORDS:
        cls = C["crlf_header"]
    return cls


# The compiled scanner, when built (`make setup` builds it): the same classes for every string, held to
# `python_classes` by property tests, for a tenth of the instructions. It implements `LEXEME` and
# `_APOSTROPHE` as written here and refuses others; the tables it reads from this module.
try:
    from screening.scanner import Scanner
except ImportError:  # a checkout that was not built; the tests fail on it (test_scanner.py)
    classes = python_classes
else:
    classes = Scanner(
        lexeme=LEXEME.pattern, apostrophe=_APOSTROPHE.pattern, classes=C, words=WORDS, punct=PUNCT,
        events=EVENTS, danger_tags=DANGER_TAGS, js_schemes=JS_SCHEMES, rare_schemes=RARE_SCHEMES,
        web_schemes=WEB_SCHEMES, extensions=EXTENSIONS, header_words=HEADER_WORDS, nosql_ops=NOSQL_OPS,
        command_after=_COMMAND_AFTER, context_before=_CONTEXT_BEFORE, scheme_colons=_SCHEME_COLONS,
        tag_openers=_TAG_OPENERS, internal_prefixes=_INTERNAL_PREFIXES,
    ).classes
