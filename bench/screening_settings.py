"""`Settings` of the screening benchmark (`python -m bench.screening`), read once from the environment.

Owns the knobs listed in `bench/screening.py`'s docstring, their defaults (quick or full run), and
the paragraph the report prints about them. A bad value fails at start-up with the variable named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.gateways import REPO_ROOT
from bench.settings import SettingsError, env_number, is_quick

PARTS = ("gateway", "modsec", "bigbody", "hotswap", "quality")
KNOBS = (
    "BENCH_QUICK",
    "BENCH_SCR_DUR",
    "BENCH_SCR_WARM",
    "BENCH_SCR_REPEATS",
    "BENCH_SCR_CONNS",
    "BENCH_SCR_SWAP_S",
    "BENCH_SCR_SWAP_EVERY",
    "BENCH_SCR_PARTS",
    "BENCH_QUIET_MAX",
    "BENCH_RETRIES",
    "BENCH_OUTPUT",
    "PEER_DIR",
    "MODSEC_PEER_DIR",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """What one `python -m bench.screening` run measures, and where it writes."""

    quick: bool
    dur_s: float
    warm_s: float
    repeats: int
    conns: int
    swap_s: float
    swap_every_s: float
    parts: tuple[str, ...]
    quiet_max_pct: float
    retries: int
    output: Path | None
    peer_dir: Path
    modsec_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        quick = is_quick(env)

        def number(name: str, default: float, low: float) -> float:
            return env_number(env, name, default, low)

        parts = tuple(p for p in env.get("BENCH_SCR_PARTS", ",".join(PARTS)).replace(",", " ").split())
        unknown = [p for p in parts if p not in PARTS]
        if unknown or not parts:
            raise SettingsError(f"BENCH_SCR_PARTS: unknown {unknown or 'empty'}; known: {', '.join(PARTS)}")
        output = env.get("BENCH_OUTPUT", str(REPO_ROOT / "docs" / "benchmarks.md"))
        return cls(
            quick=quick,
            dur_s=number("BENCH_SCR_DUR", 3.0 if quick else 8.0, 1),
            warm_s=number("BENCH_SCR_WARM", 1.0 if quick else 2.0, 0),
            repeats=int(number("BENCH_SCR_REPEATS", 1 if quick else 3, 1)),
            conns=int(number("BENCH_SCR_CONNS", 32, 2)),
            swap_s=number("BENCH_SCR_SWAP_S", 8.0 if quick else 20.0, 2),
            swap_every_s=number("BENCH_SCR_SWAP_EVERY", 2.0, 0.1),
            parts=parts,
            quiet_max_pct=number("BENCH_QUIET_MAX", 25.0, 0),
            retries=int(number("BENCH_RETRIES", 0 if quick else 8, 0)),
            output=None if output == "-" else Path(output),
            peer_dir=Path(env.get("PEER_DIR", "/tmp/portcullis-peers/grpc-gateway")),
            modsec_dir=Path(env.get("MODSEC_PEER_DIR", "/tmp/portcullis-peers/modsec")),
        )

    def describe(self) -> str:
        """One paragraph for the report."""
        quick = " (`BENCH_QUICK` smoke run)" if self.quick else ""
        return (
            f"{self.dur_s:g} s per cell after a {self.warm_s:g} s warm-up, {self.repeats} repeat(s){quick}, "
            "the order reversed on every other repeat; screening off and block up together and measured in "
            "pairs, one workload on both back to back (which first alternating); "
            f"wrk `-t2 -c{self.conns} --latency`; hot swap "
            f"{self.swap_s:g} s of load per repeat, a swap every {self.swap_every_s:g} s; parts "
            f"{', '.join(self.parts)}; before each cell up to 10 s of waiting for the machine to be idle, and a "
            f"cell during which others used more than {self.quiet_max_pct:g}% of a core measured once more "
            f"(the less disturbed run kept; at most {self.retries} per run)"
        )
