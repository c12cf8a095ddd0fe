"""The site PKI directory: the CA, the broker's certificate, every device certificate issued, the ledger of
what is active, superseded or revoked, and the CRL the broker reads. All writes under one lock, atomic.

::

    <pki>/ca.key ca.crt            the site CA (keep ca.key offline once the devices are enrolled)
    <pki>/server.key server.crt    the broker's certificate
    <pki>/crl.pem                  every revoked serial (mosquitto ``crlfile``; rewritten on every revoke)
    <pki>/devices/<id>.crt .key    the device's newest certificate and key (hand them over, then delete the key)
    <pki>/issued/<serial>.crt      every certificate ever issued (for audits)
    <pki>/ledger.json              per certificate: device, serial, fingerprint, validity, state

A device has at most one ``active`` certificate. ``rotate`` issues a new one and marks the previous
``superseded``: still valid, so the device keeps its link (and its spool drains) until it has switched to the
new files; ``revoke --superseded`` then retires the old ones. ``revoke`` puts serials on the CRL; the broker
refuses them at the next TLS handshake once it has reloaded the CRL (SIGHUP or restart, docs/OPERATIONS.md).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from agent.ota.fsutil import atomic_write_bytes, fsync_dir
from trainer.devices.pki import (
    Issued,
    PkiError,
    build_crl,
    check_device_id,
    describe,
    issue_device,
    issue_server,
    new_ca,
)

__all__ = ["CertRecord", "SitePki"]

ACTIVE, SUPERSEDED, REVOKED = "active", "superseded", "revoked"


@dataclass(frozen=True)
class CertRecord:
    device: str
    serial: int
    sha256: str
    not_before: str
    not_after: str
    state: str
    issued_at: str
    revoked_at: Optional[str] = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_secret(path: Path, data: bytes) -> None:
    """A private key: mode 0600 from the first byte, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class SitePki:
    """One site's PKI directory (see the module docstring). ``now`` is injectable for tests."""

    def __init__(self, root: Path, now: Optional[dt.datetime] = None) -> None:
        self.root = root
        self._now = now

    def now(self) -> dt.datetime:
        return self._now or _now()

    # ------------------------------------------------------------------ paths

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    def device_cert(self, device: str) -> Path:
        return self.root / "devices" / f"{check_device_id(device)}.crt"

    def device_key(self, device: str) -> Path:
        return self.root / "devices" / f"{check_device_id(device)}.key"

    # ------------------------------------------------------------------ operations

    def init(self, days: int = 3650) -> Path:
        """Create the site CA and an empty CRL; refuses to overwrite a CA."""
        with self._locked():
            if self.ca_key.exists() or self.ca_cert.exists():
                raise PkiError(f"{self.root}: a site CA exists already; not overwriting it")
            ca = new_ca(self.now(), days=days)
            _write_secret(self.ca_key, ca.key_pem)
            atomic_write_bytes(self.ca_cert, ca.cert_pem)
            self._save([])
            self._write_crl([])
        return self.ca_cert

    def server(self, host: str, ips: Sequence[str] = ()) -> Path:
        with self._locked():
            issued = issue_server(*self._ca(), host, ips, self.now())
            _write_secret(self.root / "server.key", issued.key_pem)
            atomic_write_bytes(self.root / "server.crt", issued.cert_pem)
        return self.root / "server.crt"

    def provision(self, device: str, days: Optional[int] = None) -> CertRecord:
        """The device's first certificate; refuses a device that has an active one (use ``rotate``)."""
        with self._locked():
            records = self._load()
            if any(r.device == device and r.state == ACTIVE for r in records):
                raise PkiError(f"device {device!r} has an active certificate: rotate it, or revoke it first")
            return self._issue(records, device, days)

    def rotate(self, device: str, days: Optional[int] = None) -> CertRecord:
        """A new certificate for a provisioned device; its previous ones stay valid (``superseded``)."""
        with self._locked():
            records = self._load()
            if not any(r.device == device and r.state == ACTIVE for r in records):
                raise PkiError(f"device {device!r} has no active certificate to rotate (provision it)")
            records = [
                _replace(r, state=SUPERSEDED) if r.device == device and r.state == ACTIVE else r for r in records
            ]
            return self._issue(records, device, days)

    def revoke(self, device: str, only_superseded: bool = False, serial: Optional[int] = None) -> List[CertRecord]:
        """Revoke the device's certificates (all valid ones, only superseded ones, or one serial) and rewrite
        the CRL; returns what was revoked."""
        check_device_id(device)
        with self._locked():
            records = self._load()
            when = self.now().isoformat()
            revoked: List[CertRecord] = []
            out: List[CertRecord] = []
            for r in records:
                hit = (
                    r.device == device
                    and r.state != REVOKED
                    and (serial is None or r.serial == serial)
                    and (not only_superseded or r.state == SUPERSEDED)
                )
                if hit:
                    r = _replace(r, state=REVOKED, revoked_at=when)
                    revoked.append(r)
                out.append(r)
            if not revoked:
                raise PkiError(f"device {device!r}: no certificate to revoke")
            self._save(out)
            self._write_crl(out)
            if not any(r.device == device and r.state == ACTIVE for r in out):
                for path in (self.device_cert(device), self.device_key(device)):
                    if path.exists():
                        path.unlink()
            return revoked

    def refresh_crl(self) -> Path:
        """Rewrite the CRL with a new validity (before its next update passes: mosquitto refuses everyone
        once it has)."""
        with self._locked():
            self._write_crl(self._load())
        return self.crl

    def records(self) -> List[CertRecord]:
        return self._load()

    # ------------------------------------------------------------------ internals

    def _issue(self, records: List[CertRecord], device: str, days: Optional[int]) -> CertRecord:
        ca_key, ca_cert = self._ca()
        issued: Issued = (
            issue_device(ca_key, ca_cert, device, self.now(), days)
            if days
            else issue_device(ca_key, ca_cert, device, self.now())
        )
        info = describe(issued.cert_pem)
        record = CertRecord(
            device=device,
            serial=issued.serial,
            sha256=info.sha256,
            not_before=issued.not_before.isoformat(),
            not_after=issued.not_after.isoformat(),
            state=ACTIVE,
            issued_at=self.now().isoformat(),
        )
        atomic_write_bytes(self.root / "issued" / f"{issued.serial:x}.crt", issued.cert_pem)
        _write_secret(self.device_key(device), issued.key_pem)
        atomic_write_bytes(self.device_cert(device), issued.cert_pem)
        self._save([*records, record])
        return record

    def _ca(self) -> Tuple[bytes, bytes]:
        try:
            return self.ca_key.read_bytes(), self.ca_cert.read_bytes()
        except FileNotFoundError:
            raise PkiError(f"{self.root}: no site CA (run `edge-trainer devices init`)") from None

    def _write_crl(self, records: List[CertRecord]) -> None:
        revoked = [
            (r.serial, dt.datetime.fromisoformat(r.revoked_at or r.issued_at)) for r in records if r.state == REVOKED
        ]
        atomic_write_bytes(self.crl, build_crl(*self._ca(), revoked, self.now()))

    def _load(self) -> List[CertRecord]:
        path = self.root / "ledger.json"
        try:
            raw = json.loads(path.read_text("utf-8"))
            return [CertRecord(**item) for item in raw["certificates"]]
        except FileNotFoundError:
            raise PkiError(f"{self.root}: no ledger (run `edge-trainer devices init`)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PkiError(f"{path}: unreadable ledger: {exc}") from exc

    def _save(self, records: List[CertRecord]) -> None:
        document = {"certificates": [asdict(r) for r in records]}
        atomic_write_bytes(self.root / "ledger.json", json.dumps(document, indent=1).encode())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _replace(record: CertRecord, **changes: object) -> CertRecord:
    data: Dict[str, object] = {**asdict(record), **changes}
    return CertRecord(**data)  # type: ignore[arg-type]
