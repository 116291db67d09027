"""The ModSecurity peer (`/work/shared/peers/modsec`): nginx + ModSecurity v3 + OWASP CRS 3.3.4.

Owns driving the peer's own scripts: `setup.sh` (apt, as root) when nginx or the connector is
missing, `start.sh PL PORT nginx` (the upstream-free setup its README recommends for cost: the same
nginx answers `return 200` itself on FAST_PORT, so PL n minus PL 0 is ModSecurity's cost alone) and
`stop.sh` (which signals only the PID it recorded). The peer's folder is read-only; its files go
under `peer_dir` (the peer's default, `/tmp/portcullis-peers/modsec`). An nginx already recorded
there that we did not start belongs to someone else: we refuse to touch it rather than restart it.
CPU is the whole nginx tree (master and workers) from `/proc`, as the README measures it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.procs import ProcKey, StartError, cpu_ticks

PEER_SRC = Path("/work/shared/peers/modsec")
MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
CRS_INIT = Path("/usr/share/modsecurity-crs/rules/REQUEST-901-INITIALIZATION.conf")


class ModSecPeer:
    """One nginx of the peer at a time, on 127.0.0.1:`port`, its `return 200` on `fast_port`."""

    def __init__(self, peer_dir: Path, port: int, fast_port: int, workers: int = 1) -> None:
        self.peer_dir = peer_dir
        self.run = peer_dir / "run"
        self.port = port
        self.fast_port = fast_port
        self.workers = workers
        self.pl: int | None = None
        self._master: int | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PEER_DIR": str(self.peer_dir),
            "FAST_PORT": str(self.fast_port),
            "WORKERS": str(self.workers),
            "ACCESS_LOG": "off",  # the README's advice for long runs; both logs grow fast otherwise
            "NGINX_ONLY": "1",  # stop.sh: never touch an upstream.py (the upstream-free setup has none)
        }

    def ensure_installed(self) -> None:
        """Run the peer's setup.sh when nginx, the connector or CRS is missing (it needs root)."""
        if _installed():
            return
        if os.geteuid() != 0:
            raise StartError(f"nginx + ModSecurity missing: run {PEER_SRC / 'setup.sh'} as root")
        print(f"[bench] installing the ModSecurity peer ({PEER_SRC / 'setup.sh'})", flush=True)
        subprocess.run([str(PEER_SRC / "setup.sh")], check=True)
        if not _installed():
            raise StartError("setup.sh ran but nginx, the ModSecurity module or CRS is still missing")

    def foreign_nginx(self) -> int | None:
        """PID of a live nginx recorded in our PEER_DIR that this run did not start, else None."""
        pid = _read_pid(self.run / "nginx.pid")
        if pid is None or pid == self._master or not _is_nginx(pid):
            return None
        return pid

    def start(self, pl: int) -> None:
        """(Re)start nginx at paranoia level `pl` (0: the module not loaded) through start.sh."""
        other = self.foreign_nginx()
        if other is not None:
            raise StartError(
                f"an nginx we did not start (pid {other}) is recorded in {self.run}; not touching it"
            )
        argv = [str(PEER_SRC / "start.sh"), str(pl), str(self.port), "nginx"]
        proc = subprocess.run(argv, env=self._env(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StartError(
                f"start.sh {pl} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
            )
        self._master = _read_pid(self.run / "nginx.pid")
        if self._master is None:
            raise StartError(f"start.sh {pl} recorded no nginx.pid in {self.run}")
        self.pl = pl

    def stop(self) -> None:
        """stop.sh: quit our nginx by its recorded PID (nothing else)."""
        if self._master is None:
            return
        subprocess.run([str(PEER_SRC / "stop.sh")], env=self._env(), capture_output=True, check=False)
        self._master = None
        self.pl = None

    def cpu_ticks(self) -> dict[ProcKey, int]:
        """CPU ticks of the nginx master and its workers."""
        return cpu_ticks(self._master) if self._master is not None else {}

    def versions(self) -> str:
        """Debian package versions, for the report."""
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package} ${Version}, ", "nginx", "libmodsecurity3", "modsecurity-crs"],
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout.strip().rstrip(",")


def _installed() -> bool:
    return all(p.exists() for p in (Path("/usr/sbin/nginx"), MODULE, CRS_INIT))


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_nginx(pid: int) -> bool:
    try:
        return b"nginx" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
