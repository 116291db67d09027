"""Processes the benchmark starts, measures and stops, always by PID, and the machine's CPU counters.

`ManagedProcess` owns one started command and every descendant it forks (Portcullis with
`--workers N` forks N workers): it remembers each descendant it has seen, by (pid, start time), so
that `stop` can still end workers whose parent died first, and never signals a recycled PID. CPU is
read from `/proc/PID/stat` (utime + stime, in clock ticks) and memory from `/proc/PID/status`
(VmRSS), summed over the process tree. Only this module sends signals.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# A process identity that survives PID reuse: (pid, start time in ticks since boot).
ProcKey = tuple[int, int]


class StartError(RuntimeError):
    """A process exited or did not open its port; the message carries the end of its log."""


@dataclass(frozen=True, slots=True)
class _Stat:
    ppid: int
    state: str
    ticks: int
    start: int


def _read_stat(pid: int) -> _Stat | None:
    """Parse /proc/PID/stat; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses, so split after the last ')'.
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return _Stat(ppid=int(rest[1]), state=rest[0], ticks=int(rest[11]) + int(rest[12]), start=int(rest[19]))


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc/PID/task/*/children, else by scanning every ppid."""
    tasks = Path(f"/proc/{pid}/task")
    found: list[int] = []
    try:
        task_dirs = list(tasks.iterdir())
    except OSError:
        return found
    if task_dirs and (task_dirs[0] / "children").exists():
        for task in task_dirs:
            try:
                found.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
        return found
    for entry in Path("/proc").iterdir():  # kernels without CONFIG_PROC_CHILDREN
        if entry.name.isdigit():
            st = _read_stat(int(entry.name))
            if st is not None and st.ppid == pid:
                found.append(int(entry.name))
    return found


def process_tree(pid: int) -> dict[ProcKey, _Stat]:
    """`pid` and all its live descendants, keyed by (pid, start time)."""
    tree: dict[ProcKey, _Stat] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        st = _read_stat(p)
        if st is None or st.state == "Z":
            continue
        tree[(p, st.start)] = st
        todo.extend(_children(p))
    return tree


def cpu_ticks(pid: int) -> dict[ProcKey, int]:
    """CPU ticks (user + system) of every process in the tree of `pid`."""
    return {key: st.ticks for key, st in process_tree(pid).items()}


def cpu_seconds(before: Mapping[ProcKey, int], after: Mapping[ProcKey, int]) -> float:
    """CPU seconds spent between two `cpu_ticks` snapshots.

    A process born in between counts from zero; one that died in between is lost (workers live for
    the whole run, so this does not happen in a valid measurement).
    """
    return sum(t - before.get(key, 0) for key, t in after.items()) / CLK_TCK


def listening_pids(pid: int, port: int) -> set[int]:
    """Processes in the tree of `pid` holding a TCP socket that listens on `port` (SO_REUSEPORT workers)."""
    return _holders((p for p, _start in process_tree(pid)), _listen_inodes(port))


def port_listeners(port: int) -> set[int]:
    """Every process we may inspect that listens on `port` (a server this run did not start, e.g. Redis)."""
    return _holders((int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()), _listen_inodes(port))


def _listen_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # cols[1] is "ADDR:PORT" in hex, cols[3] the state (0A = LISTEN), cols[9] the inode.
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _holders(pids: Iterable[int], inodes: set[str]) -> set[int]:
    holders: set[int] = set()
    if not inodes:
        return holders
    for p in pids:
        try:
            fds = list(Path(f"/proc/{p}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                holders.add(p)
                break
    return holders


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) summed over the tree of `pid`."""
    total = 0
    for p, _start in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def system_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _alive(key: ProcKey) -> bool:
    st = _read_stat(key[0])
    return st is not None and st.start == key[1] and st.state != "Z"


class ManagedProcess:
    """One command started in its own session, its output in a log file, stopped by PID only."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._seen: set[ProcKey] = set()

    @property
    def pid(self) -> int:
        """PID of the started command; raises before `start`."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc.pid

    def start(self) -> Self:
        """Start the command; its own session keeps a terminal Ctrl-C for us to handle in order."""
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        """True while the started command has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the process log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_port(self, port: int, timeout_s: float) -> None:
        """Return once 127.0.0.1:`port` accepts connections; raise `StartError` if the process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(
                    f"{self.name} exited ({self._proc and self._proc.returncode}):\n{self.log_tail()}"
                )
            if port_open(port):
                return
            time.sleep(0.05)
        raise StartError(
            f"{self.name} did not open 127.0.0.1:{port} within {timeout_s:.0f} s:\n{self.log_tail()}"
        )

    def cpu_ticks(self) -> dict[ProcKey, int]:
        """CPU ticks of the process and its descendants (remembered for `stop`)."""
        snap = cpu_ticks(self.pid)
        self._seen.update(snap)
        return snap

    def rss_bytes(self) -> int:
        """Resident memory of the process and its descendants."""
        self._seen.update(process_tree(self.pid))
        return rss_bytes(self.pid)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the command, SIGKILL after `grace_s`; then the same for any descendant left behind."""
        if self._proc is None:
            return
        if self.alive():
            self._seen.update(process_tree(self.pid))
            self._signal_and_wait([(self.pid, 0)], grace_s)
        self._proc.wait()
        stragglers = [key for key in self._seen if key[0] != self.pid and _alive(key)]
        if stragglers:
            self._signal_and_wait(stragglers, grace_s)

    def _signal_and_wait(self, keys: list[ProcKey], grace_s: float) -> None:
        # start 0 stands for our direct child, which Popen tracks (and reaps) itself.
        def still(key: ProcKey) -> bool:
            if key[1] == 0:
                return self._proc is not None and self._proc.poll() is None
            return _alive(key)

        for sig in (signal.SIGTERM, signal.SIGKILL):
            for key in keys:
                if still(key):
                    try:
                        os.kill(key[0], sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and any(still(k) for k in keys):
                time.sleep(0.05)
            if not any(still(k) for k in keys):
                return
            print(f"[bench] {self.name}: still alive {grace_s:.0f} s after {sig.name}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Terminated(BaseException):
    """SIGTERM arrived; raised like KeyboardInterrupt so every `finally` and `with` still stops its process."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` for the benchmark entry points."""

    def _sigterm(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, _sigterm)
