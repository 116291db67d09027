"""Hot swap under load: a throwaway model registry with two versions, and the client that swaps them.

Owns the registry copy (`<tmp>/request-screening/{swap-a,swap-b}`: the shipped model's files, each
manifest naming its own version; the sha256 covers `model.onnx` only, so the checksum, feature
schema and golden-input checks of `screening/registry.py` pass unchanged) and `Swapper`, a thread
that asks the admin API (`POST /admin/models/activate`, what `portcullis models activate` calls)
for the other version every few seconds while wrk loads the gateway, and records each answer.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import HOST
from screening.manifest import MANIFEST, MODEL

VERSIONS = ("swap-a", "swap-b")


def make_registry(source: Path, root: Path, name: str, versions: tuple[str, ...] = VERSIONS) -> Path:
    """Copy the model version folder `source` to `root/name/<version>` for each version; return root."""
    for version in versions:
        folder = root / name / version
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / MODEL, folder / MODEL)
        manifest = json.loads((source / MANIFEST).read_text())
        manifest["version"] = version
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return root


@dataclass(slots=True)
class SwapLog:
    """What the admin API answered to each activation."""

    ok: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each activation call

    @property
    def slowest_ms(self) -> float:
        return 1000 * max(self.seconds) if self.seconds else float("nan")


class Swapper(threading.Thread):
    """Activate the next version every `every_s` seconds until `stop()`."""

    def __init__(self, admin_port: int, versions: tuple[str, ...], every_s: float, first: int = 1) -> None:
        super().__init__(name="swapper", daemon=True)
        self.url = f"http://{HOST}:{admin_port}/admin/models/activate"
        self.versions, self.every_s, self.next = versions, every_s, first
        self.log = SwapLog()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            version = self.versions[self.next % len(self.versions)]
            self.next += 1
            body = json.dumps({"version": version}).encode()
            req = urllib.request.Request(
                self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            start = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=30) as response:
                    doc = json.loads(response.read())
                if doc.get("status") == "activated" and doc.get("model", "").endswith(f"/{version}"):
                    self.log.ok += 1
                else:
                    self.log.failed.append(f"{version}: {doc.get('status')} {doc.get('error', '')}".strip())
            except (OSError, ValueError) as exc:
                detail = (
                    exc.read().decode(errors="replace")[:200]
                    if isinstance(exc, urllib.error.HTTPError)
                    else ""
                )
                self.log.failed.append(f"{version}: {exc} {detail}".strip())
            self.log.seconds.append(time.monotonic() - start)

    def stop(self) -> SwapLog:
        self._halt.set()
        self.join(timeout=60)
        return self.log
