"""TLS termination on the public listener: the server `SSLContext` and its certificate reloads.

TLS 1.2 or newer with forward-secret AEAD ciphers only (TLS 1.3's suites are fixed by OpenSSL),
optional client-certificate verification for mTLS clients. `CertificateReloader` loads a changed
certificate and key into the *same* context, so new handshakes get the new certificate while
established connections keep theirs: nothing is dropped. It reloads on SIGHUP (the server calls
`reload`) and when the files' modification times change (`watch_forever`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("portcullis.tls")
# ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 for TLS 1.2, as Mozilla's "intermediate" profile.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class ListenerTLS(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: Path = Field(description="PEM certificate chain served to clients.")
    key_file: Path = Field(description="PEM private key of that certificate.")
    client_ca_file: Path | None = Field(None, description="CA bundle that client certificates must chain to.")
    client_auth: Literal["none", "optional", "require"] = Field(
        "none", description="Client certificates: not asked, verified when sent, or required (mTLS)."
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")
    watch_interval_s: float = Field(2.0, gt=0, description="How often the files are checked for changes.")


def server_context(cfg: ListenerTLS) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cfg.cert_file, cfg.key_file)
    if cfg.client_auth != "none":
        if cfg.client_ca_file is None:
            raise ValueError("listen.tls.client_ca_file is needed to verify client certificates")
        context.load_verify_locations(cfg.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if cfg.client_auth == "require" else ssl.CERT_OPTIONAL
    return context


class CertificateReloader:
    def __init__(self, cfg: ListenerTLS, context: ssl.SSLContext) -> None:
        self.cfg = cfg
        self.context = context
        self.reloads = 0
        self._stamp = self._mtimes()

    def _mtimes(self) -> tuple[float, ...]:
        files = [self.cfg.cert_file, self.cfg.key_file]
        try:
            return tuple(f.stat().st_mtime_ns for f in files)
        except OSError:
            return ()

    def reload(self) -> bool:
        """Load the files again; a broken pair is logged and the current certificate kept."""
        try:
            self.context.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate reload failed, keeping the current one: %s", exc)
            return False
        self._stamp = self._mtimes()
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cfg.cert_file)
        return True

    async def watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.watch_interval_s)
            stamp = self._mtimes()
            if stamp and stamp != self._stamp:
                self.reload()
