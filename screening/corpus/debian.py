"""Attack payload lists read out of Debian packages, fetched with `apt-get download` into a local cache.

Like the PyPI wheels (`packages.py`), a package is never installed: its `.deb` is downloaded once
(`apt-get download NAME=VERSION`, no root needed), its data archive is read with `dpkg-deb
--fsys-tarfile`, and only the word lists are used.

- wfuzz 3.1.0-2 (GPL-2): `/usr/share/wfuzz/wordlist/`: `Injections/{SQL,XSS,Traversal,XML}.txt`,
  `vulns/sql_inj.txt`, `vulns/dirTraversal*.txt` and the other `vulns/*.txt` (paths scanners probe
  on known servers: CGI, IIS, Tomcat, WebLogic, ...). An independent source, written by other people
  than sqlmap's, wapiti's or dirsearch's authors, of SQL injection, XSS, traversal, XXE and scanner
  probes. Entries too short to be an attack on their own (a lone quote, `--`, a bare SQL word) are
  skipped: as training attacks they would teach the model that an apostrophe is one.
"""

from __future__ import annotations

import io
import random
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

from screening.corpus import Sample
from screening.corpus.packages import _SENSITIVE

DEBS = {"wfuzz": "3.1.0-2"}
LICENCES = {"wfuzz": "GPL-2.0"}
_WORDLIST = "./usr/share/wfuzz/wordlist/"
_SHORT = re.compile(r"^\W{0,3}\w*\W{0,3}$")  # `'`, `--`, `insert`, `%00`: not an attack by itself
_PROBE = re.compile(r"\.\.|%[0-9a-f]{2}|\.(?:pl|cgi|exe|bat|dll|ini|asp|cfm|jsp|nsf|php)\b", re.IGNORECASE)
_FILES = ("etc/passwd", "etc/shadow", "etc/hosts", "boot.ini", "windows/win.ini", "proc/self/environ")


def deb(cache: Path, name: str) -> Path:
    """The cached `.deb` of a pinned Debian package, downloaded once with apt (never installed)."""
    version = DEBS[name]
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}_{version}_*.deb"))
    if not found:
        done = subprocess.run(["apt-get", "download", "-q", f"{name}={version}"], cwd=cache, check=False,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"apt-get download {name}={version} (run `apt-get update` first?): {done.stderr.strip()}")
        found = sorted(cache.glob(f"{name}_{version}_*.deb"))
    if not found:
        raise FileNotFoundError(f"{name}={version}: no .deb in {cache}")
    return found[0]


def _members(path: Path, prefix: str) -> dict[str, str]:
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True).stdout
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                handle = archive.extractfile(member)
                if handle is not None:
                    out[member.name[len(prefix):]] = handle.read().decode("utf-8", "replace")
    return out


def _entries(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not _SHORT.match(line):
            seen.setdefault(line, None)
    return list(seen)


def _xml_family(entry: str) -> str:
    lowered = entry.lower()
    if "<!entity" in lowered:
        return "xxe"
    if "script" in lowered or "javas" in lowered or "phpinfo" in lowered:
        return "xss"
    return "ldap" if "name()" in lowered or "child::" in lowered else "sqli"


def wfuzz(cache: Path, rng: random.Random, traversal_limit: int = 800, scanner_limit: int = 1200) -> Iterator[Sample]:
    lists = _members(deb(cache, "wfuzz"), _WORDLIST)
    families: dict[str, list[str]] = {"sqli": [], "xss": [], "traversal": [], "xxe": [], "ldap": [], "scanner": []}
    families["sqli"] += _entries(lists["Injections/SQL.txt"]) + _entries(lists["vulns/sql_inj.txt"])
    families["xss"] += _entries(lists["Injections/XSS.txt"])
    for entry in _entries(lists["Injections/XML.txt"]):
        families[_xml_family(entry)].append(entry)
    traversal = _entries(lists["Injections/Traversal.txt"])
    for name in sorted(lists):
        if name.startswith("vulns/dirTraversal"):
            traversal += _entries(lists[name])
        elif name.startswith("vulns/") and name != "vulns/sql_inj.txt":
            # Only probes that look like one: a sensitive name, an encoded or dotted trick, a script.
            families["scanner"] += [e for e in _entries(lists[name]) if _SENSITIVE.search(e) or _PROBE.search(e)]
    families["traversal"] = traversal
    for family, entries in families.items():
        entries = list(dict.fromkeys(entries))
        limit = {"traversal": traversal_limit, "scanner": scanner_limit}.get(family)
        if limit is not None and len(entries) > limit:
            entries = rng.sample(entries, limit)
        for entry in entries:
            location = "path" if family == "scanner" else "body" if family == "xxe" else "any"
            text = "/" + entry.lstrip("/") if family == "scanner" else entry
            text = text.replace("{FILE}", rng.choice(_FILES))
            yield Sample(text, 1, family, "wfuzz", f"wfuzz:{family}:{entry}", location)
