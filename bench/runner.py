"""`Runner`: one scenario of one repeat, measured cell by cell, and the problems met on the way.

Owns the measurement of one cell. A gateway is started afresh for each repeat, must pass the
functional check of every endpoint (and, for a policy scenario, the pre-check of
`bench/policies.py`) before it is measured, and is stopped by PID when its cells are done. A cell
is: warm-up, wait for the machine to be quiet, CPU snapshots of gateway and backend (and Redis,
for the Redis limiter), the timed load (sampling gateway RSS), snapshots again; a policy
scenario's run is then audited from its access log. A scenario that cannot start or does not
pass its checks is reported once and skipped for the rest of the run. The paired block of the
policy scenarios (`bench/paired.py`) starts, checks and measures its gateways through the same
methods, in its own order and without re-measurements.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bench import gateways, loadgen
from bench.gateways import ENDPOINTS, Endpoint, PeerBuild
from bench.loadgen import LoadError, LoadResult
from bench.policies import REDIS_PORT, PolicyScenario
from bench.procs import (
    CLK_TCK,
    ManagedProcess,
    ProcKey,
    StartError,
    cpu_seconds,
    cpu_ticks,
    free_port,
    listening_pids,
    port_listeners,
    system_jiffies,
)
from bench.samples import DIRECT, PC2, PEER, SCENARIO_LABELS, UNENFORCED_TOLERANCE, Sample
from bench.settings import Settings

GATEWAY_START_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
QUIET_WAIT_CELL_S = 10.0
Load = Callable[[float, Callable[[], None] | None], LoadResult]


class NotReady(RuntimeError):
    """A gateway started but does not answer the benchmark's requests correctly."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """One gateway of a scenario: its process (started by the caller), ports and policies."""

    scenario: str
    proc: ManagedProcess
    port: int
    admin_port: int  # 0 for grpc-gateway, which has none
    workers: int
    policy: PolicyScenario | None


class Runner:
    """Runs scenarios against one backend and collects `Sample`s and problems."""

    def __init__(
        self,
        settings: Settings,
        peer: PeerBuild,
        backend: ManagedProcess,
        backend_port: int,
        run_dir: Path,
        policy_scenarios: Mapping[str, PolicyScenario],
    ) -> None:
        self.settings = settings
        self.policy_scenarios = policy_scenarios
        self.peer = peer
        self.backend = backend
        self.backend_port = backend_port
        self.run_dir = run_dir
        self.samples: list[Sample] = []
        self.problems: list[str] = []
        self.broken: set[str] = set()
        self.ncpu = os.cpu_count() or 1
        self.retries_left = settings.retries
        self.quiet_left_s = settings.quiet_wait_s

    def problem(self, text: str) -> None:
        """Record a problem for the report and say it now."""
        print(f"[bench] PROBLEM: {text}", flush=True)
        self.problems.append(text)

    def run(self, scenario: str, repeat: int) -> None:
        """One repeat of one scenario: start its gateway, measure every cell, stop it.

        The policy scenarios are not run here but in the paired block (`bench/paired.py`).
        """
        if scenario in self.broken:
            return
        if scenario == DIRECT:
            self._direct(repeat)
            return
        gw = self.gateway(scenario)
        try:
            self.announce(gw, repeat)
            with gw.proc.start():
                self.ready(gw)
                for ep in ENDPOINTS:
                    for conns in self.settings.conns_for(scenario):
                        self._cell(scenario, ep, conns, repeat, gw.proc, self.wrk(gw, ep, conns), gw.policy)
                        self.check_alive(gw)
        except (StartError, NotReady) as exc:
            self.broken.add(scenario)
            self.not_measured(gw, exc)

    def gateway(self, scenario: str) -> Gateway:
        """The (not yet started) gateway of a scenario, its config written into the run folder."""
        port = free_port()
        policy = self.policy_scenarios.get(scenario)
        if scenario == PEER:
            return Gateway(
                scenario, self.peer.gateway(port, self.backend_port, self.run_dir), port, 0, 1, None
            )
        workers = 2 if scenario == PC2 else 1
        admin_port = free_port()
        while admin_port == port:  # both are only reserved once Portcullis binds them
            admin_port = free_port()
        proc = gateways.portcullis(
            port,
            admin_port,
            self.backend_port,
            workers,
            self.run_dir,
            name=scenario,
            policies=policy.policies() if policy else (),
        )
        return Gateway(scenario, proc, port, admin_port, workers, policy)

    def announce(self, gw: Gateway, repeat: int) -> None:
        """Before a gateway starts: its policies' set-up (Redis up, a fresh access log), and a line."""
        if gw.policy is not None:
            gw.policy.prepare()
        print(f"[bench] repeat {repeat + 1}: starting {' '.join(gw.proc.argv)}", flush=True)

    def ready(self, gw: Gateway) -> None:
        """After start: wait for the port, the functional check, and for a policy gateway its pre-check."""
        gw.proc.wait_port(gw.port, GATEWAY_START_TIMEOUT_S)
        self._wait_ready(gw.proc, gw.port, gw.workers, gw.policy.headers if gw.policy else None)
        if gw.policy is not None:
            errors = gw.policy.verify(gw.port, gw.admin_port)
            if errors:
                raise NotReady("the policies are not enforced as configured: " + "; ".join(errors))

    def check_alive(self, gw: Gateway) -> None:
        """Raise StartError when the gateway died under load."""
        if not gw.proc.alive():
            raise StartError(f"{gw.proc.name} died during the run:\n{gw.proc.log_tail()}")

    def not_measured(self, gw: Gateway, exc: Exception) -> None:
        self.problem(
            f"{SCENARIO_LABELS[gw.scenario]} not measured (log {gw.proc.log_path}): {one_block(str(exc))}"
        )

    def _direct(self, repeat: int) -> None:
        for ep in ENDPOINTS:
            url, frame = ep.grpc_url(self.backend_port), self.peer.frame(ep)
            status = loadgen.grpc_status(url, frame)
            if status != "0":
                self.problem(f"direct {ep.grpc_method}: grpc-status {status}, cell skipped")
                continue
            for conns in self.settings.direct_conns:
                self._cell(DIRECT, ep, conns, repeat, None, self._h2load(url, frame, conns))

    def _h2load(self, url: str, frame: Path, conns: int) -> Load:
        def load(secs: float, tick: Callable[[], None] | None) -> LoadResult:
            return loadgen.run_h2load(url, conns, secs, frame, tick)

        return load

    def wrk(self, gw: Gateway, ep: Endpoint, conns: int) -> Load:
        """wrk on one endpoint of a gateway; a policy gateway's script sends the API key."""
        script = gw.policy.script(ep) if gw.policy else ep.wrk_script

        def load(secs: float, tick: Callable[[], None] | None) -> LoadResult:
            return loadgen.run_wrk(ep.url(gw.port), conns, secs, script, tick)

        return load

    def _wait_ready(
        self, proc: ManagedProcess, port: int, workers: int, headers: Mapping[str, str] | None = None
    ) -> None:
        """Retry the functional check of every endpoint, then wait for the forked workers."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            errors = [e for e in (gateways.check_rest(port, ep, headers) for ep in ENDPOINTS) if e]
            if not errors:
                break
            if time.monotonic() > deadline or not proc.alive():
                raise NotReady("; ".join(errors) + (f"\n{proc.log_tail()}" if not proc.alive() else ""))
            time.sleep(0.5)
        while len(listening_pids(proc.pid, port)) < workers:
            if time.monotonic() > deadline:
                self.problem(
                    f"{proc.name}: fewer than {workers} processes listen on port {port}; measuring anyway"
                )
                break
            time.sleep(0.2)

    def _wait_quiet(self) -> None:
        """Wait until the machine is nearly idle: at most QUIET_WAIT_CELL_S, from the run-wide budget."""
        deadline = time.monotonic() + min(QUIET_WAIT_CELL_S, self.quiet_left_s)
        started, said = time.monotonic(), False
        while True:
            b0, t0 = system_jiffies()
            time.sleep(0.5)
            b1, t1 = system_jiffies()
            busy = 100.0 * self.ncpu * (b1 - b0) / max(1, t1 - t0)
            if busy <= self.settings.quiet_max_pct or time.monotonic() >= deadline:
                break
            if not said:
                print(f"[bench] waiting for other load to settle ({busy:.0f}% of one core busy)", flush=True)
                said = True
        if said:
            self.quiet_left_s = max(0.0, self.quiet_left_s - (time.monotonic() - started))
            if busy > self.settings.quiet_max_pct:
                print(f"[bench] machine still {busy:.0f}% busy; measuring anyway", flush=True)

    def _cell(
        self,
        scenario: str,
        ep: Endpoint,
        conns: int,
        repeat: int,
        gw: ManagedProcess | None,
        load: Load,
        policy: PolicyScenario | None = None,
    ) -> None:
        """Warm up, then measure one cell; re-measure a disturbed run once and keep the less disturbed one."""
        best: Sample | None = None
        try:
            if self.settings.warm_s > 0:
                load(self.settings.warm_s, None)
            best = self.measure(scenario, ep, conns, repeat, gw, load, policy)
            if best.others_pct > self.settings.quiet_max_pct and self.retries_left > 0:
                # One re-measurement per cell, from a run-wide budget that bounds the run's length.
                self.retries_left -= 1
                print(f"[bench]   others used {best.others_pct:.0f}% of a core; measuring again", flush=True)
                again = self.measure(scenario, ep, conns, repeat, gw, load, policy)
                best = again if again.others_pct < best.others_pct else best
        except LoadError as exc:
            self.problem(f"{scenario} {ep.name} c{conns} repeat {repeat + 1}: {one_block(str(exc))}")
        if best is not None:
            self.keep(best)

    def keep(self, sample: Sample) -> None:
        """Add a measured run to the results (in run order), saying when it was not shown enforced."""
        self.samples.append(sample)
        if sample.unenforced:
            over = sample.unenforced > UNENFORCED_TOLERANCE * sample.requests
            self.problem(
                f"{sample.scenario} {sample.endpoint} c{sample.conns} repeat {sample.repeat + 1}: "
                f"{sample.unenforced:,} of {sample.requests:,} requests not shown enforced by the access log (no "
                "line naming the key's consumer, or admitted by the rate limiter's fail_open fallback, e.g. "
                f"after a Redis timeout); {'more' if over else 'not more'} than the {UNENFORCED_TOLERANCE:.0%} "
                "allowed"
            )

    def measure(
        self,
        scenario: str,
        ep: Endpoint,
        conns: int,
        repeat: int,
        gw: ManagedProcess | None,
        load: Load,
        policy: PolicyScenario | None = None,
        secs: float | None = None,
    ) -> Sample:
        """One timed run (`secs`, else BENCH_DUR) with CPU snapshots around it and RSS sampled during it;
        a policy run is audited."""
        self._wait_quiet()
        peak = [0]

        def tick() -> None:
            if gw is not None and gw.alive():
                peak[0] = max(peak[0], gw.rss_bytes())

        # Redis serves the Redis limiter; its CPU is part of that policy's cost, not "others".
        redis_pids = port_listeners(REDIS_PORT) if policy is not None and policy.redis is not None else set()
        if policy is not None:
            policy.audit_start()
        g0 = gw.cpu_ticks() if gw else {}
        r0 = _ticks(redis_pids)
        b0, (s0, _) = self.backend.cpu_ticks(), system_jiffies()
        start = time.monotonic()
        result = load(self.settings.dur_s if secs is None else secs, tick)
        wall = time.monotonic() - start
        g1 = gw.cpu_ticks() if gw else {}
        r1 = _ticks(redis_pids)
        b1, (s1, _) = self.backend.cpu_ticks(), system_jiffies()
        tick()
        n = max(1, result.requests)
        gw_cpu = cpu_seconds(g0, g1)
        be_cpu = cpu_seconds(b0, b1)
        redis_cpu = cpu_seconds(r0, r1)
        others = (s1 - s0) / CLK_TCK - gw_cpu - be_cpu - redis_cpu - result.tool_cpu_s
        unenforced, audit_text = 0, ""
        if policy is not None:
            audit = policy.audit(result.requests)
            unenforced = audit.unenforced(result.requests)
            audit_text = f"  log {audit.authenticated:,}/{result.requests:,}" + (
                f" fallbacks {audit.fallbacks:,}" if audit.fallbacks else ""
            )
        sample = Sample(
            scenario=scenario,
            endpoint=ep.name,
            conns=conns,
            repeat=repeat,
            requests=result.requests,
            rps=result.rps,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            errors=result.errors,
            gw_cpu_us=1e6 * gw_cpu / n if gw else None,
            gw_cpu_pct=100 * gw_cpu / wall if gw else None,
            gw_rss_mib=peak[0] / 2**20 if gw else None,
            backend_cpu_us=1e6 * be_cpu / n,
            loadgen_pct=100 * result.tool_cpu_s / wall,
            others_pct=max(0.0, 100 * others / wall),
            redis_cpu_us=1e6 * redis_cpu / n if redis_pids else None,
            unenforced=unenforced,
        )
        gw_text = "     –" if sample.gw_cpu_us is None else f"{sample.gw_cpu_us:6.1f}"
        redis_text = "" if sample.redis_cpu_us is None else f"  redis {sample.redis_cpu_us:5.1f} µs/req"
        flag = f"  ERRORS {result.errors}" if result.errors else ""
        flag += f"  UNENFORCED {unenforced:,}" if unenforced else ""
        print(
            f"[bench]   {scenario:14} {ep.name:4} c{conns:<3} {result.rps:9,.0f} req/s  p50 {result.p50_ms:6.2f} ms"
            f"  p99 {result.p99_ms:6.2f} ms  gw {gw_text} µs/req  be {sample.backend_cpu_us:5.1f} µs/req"
            f"{redis_text}  others {sample.others_pct:3.0f}%{audit_text}{flag}",
            flush=True,
        )
        return sample


def _ticks(pids: set[int]) -> dict[ProcKey, int]:
    """CPU ticks of processes this run did not start (and so has no `ManagedProcess` for)."""
    out: dict[ProcKey, int] = {}
    for pid in pids:
        out.update(cpu_ticks(pid))
    return out


def one_block(text: str, limit: int = 1500) -> str:
    text = text.strip()
    if "\n" in text:
        return (
            text.splitlines()[0]
            + "\n\n  ```\n"
            + "\n".join("  " + line for line in text[-limit:].splitlines()[1:])
            + "\n  ```"
        )
    return text
