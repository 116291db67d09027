"""Training corpora: attack payloads read from registry packages, our own generators, benign text.

Each source yields `Sample`s (text, label, family, source, base id); `shaping` turns them into
`RequestRecord`s for the demo routes, and `screening.dataset` assembles, splits and caches them.
Provenance, licences and counts are in `screening/DATA.md`.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = (
    "sqli", "xss", "cmdi", "traversal", "ssrf", "xxe", "ssti", "ldap", "nosql", "crlf", "jndi", "deser", "scanner",
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One payload or benign text. `base` groups variants of one original, so splits never divide it."""

    text: str
    label: int  # 1 attack, 0 benign
    family: str  # an attack family, or the benign source's kind ("prose", "docs", "names", ...)
    source: str  # the package or generator it came from
    base: str
    location: str = "any"  # where the payload belongs: any, header, path, body (xxe), key (nosql)
