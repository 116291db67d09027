"""`python -m bench.screening`: issue 6's speed and hot-swap benchmark, every figure in one run.

Owns the order of the run and every process it starts, all on 127.0.0.1 and stopped by PID: the
peer's Go echo backend, Portcullis `--workers 1` (policies: metrics, screening; the model is the
latest shipped `models/request-screening/<version>`), and the ModSecurity peer's nginx through its
own scripts. Per repeat, in an order reversed on every other repeat:

  off, block   Portcullis with screening `off` and with `block` (the same config otherwise), both
               up together, measured in pairs: each workload on one, then right away on the other
               (which goes first alternates by workload and repeat), so that the block ÷ off
               ratio is taken over adjacent cells, not minutes apart on a shared machine. wrk
               `-t2 -c32` on `POST /v1/echo` (a typical 315-byte JSON body; then the same
               body with a per-request counter in its message, `echo-varied`) and
               `GET /v1/items/item-1?q=hello`; then `POST /v1/echo` again while one more client
               posts 100 KB bodies back to back ("+big"). Screening's own latency comes from the
               policy's histogram `portcullis_screening_duration_seconds` on the admin `/metrics`.
  pl0, pl1     nginx alone (`start.sh 0 PORT nginx`) and nginx + ModSecurity + CRS at paranoia
               level 1, upstream-free (the same nginx answers `return 200`), the same requests.
  swap         Portcullis in block mode on a throwaway registry of two versions; wrk at 32
               connections on `POST /v1/echo` while the admin API activates the other version
               every `BENCH_SCR_SWAP_EVERY` seconds.

Then, once, the detection-quality check (`bench/screening_quality.py`). Medians over the repeats;
CPU from `/proc` (whole process trees); "others" is the CPU of processes that are not ours, in % of
one core (the machine is shared). The section goes to stdout and into `docs/benchmarks.md` between
`<!-- screening:start -->` and `<!-- screening:end -->`, read and rewritten at the end only.

Knobs (environment): BENCH_QUICK=1 (short smoke run), BENCH_SCR_DUR seconds per cell (8; quick 3),
BENCH_SCR_WARM (2; quick 1), BENCH_SCR_REPEATS (3; quick 1), BENCH_SCR_CONNS (32),
BENCH_SCR_SWAP_S seconds of load per hot-swap run (20; quick 8), BENCH_SCR_SWAP_EVERY (2),
BENCH_SCR_PARTS (gateway,modsec,bigbody,hotswap,quality), BENCH_QUIET_MAX (25: % of a core),
BENCH_RETRIES (8; quick 0: run-wide budget of re-measurements of cells where others used more),
BENCH_OUTPUT (docs/benchmarks.md; "-" for stdout only), PEER_DIR (the grpc-gateway peer's build,
/tmp/portcullis-peers/grpc-gateway), MODSEC_PEER_DIR (/tmp/portcullis-peers/modsec).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench import loadgen
from bench.gateways import REPO_ROOT, PeerBuild, portcullis_executable
from bench.modsec import ModSecPeer
from bench.procs import ManagedProcess, StartError, Terminated, free_port, raise_on_sigterm
from bench.reporting import command_line
from bench.screening_cells import BigClient, Quiet, Sample, measure, scrape
from bench.screening_pairs import MODES, pair_order
from bench.screening_quality import run as run_quality
from bench.screening_quality import sample as quality_sample
from bench.screening_report import BIG_PROBES, Report, render, write_section
from bench.screening_requests import (
    ATTACK,
    BIG,
    ECHO,
    ITEM,
    MODEL,
    WORKLOADS,
    Workload,
    check,
    screening_config,
    send,
    wrk_script,
)
from bench.screening_settings import KNOBS, Settings
from bench.screening_swap import VERSIONS, Swapper, make_registry
from bench.settings import SettingsError
from screening.registry import ModelRegistry


class Bench:
    """The run's processes and results."""

    def __init__(self, settings: Settings, run_dir: Path, backend: ManagedProcess, backend_port: int) -> None:
        self.s = settings
        self.run_dir = run_dir
        self.backend = backend
        self.backend_port = backend_port
        self.samples: list[Sample] = []
        self.problems: list[str] = []
        self.extra: dict[str, Any] = {"big_probe": {}, "swaps": [], "quality": None}
        self.retries = settings.retries
        self.quiet = Quiet(settings.quiet_max_pct, 10.0 if settings.quick else 60.0, ncpu=os.cpu_count() or 1)
        self.version = ModelRegistry(REPO_ROOT / "models").latest(MODEL)
        if self.version is None:
            raise StartError(f"no model under {REPO_ROOT / 'models' / MODEL}")

    def problem(self, text: str) -> None:
        print(f"[bench] PROBLEM: {text}", flush=True)
        self.problems.append(text)

    # --- Portcullis ----------------------------------------------------------------------------------
    def portcullis(
        self, name: str, mode: str, models_dir: Path, version: str
    ) -> tuple[ManagedProcess, int, int]:
        port, admin = free_port(), free_port()
        while admin == port:
            admin = free_port()
        config = screening_config(port, admin, self.backend_port, mode, models_dir, version)
        path = self.run_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [str(portcullis_executable()), "serve", "-c", str(path), "--workers", "1"]
        proc = ManagedProcess(name, argv, self.run_dir / f"{name}.log", cwd=REPO_ROOT).start()
        try:
            proc.wait_port(port, 60)
            proc.wait_port(admin, 30)
            errors = [e for e in (check(port, ECHO), check(port, ITEM)) if e]
            errors += [e for e in [check(port, ATTACK, 403 if mode == "block" else 200)] if e]
            if errors:
                raise StartError(f"{name}: functional check failed: {'; '.join(errors)}")
        except BaseException:
            proc.stop()
            raise
        return proc, port, admin

    def _wrk(self, workload: Workload, port: int) -> Callable[[float], loadgen.LoadResult]:
        script = wrk_script(workload, port, self.run_dir)
        return lambda secs: loadgen.run_wrk(workload.url(port), self.s.conns, secs, script)

    def gateways(self, repeat: int) -> None:
        """Screening `off` and `block` up together; every workload measured on both, back to back.

        Each block cell has its off cell right next to it (which runs first alternates by workload
        and repeat), so the throughput ratio is taken over pairs seconds apart, not minutes.
        """
        print(f"[bench] repeat {repeat + 1}: portcullis-off and portcullis-block, paired", flush=True)
        with ExitStack() as stack:
            up: dict[str, tuple[ManagedProcess, int, int]] = {}
            for mode in MODES:
                proc, port, admin = self.portcullis(
                    f"portcullis-{mode}", mode, REPO_ROOT / "models", str(self.version)
                )
                stack.enter_context(proc)
                up[mode] = (proc, port, admin)
            for i, workload in enumerate(WORKLOADS):
                for mode in pair_order(repeat, i):
                    proc, port, admin = up[mode]
                    self._cell(mode, workload, repeat, self._wrk(workload, port), proc.cpu_ticks, admin)
            if "bigbody" in self.s.parts:
                for mode in pair_order(repeat, len(WORKLOADS)):
                    proc, port, admin = up[mode]
                    self._cell(
                        mode, ECHO, repeat, self._wrk(ECHO, port), proc.cpu_ticks, admin, self._big(port)
                    )
                for mode in MODES:
                    _, port, admin = up[mode]
                    self._big_probe(mode, port, admin)
            for mode, (proc, _, _) in up.items():
                if not proc.alive():
                    raise StartError(f"portcullis-{mode} died during the run:\n{proc.log_tail()}")

    def _big(self, port: int) -> Callable[[], BigClient]:
        big_script = wrk_script(BIG, port, self.run_dir)
        return lambda: BigClient(BIG.url(port), big_script, self.s.dur_s + 2.0)

    def _cell(
        self,
        system: str,
        workload: Workload,
        repeat: int,
        load: Callable[[float], loadgen.LoadResult],
        ticks: Callable[[], Any],
        admin: int | None,
        big: Callable[[], BigClient] | None = None,
        backend: bool = True,
    ) -> Sample | None:
        def once() -> Sample:
            self.quiet.wait()
            be = self.backend if backend else None
            return measure(system, workload.name, repeat, load, self.s.dur_s, ticks, be, admin, big)

        try:
            if self.s.warm_s > 0:
                load(self.s.warm_s)
            sample = once()
            if sample.others_pct > self.s.quiet_max_pct and self.retries > 0:
                # One re-measurement per cell, from a run-wide budget; the less disturbed run is kept.
                self.retries -= 1
                print(
                    f"[bench]   others used {sample.others_pct:.0f}% of a core; measuring again", flush=True
                )
                again = once()
                sample = again if again.others_pct < sample.others_pct else sample
        except loadgen.LoadError as exc:
            self.problem(f"{system} {workload.name} repeat {repeat + 1}: {exc}")
            return None
        self.samples.append(sample)
        if sample.non2xx or sample.socket_errors or sample.big_non2xx:
            self.problem(
                f"{sample.system} {workload.name} repeat {repeat + 1}: {sample.non2xx} non-2xx, "
                f"{sample.socket_errors} socket errors, {sample.big_non2xx} failed 100 KB requests"
            )
        if sample.decisions.get("block"):
            self.problem(
                f"{sample.system} {workload.name}: {sample.decisions['block']:.0f} benign requests blocked"
            )
        return sample

    def _big_probe(self, mode: str, port: int, admin: int) -> None:
        """Lone 100 KB requests, one at a time: the gateway's wall time and screening's own time."""
        before = scrape(admin)
        times, statuses = [], set()
        for _ in range(BIG_PROBES):
            start = time.perf_counter()
            statuses.add(send(port, BIG.method, BIG.path, BIG.body).status)
            times.append(time.perf_counter() - start)
        after = scrape(admin).duration.minus(before.duration)
        self.extra["big_probe"].setdefault(mode, []).append(
            {
                "wall_ms": 1000 * statistics.median(times),
                "screening_ms": 1000 * after.mean if after.count else None,
                "statuses": sorted(statuses),
            }
        )
        if statuses != {200}:
            self.problem(f"{mode}: lone 100 KB requests answered {sorted(statuses)}")

    # --- nginx + ModSecurity ---------------------------------------------------------------------------
    def nginx(self, peer: ModSecPeer, pl: int, repeat: int) -> None:
        system = f"pl{pl}"
        print(
            f"[bench] repeat {repeat + 1}: nginx {'+ ModSecurity CRS PL1' if pl else 'alone (PL0)'}",
            flush=True,
        )
        peer.start(pl)
        try:
            # The upstream-free nginx answers {"ok":true} to everything: the status is the check.
            errors = [
                e for e in (check(peer.port, ECHO, body=False), check(peer.port, ITEM, body=False)) if e
            ]
            errors += [e for e in [check(peer.port, ATTACK, 403 if pl else 200, body=False)] if e]
            if errors:
                raise StartError(f"nginx PL{pl}: functional check failed: {'; '.join(errors)}")
            for workload in WORKLOADS:
                self._cell(
                    system,
                    workload,
                    repeat,
                    self._wrk(workload, peer.port),
                    peer.cpu_ticks,
                    None,
                    backend=False,
                )
        finally:
            peer.stop()

    # --- hot swap ------------------------------------------------------------------------------------
    def hot_swap(self, repeat: int) -> None:
        root = make_registry(
            REPO_ROOT / "models" / MODEL / str(self.version), self.run_dir / f"models-{repeat}", MODEL
        )
        proc, port, admin = self.portcullis(f"portcullis-swap-{repeat}", "block", root, VERSIONS[0])
        print(f"[bench] repeat {repeat + 1}: hot swap every {self.s.swap_every_s:g} s", flush=True)
        with proc:
            load = self._wrk(ECHO, port)
            load(self.s.warm_s or 1.0)
            self.quiet.wait()
            swapper = Swapper(admin, VERSIONS, self.s.swap_every_s)
            swapper.start()
            try:
                sample = measure(
                    "swap", ECHO.name, repeat, load, self.s.swap_s, proc.cpu_ticks, self.backend, admin
                )
            finally:
                log = swapper.stop()
            self.samples.append(sample)
            served = send(admin, "GET", "/admin/models", None).body
            self.extra["swaps"].append(
                {
                    "repeat": repeat,
                    "ok": log.ok,
                    "failed": log.failed,
                    "slowest_ms": log.slowest_ms,
                    "status": served[:300],
                }
            )
            print(
                f"[bench]   swaps {log.ok} ok, {len(log.failed)} failed, slowest {log.slowest_ms:.0f} ms",
                flush=True,
            )
            if log.failed:
                self.problem(f"hot swap repeat {repeat + 1}: activations failed: {'; '.join(log.failed[:3])}")

    # --- detection quality ---------------------------------------------------------------------------
    def quality(self, peer: ModSecPeer | None) -> None:
        probes, source = quality_sample(REPO_ROOT / "build" / "screening")
        result: dict[str, Any] = {"source": source, "n": len(probes)}
        proc, port, _admin = self.portcullis(
            "portcullis-quality", "block", REPO_ROOT / "models", str(self.version)
        )
        with proc:
            result["portcullis"] = run_quality(port, probes)
        if peer is not None:
            peer.start(1)
            try:
                result["modsec"] = run_quality(peer.port, probes)
            finally:
                peer.stop()
        self.extra["quality"] = result


def _command() -> str:
    return command_line("bench.screening", KNOBS)


def main() -> int:
    raise_on_sigterm()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"[bench] {exc}", file=sys.stderr)
        return 2
    started, date = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    loadgen.ensure_tools()
    peer_build = PeerBuild(settings.peer_dir)
    peer_build.ensure()
    modsec: ModSecPeer | None = None
    if "modsec" in settings.parts or "quality" in settings.parts:
        fast = free_port()
        modsec = ModSecPeer(settings.modsec_dir, free_port(), fast)
        modsec.ensure_installed()
    run_dir = Path(tempfile.mkdtemp(prefix="portcullis-bench-screening-"))
    print(f"[bench] {settings.describe()}\n[bench] logs and configs in {run_dir}", flush=True)
    backend_port = free_port()
    # "gateway" stands for screening off and block, measured as pairs (Bench.gateways).
    systems = [
        s
        for part, group in (("gateway", ("gateway",)), ("modsec", ("pl0", "pl1")))
        if part in settings.parts
        for s in group
    ]
    try:
        with peer_build.backend(backend_port, run_dir).start() as backend:
            backend.wait_port(backend_port, 15)
            bench = Bench(settings, run_dir, backend, backend_port)
            for repeat in range(settings.repeats):
                for system in systems if repeat % 2 == 0 else systems[::-1]:
                    try:
                        if system == "gateway":
                            bench.gateways(repeat)
                        elif modsec is not None:
                            bench.nginx(modsec, int(system[2:]), repeat)
                    except (StartError, loadgen.LoadError) as exc:
                        bench.problem(f"{system} repeat {repeat + 1} not measured: {exc}")
                if "hotswap" in settings.parts:
                    try:
                        bench.hot_swap(repeat)
                    except (StartError, loadgen.LoadError) as exc:
                        bench.problem(f"hot swap repeat {repeat + 1} not measured: {exc}")
            if "quality" in settings.parts:
                try:
                    bench.quality(modsec)
                except (StartError, OSError) as exc:
                    bench.problem(f"detection quality not measured: {exc}")
    except (KeyboardInterrupt, Terminated) as exc:
        print("[bench] interrupted; everything started was stopped, report not written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if modsec is not None:
            modsec.stop()
    report = Report(
        date=date,
        command=_command(),
        settings=settings.describe(),
        elapsed_s=time.monotonic() - started,
        model=f"{MODEL}/{bench.version}",
        modsec=modsec.versions() if modsec else "",
        samples=bench.samples,
        problems=bench.problems,
        extra=bench.extra,
        conns=settings.conns,
    )
    section = render(report)
    print(section)
    if settings.output is not None:
        write_section(settings.output, section)
        print(f"[bench] wrote {settings.output} in {report.elapsed_s / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
