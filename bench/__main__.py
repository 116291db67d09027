"""`python -m bench` (`make bench`): every scenario of issues 2 and 3 once per repeat, then the report.

Owns the order of the run and what is set up for all of it. One Go backend serves the whole run;
the policy scenarios share one API key issued into the run folder, and Redis (started only when
none answers, and then stopped at the end). Each repeat starts every gateway afresh, in the
scenario order reversed on every other repeat, so drift on a shared machine spreads over all of
them (`bench/runner.py` measures them); the policy scenarios run as one paired block in that order
(`bench/paired.py`), each measured in turns with a no-policy gateway of its own. Everything started
is stopped by PID in `finally`, on errors and on Ctrl-C or SIGTERM too.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import loadgen, report
from bench.gateways import REPO_ROOT, PeerBuild
from bench.paired import run_block
from bench.policies import LocalRedis, PolicyScenario, SetupError, issue_key
from bench.policy_report import policy_lines
from bench.procs import Terminated, free_port, raise_on_sigterm
from bench.report import RunInfo
from bench.runner import Runner
from bench.samples import POLICIES_LOCAL, POLICIES_REDIS, cells
from bench.settings import KNOBS, PAIRED_BLOCK, Settings, SettingsError


def _machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next(
        (
            ln.split()[1]
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal:")
        ),
        "0",
    )
    return (
        f"{os.cpu_count()} CPUs (nproc), {model}, {int(mem) / 2**20:.1f} GiB RAM, "
        f"kernel {platform.release()}, Python {platform.python_version()}, load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def _tools() -> str:
    versions = loadgen.tool_versions()
    go = (
        subprocess.run(["go", "version"], check=False, capture_output=True, text=True).stdout.strip()
        or "go ?"
    )
    git = (
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout.strip()
        or "no commit yet"
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain"], check=False, capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{versions['wrk']}, {versions['h2load']}; peer: grpc-gateway 1.6.4 + grpc-go 1.33 (Debian "
        f"bookworm, {go}); Portcullis at git {git}{' with uncommitted changes' if dirty else ''}"
    )


def _command() -> str:
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in KNOBS if k in os.environ)
    if os.environ.get("MAKELEVEL"):
        cmd = "make bench"
    else:
        exe = Path(sys.executable)
        cmd = f"{exe.relative_to(REPO_ROOT) if exe.is_relative_to(REPO_ROOT) else exe} -m bench"
    return f"{env} {cmd}".strip()


def main() -> int:
    """Run the whole benchmark; 0 when the report was written, 1 when nothing could be measured."""
    raise_on_sigterm()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"[bench] {exc}", file=sys.stderr)
        return 2
    started, date = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    loadgen.ensure_tools()
    peer = PeerBuild(settings.peer_dir)
    peer.ensure()
    info = RunInfo(
        date=date,
        command=_command(),
        machine=_machine(),
        tools=_tools(),
        settings=settings.describe(),
        disturbed_pct=settings.quiet_max_pct,
    )
    run_dir = Path(tempfile.mkdtemp(prefix="portcullis-bench-"))
    print(f"[bench] {settings.describe()}\n[bench] logs and configs in {run_dir}", flush=True)
    backend_port = free_port()
    redis_server = LocalRedis(run_dir) if POLICIES_REDIS in settings.scenarios else None
    policy_scenarios: dict[str, PolicyScenario] = {}
    try:
        if POLICIES_LOCAL in settings.scenarios or redis_server is not None:
            key = issue_key(run_dir)
            if POLICIES_LOCAL in settings.scenarios:
                policy_scenarios[POLICIES_LOCAL] = PolicyScenario(POLICIES_LOCAL, "local", run_dir, key, None)
            if redis_server is not None:
                policy_scenarios[POLICIES_REDIS] = PolicyScenario(
                    POLICIES_REDIS, "redis", run_dir, key, redis_server
                )
        with peer.backend(backend_port, run_dir).start() as backend:
            backend.wait_port(backend_port, 15)
            runner = Runner(settings, peer, backend, backend_port, run_dir, policy_scenarios)
            for repeat in range(settings.repeats):
                for unit in settings.run_order(repeat):
                    if unit == PAIRED_BLOCK:
                        run_block(runner, repeat)
                    else:
                        runner.run(unit, repeat)
    except SetupError as exc:
        print(f"[bench] {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        print("[bench] interrupted; everything started was stopped, report not written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        for policy in policy_scenarios.values():
            policy.finish()
        if redis_server is not None:
            redis_server.stop()
    info.elapsed_s = time.monotonic() - started
    info.problems = runner.problems
    if not runner.samples:
        print("[bench] nothing was measured; report not written", file=sys.stderr)
        return 1
    report.write(settings.output, report.render(info, runner.samples))
    print(f"[bench] wrote {settings.output} in {info.elapsed_s / 60:.1f} min", flush=True)
    table = cells(runner.samples)
    print("\n".join([*report.ratio_lines(table), "", *policy_lines(runner.samples)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
