"""Benign text: human-written prose and technical writing, and realistic generated values.

- fortunes (Debian `fortunes`, `fortunes-min`; BSD-style licence): quotations and jokes, written by
  people, full of apostrophes, quotes and punctuation.
- Debian documentation (`/usr/share/doc/<pkg>/` README, NEWS, changelog, FAQ of a pinned list of
  packages, each under its own licence, mostly GPL/BSD/MIT): technical English with code fragments,
  option names, paths, versions, e-mail addresses and URLs.
- Python's standard library documentation (`pydoc` text of pinned stdlib modules; PSF licence):
  docstrings with code, SQL (`sqlite3`), HTML (`html`), shell and regular expressions used innocently.
- words (Debian `wamerican`; public domain SCOWL list): single words, as search terms and tags.
- Faker (MIT): names (O'Brien, D'Angelo), addresses, e-mails, URLs, user agents, phone numbers,
  companies, dates, ISBNs, free text, in a few locales.

Chunks are sentences, lines or short paragraphs of 1 to 400 characters, sampled with a seeded RNG.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import pydoc
import random
import re
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from screening.corpus import Sample

FORTUNES = Path("/usr/share/games/fortunes")
DOCS = Path("/usr/share/doc")
WORDS = Path("/usr/share/dict/words")
DOC_PACKAGES = (
    "apt", "bash", "coreutils", "gzip", "tar", "sed", "grep", "findutils", "dpkg", "libc6", "openssl", "curl", "git",
    "perl", "python3", "make", "wget", "less", "vim", "gnupg", "libsqlite3-0", "sqlite3", "libxml2", "procps",
    "util-linux", "systemd", "man-db", "ca-certificates",
)
STDLIB_MODULES = (
    "sqlite3", "html", "html.parser", "json", "re", "os", "os.path", "shutil", "subprocess", "urllib.parse",
    "http.client", "http.cookies", "email.message", "string", "textwrap", "logging", "argparse", "csv", "datetime",
    "pathlib", "collections", "itertools", "functools", "xml.etree.ElementTree", "base64", "hashlib", "secrets",
    "shlex", "glob", "fnmatch", "tempfile", "zipfile", "tarfile", "configparser", "smtplib", "socket", "ssl",
    "asyncio", "decimal", "fractions", "statistics", "random", "unittest", "doctest", "difflib", "calendar",
    "locale", "gettext", "sched", "queue", "threading", "typing", "dataclasses", "enum", "contextlib", "abc",
)
_ADDRESS = re.compile(r"0x[0-9a-f]{8,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _chunks(text: str, rng: random.Random) -> Iterator[str]:
    """Sentences, lines and short paragraphs of a text, as a user would paste or type them."""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph or len(paragraph) > 4000:
            continue
        mode = rng.random()
        if mode < 0.3 and len(paragraph) <= 400:
            yield paragraph
        elif mode < 0.6:
            for line in paragraph.splitlines():
                if 3 <= len(line.strip()) <= 300:
                    yield line.strip()
        else:
            for sentence in _SENTENCE.split(" ".join(paragraph.split())):
                if 3 <= len(sentence) <= 400:
                    yield sentence


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", "replace")


def fortunes(rng: random.Random, limit: int = 6000) -> Iterator[Sample]:
    if not FORTUNES.is_dir():
        return
    out: list[str] = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or not path.is_file() or path.name.startswith("."):
            continue
        for entry in _read_text(path).split("\n%\n"):
            entry = entry.strip()
            if 3 <= len(entry) <= 400:
                out.append(entry if rng.random() < 0.5 else " ".join(entry.split()))
    rng.shuffle(out)
    for i, text in enumerate(out[:limit]):
        yield Sample(text, 0, "prose", "fortunes", f"fortunes:{i}")


def docs(rng: random.Random, limit: int = 7000) -> Iterator[Sample]:
    out: list[str] = []
    for package in DOC_PACKAGES:
        folder = DOCS / package
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            name = path.name.lower()
            if path.is_file() and name.startswith(("readme", "news", "changelog", "faq", "todo", "changes")):
                try:
                    text = _read_text(path)
                except OSError:
                    continue
                out.extend(list(_chunks(text[:200_000], rng)))
    rng.shuffle(out)
    for i, text in enumerate(out[:limit]):
        yield Sample(text, 0, "docs", "debian-docs", f"docs:{i}")


def stdlib_docs(rng: random.Random, limit: int = 6000) -> Iterator[Sample]:
    out: list[str] = []
    for module in STDLIB_MODULES:
        try:
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                text = pydoc.render_doc(module, renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        except (ImportError, pydoc.ErrorDuringImport):
            continue
        text = _ADDRESS.sub("0x7f0000000000", text)  # object addresses differ from run to run
        out.extend(list(_chunks(text[:150_000], rng)))
    rng.shuffle(out)
    for i, text in enumerate(out[:limit]):
        yield Sample(text, 0, "docs", "python-docs", f"pydoc:{i}")


def words(rng: random.Random, limit: int = 4000) -> Iterator[Sample]:
    if not WORDS.exists():
        return
    vocabulary = [w for w in WORDS.read_text("utf-8", "replace").split() if w]
    for i in range(limit):
        n = rng.choice((1, 1, 1, 2, 2, 3, 4))
        yield Sample(" ".join(rng.choice(vocabulary) for _ in range(n)), 0, "words", "wamerican", f"words:{i}")


def faker_values(rng: random.Random, limit: int = 8000) -> Iterator[Sample]:
    from faker import Faker  # training-only dependency

    fake = Faker(["en_US", "en_GB", "en_IE", "fr_FR", "de_DE", "it_IT", "es_ES", "ja_JP"])
    fake.seed_instance(rng.randrange(1 << 30))
    # Dates from a fixed range: Faker's defaults are relative to today, which would make builds differ.
    start, end = dt.datetime(2000, 1, 1), dt.datetime(2025, 12, 31)
    makers = (
        fake.name, fake.name, fake.last_name, fake.address, fake.email, fake.url, fake.user_agent, fake.phone_number,
        fake.company, fake.job, fake.catch_phrase, fake.sentence, fake.paragraph, fake.street_address, fake.city,
        fake.isbn13, lambda: fake.date_time_between(start, end).isoformat(), fake.uuid4, fake.ipv4_public,
        fake.file_path, fake.uri, fake.slug, fake.currency_code, fake.color_name, fake.domain_name, fake.user_name,
        fake.password, fake.sha1, lambda: fake.date_between(start.date(), end.date()).isoformat(),
        lambda: fake.date_time_between(start, end).strftime("%H:%M:%S"), fake.postcode, fake.country, fake.bs,
        fake.mime_type,
    )
    irish = ("O'Brien", "O'Connor", "D'Angelo", "O'Neill", "McDonald's", "L'Oréal", "D'Arcy", "O'Hara")
    for i in range(limit):
        if rng.random() < 0.05:
            text = f"{fake.first_name()} {rng.choice(irish)}"
        else:
            text = str(rng.choice(makers)())
        yield Sample(text, 0, "values", "faker", f"faker:{i}")


def tricky(rng: random.Random) -> Iterator[Sample]:
    """Innocent text that rules-based filters misread: SQL and HTML words, quotes, shell-like punctuation."""
    texts = (
        "select specialty hospital", "Drop me a line when you're free", "union station, platform 4",
        "Please delete my account and all associated data", "I'd like to update my shipping address",
        "Order by Friday, or else it'll ship next week", "1=1 is always true in boolean logic",
        "Use <b>bold</b> sparingly", "x < y and y > z", "Tom & Jerry", "rock 'n' roll", "She said \"hello\" -- twice",
        "C:\\Users\\Public\\Documents", "../relative/path/in/docs.md", "SELECT your seat below",
        "Insert coin to continue", "where are you from?", "Alert: your package has shipped!",
        "javascript tutorials for beginners", "What does 'cat /etc/hosts' print?", "rm -rf is dangerous, never run it",
        "The script tag goes in the head", "email me at jane.o'brien@example.com", "Price: $5 (was $10)",
        "50% off; today only!", "#hashtag @mention", "{{name}} is a Mustache placeholder in our email template",
        "${HOME}/bin is on my PATH", "error: file not found", "sleep 8 hours, drink water",
        "The <script> element embeds executable code", "a || b && c", "Let's meet at 7 -- or later",
    )
    for i, text in enumerate(texts):
        for variant in (text, text.upper(), text.lower()):
            yield Sample(variant, 0, "tricky", "portcullis-benign", f"tricky:{i}")


_PHRASES = (
    "{name} & {name2}", "{company} & Sons", "{last} & {last2} LLP", "Tom & Jerry, {name}'s favourite",
    "{irish_name}, {sql_word} specialty hospital", "{name} wants to {sql_word} the {noun} from the list",
    "Please {sql_word} my {noun} by {day}", "Can I {sql_word} the {noun}? Thanks, {irish_name}",
    "{sql_word} {noun} where possible", "{irish_name} said: \"I'll {sql_word} it tomorrow\"",
    "Order #{n} from {company} & Co.", "Ben & Jerry's {noun}", "R&D team, {city} office",
    "{irish_name} & {irish_name2}", "I can't {sql_word} {noun} or {noun2} today", "It's {name}'s turn to {sql_word}",
    "{name} (aka '{nick}') joined {company}", "The {html_word} of the {noun} is broken", "{html_word} & {html_word2}",
    "{name}'s {noun} - {sql_word} from {city}", "Meet me at {city} union station at {hour}",
    "{sql_word} and {sql_word2} are both buttons in the {noun} form",
    "{name} wrote: \"{sql_word} one, {sql_word2} the other\"", "Q&A with {name}, {job}",
    "AT&T bill for {month}", "{company} (formerly {company2}) - {city}", "Sales & Marketing: {name}",
    "Don't {sql_word} the {noun}; {name} needs it", "{n} < {n2} but {n3} > {n2}", "{name} <{email}>",
    "Hi {first}, the {noun} is {adj} & {adj2}!", "Where's {irish_name}'s {noun}?", "{nick}'s {noun} -- {adj} edition",
    "Select {noun} or {noun2} in the menu", "Drop-off at {street}, {city}", "{name}: 'yes' or 'no'?",
)
_SQL_WORDS = ("select", "drop", "union", "insert", "update", "delete", "order", "group", "join", "exec", "create",
              "alter", "truncate", "grant", "declare", "having", "merge", "replace", "sleep", "cast", "table", "where")
_HTML_WORDS = ("script", "image", "form", "style", "frame", "link", "body", "title", "input", "button", "object",
               "alert", "prompt", "document", "window", "cookie", "source", "video", "template")
_NOUNS = ("order", "table", "account", "cookie", "file", "report", "password", "shelf", "book", "script", "record",
          "user", "group", "union", "list", "cart", "window", "invoice", "ticket", "column", "index", "schema")


def phrases(rng: random.Random, limit: int = 3000) -> Iterator[Sample]:
    """Innocent sentences built from templates and Faker names: ampersands (Tom & Jerry, AT&T),
    apostrophes (O'Brien, it's), SQL and HTML words used as English. The hand-written `tricky`
    sentences are their test; these are the training counterpart, so the model learns that such words
    alone are not an attack."""
    from faker import Faker  # training-only dependency

    fake = Faker(["en_US", "en_GB", "en_IE"])
    fake.seed_instance(rng.randrange(1 << 30))
    irish = ("O'Brien", "O'Connor", "D'Angelo", "O'Neill", "D'Arcy", "O'Hara", "O'Sullivan", "L'Estrange")
    for i in range(limit):
        words = {
            "name": fake.name(), "name2": fake.name(), "first": fake.first_name(), "last": fake.last_name(),
            "last2": fake.last_name(), "company": fake.company(), "company2": fake.company(), "city": fake.city(),
            "irish_name": f"{fake.first_name()} {rng.choice(irish)}", "irish_name2": rng.choice(irish),
            "sql_word": rng.choice(_SQL_WORDS), "sql_word2": rng.choice(_SQL_WORDS), "noun": rng.choice(_NOUNS),
            "noun2": rng.choice(_NOUNS), "html_word": rng.choice(_HTML_WORDS), "html_word2": rng.choice(_HTML_WORDS),
            "day": fake.day_of_week(), "month": fake.month_name(), "n": str(rng.randint(1, 9999)),
            "n2": str(rng.randint(1, 99)), "n3": str(rng.randint(100, 999)), "hour": f"{rng.randint(1, 12)}pm",
            "nick": fake.user_name(), "job": fake.job(), "email": fake.email(), "adj": fake.color_name(),
            "adj2": rng.choice(("cheap", "late", "new", "broken", "fine")), "street": fake.street_address(),
        }
        text = rng.choice(_PHRASES).format(**words)
        case = rng.random()
        text = text.upper() if case < 0.1 else text.lower() if case < 0.25 else text
        yield Sample(text, 0, "phrases", "portcullis-benign", f"phrases:{i}")
