"""`Settings`: the benchmark's knobs, read once from the environment, then frozen.

Every knob has a default that makes `make bench` the full run of issues 2 and 3 (8 s per cell after
a 2 s warm-up, 3 repeats, 16 and 32 connections, all six scenarios, and per repeat one paired block
of the issue-3 policy scenarios at 32 connections: 2 rounds of 3 s samples, about 10 minutes);
`BENCH_QUICK=1` is the smoke test (3 s, 1 repeat, one round of 2 s samples, about two minutes).
Cells were 10 s and the idle-wait budget 90 s before the issue-3 scenarios joined the default run;
both were shortened so that the whole run stays near 10 minutes. The paired block, which replaced the
policy scenarios' own cells, took 64 s per repeat against ~58 s for those cells (its three gateways
start at once), so about 20 s more per run. A bad value fails at start-up with
the variable named. The knobs:

    BENCH_QUICK=1          smoke-test defaults for the knobs below
    BENCH_DUR              seconds measured per cell (8; quick 3)
    BENCH_WARM             seconds of warm-up before each cell (2; quick 1); a paired block warms each of
                           its gateways once per endpoint, for at most 1 s
    BENCH_REPEATS          runs of every cell, order reversed every other repeat (3; quick 1)
    BENCH_CONNS            connection counts for the gateways (16,32)
    BENCH_POLICY_CONNS     connection counts for the issue-3 paired block (32)
    BENCH_PAIR_DUR         seconds per sample in the paired block (3; quick 2): short samples close
                           together pair better than long ones; each second more adds ~40 s to the run
    BENCH_PAIRS            rounds per endpoint and repeat in the paired block; a round is one sample of
                           each policy gateway and one of the no-policy one (2; quick 1)
    BENCH_DIRECT_CONNS     connection counts for direct gRPC (16: the one the latency ratio uses)
    BENCH_PHASES           peer, portcullis (= portcullis-w1,portcullis-w2), policies (= policies-local,
                           policies-redis, each paired with its own no-policy gateway), direct (all
                           four); one scenario by its name too
    BENCH_QUIET_WAIT       run-wide budget, in s, of waits for the machine to go idle before a cell (at
                           most 10 s each), so a busy machine cannot stretch the run (60; quick 10)
    BENCH_QUIET_MAX        "idle" and "undisturbed" threshold, % of one core used by others (25)
    BENCH_RETRIES          run-wide budget of re-measurements of disturbed cells, one per cell (4; quick 0);
                           never in a paired block, where a re-measurement would break the pairs
    BENCH_OUTPUT           report file (docs/benchmarks.md)
    PEER_DIR               the peer's build folder (/tmp/portcullis-peers/grpc-gateway)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.gateways import REPO_ROOT
from bench.samples import DIRECT, PC1, PC2, PEER, POLICIES_LOCAL, POLICIES_REDIS, POLICY_SCENARIOS

# Names accepted in BENCH_PHASES, and the scenarios each one selects.
PHASE_ALIASES = {
    "peer": (PEER,),
    "grpc-gateway": (PEER,),
    "portcullis": (PC1, PC2),
    "portcullis-w1": (PC1,),
    "portcullis-w2": (PC2,),
    "policies": (POLICIES_LOCAL, POLICIES_REDIS),
    "policies-local": (POLICIES_LOCAL,),
    "policies-redis": (POLICIES_REDIS,),
    "direct": (DIRECT,),
}
ALL_SCENARIOS = (PEER, PC1, PC2, POLICIES_LOCAL, POLICIES_REDIS, DIRECT)
# The run-order unit that stands for every selected policy scenario: one paired block per repeat.
PAIRED_BLOCK = "policies"
DEFAULT_PHASES = "peer,portcullis,policies,direct"
# The environment variables above, quoted in the report's command line when set.
KNOBS = (
    "BENCH_QUICK",
    "BENCH_DUR",
    "BENCH_WARM",
    "BENCH_REPEATS",
    "BENCH_CONNS",
    "BENCH_POLICY_CONNS",
    "BENCH_PAIR_DUR",
    "BENCH_PAIRS",
    "BENCH_DIRECT_CONNS",
    "BENCH_PHASES",
    "BENCH_QUIET_WAIT",
    "BENCH_QUIET_MAX",
    "BENCH_RETRIES",
    "BENCH_OUTPUT",
    "PEER_DIR",
)


class SettingsError(ValueError):
    """A benchmark environment variable has a value we cannot use."""


def is_quick(env: Mapping[str, str]) -> bool:
    """`BENCH_QUICK` set to anything but empty, 0, false or no: the smoke-test defaults."""
    return env.get("BENCH_QUICK", "") not in ("", "0", "false", "no")


def env_number(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    """A numeric knob: `default` when unset, `SettingsError` when not a number or below `low`."""
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if value < low:
        raise SettingsError(f"{name}={raw!r}: expected at least {low:g}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    """What one `python -m bench` run measures, and where it writes."""

    quick: bool
    dur_s: float
    warm_s: float
    repeats: int
    conns: tuple[int, ...]
    policy_conns: tuple[int, ...]
    pair_dur_s: float
    pair_rounds: int
    direct_conns: tuple[int, ...]
    scenarios: tuple[str, ...]
    quiet_wait_s: float
    quiet_max_pct: float
    retries: int
    output: Path
    peer_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Read the knobs listed in the module docstring."""
        quick = is_quick(env)

        def number(name: str, default: float, low: float) -> float:
            return env_number(env, name, default, low)

        def counts(name: str, default: str) -> tuple[int, ...]:
            raw = env.get(name, "") or default
            try:
                values = tuple(int(c) for c in raw.replace(",", " ").split())
            except ValueError:
                raise SettingsError(f"{name}={raw!r}: expected numbers like 16,32") from None
            if not values or min(values) < 1:
                raise SettingsError(f"{name}={raw!r}: expected at least one connection count >= 1")
            return values

        conns = counts("BENCH_CONNS", "16,32")
        scenarios: list[str] = []
        for name in env.get("BENCH_PHASES", DEFAULT_PHASES).replace(",", " ").split():
            if name not in PHASE_ALIASES:
                raise SettingsError(
                    f"BENCH_PHASES: unknown phase {name!r}; known: {', '.join(PHASE_ALIASES)}"
                )
            scenarios += [s for s in PHASE_ALIASES[name] if s not in scenarios]
        if not scenarios:
            raise SettingsError("BENCH_PHASES: no phase selected")
        return cls(
            quick=quick,
            dur_s=number("BENCH_DUR", 3.0 if quick else 8.0, 1),
            warm_s=number("BENCH_WARM", 1.0 if quick else 2.0, 0),
            repeats=int(number("BENCH_REPEATS", 1 if quick else 3, 1)),
            conns=conns,
            policy_conns=counts("BENCH_POLICY_CONNS", "32"),
            pair_dur_s=number("BENCH_PAIR_DUR", 2.0 if quick else 3.0, 1),
            pair_rounds=int(number("BENCH_PAIRS", 1 if quick else 2, 1)),
            direct_conns=counts("BENCH_DIRECT_CONNS", "16" if 16 in conns else str(min(conns))),
            scenarios=tuple(s for s in ALL_SCENARIOS if s in scenarios),
            quiet_wait_s=number("BENCH_QUIET_WAIT", 10.0 if quick else 60.0, 0),
            quiet_max_pct=number("BENCH_QUIET_MAX", 25.0, 0),
            retries=int(number("BENCH_RETRIES", 0 if quick else 4, 0)),
            output=Path(env.get("BENCH_OUTPUT", str(REPO_ROOT / "docs" / "benchmarks.md"))),
            peer_dir=Path(env.get("PEER_DIR", "/tmp/portcullis-peers/grpc-gateway")),
        )

    def conns_for(self, scenario: str) -> tuple[int, ...]:
        """Connection counts one gateway scenario is measured at."""
        return self.policy_conns if scenario in POLICY_SCENARIOS else self.conns

    @property
    def policy_scenarios(self) -> tuple[str, ...]:
        """The selected issue-3 scenarios, measured together in the paired block."""
        return tuple(s for s in self.scenarios if s in POLICY_SCENARIOS)

    def run_order(self, repeat: int) -> tuple[str, ...]:
        """The units of one repeat: scenarios, with the policy ones as one PAIRED_BLOCK where the first
        stood; reversed on every other repeat."""
        units: list[str] = []
        for s in self.scenarios:
            unit = PAIRED_BLOCK if s in POLICY_SCENARIOS else s
            if unit not in units:
                units.append(unit)
        return tuple(units if repeat % 2 == 0 else reversed(units))

    def describe(self) -> str:
        """One paragraph for the report."""
        mode = " (`BENCH_QUICK` smoke run)" if self.quick else ""
        policy = ""
        if self.policy_scenarios:
            policy = (
                f"; the issue-3 policy scenarios in one paired block per repeat at "
                f"{', '.join(map(str, self.policy_conns))} connections: their gateways and a no-policy "
                f"`--workers 1` up together, per endpoint a warm-up of each, then {self.pair_rounds} round(s) "
                f"of {self.pair_dur_s:g} s samples in turns (B {' '.join(self.policy_scenarios)} B ..., "
                "the policies' order reversed every other round)"
            )
        return (
            f"{self.dur_s:g} s per cell after a {self.warm_s:g} s warm-up, {self.repeats} repeat(s){mode}, the "
            f"scenario order reversed on every other repeat; gateways at {', '.join(map(str, self.conns))} "
            f"connections (wrk `-t2 -cN --latency`){policy}; direct gRPC at "
            f"{', '.join(map(str, self.direct_conns))} "
            f"(h2load `-t1 -cN -m1`); scenarios {', '.join(self.scenarios)}. Before each cell the run waits up "
            f"to 10 s for the machine to be idle ({self.quiet_wait_s:g} s of such waits per run at most); a cell "
            "during which other processes used "
            f"more than {self.quiet_max_pct:g}% of a core is measured once more, keeping the less disturbed run "
            f"(at most {self.retries} such re-measurements per run, none in a paired block). Knobs: `BENCH_*`, "
            "see `bench/settings.py`."
        )
