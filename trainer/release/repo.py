"""A static TUF repository of model releases, built and signed with python-tuf's Metadata API.

Layout (everything under ``metadata/`` and ``targets/`` is served as static files by any web server)::

    REPO/metadata/N.root.json  timestamp.json  N.snapshot.json  N.targets.json  N.trainer.json
    REPO/targets/models/<name>/<counter>/<sha256>.<file>          consistent snapshot: hash-prefixed
    REPO/targets/models/channels/<sha256>.<channel>.json          the channel's current manifest
    REPO/offline/metadata/...  REPO/offline/targets/...           the long-lived offline (USB) repository

Online: root (offline keys, 2 of 3) → targets (offline key) delegates ``models/…`` to the online
``trainer`` role; snapshot and timestamp are online keys with short expiry. Offline: its own root (same
root keys) whose targets, snapshot and timestamp are signed by the ``offline`` key with long expiry, so a
drive plugged in months later still verifies without a network.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from securesystemslib.signer import Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from trainer.release.keys import KeyRing

SPEC_VERSION = "1.0.31"
TRAINER_PATHS = ["models/*", "models/*/*", "models/*/*/*", "models/*/*/*/*"]
"""The delegated trainer role may sign only model paths (TUF patterns match one segment per ``*``)."""


@dataclass(frozen=True)
class Expiry:
    """Lifetimes of each role's metadata."""

    root: dt.timedelta = dt.timedelta(days=365)
    targets: dt.timedelta = dt.timedelta(days=365)
    trainer: dt.timedelta = dt.timedelta(days=90)
    snapshot: dt.timedelta = dt.timedelta(days=7)
    timestamp: dt.timedelta = dt.timedelta(days=1)
    offline: dt.timedelta = dt.timedelta(days=730)


class RepositoryError(Exception):
    """The repository directory is missing, inconsistent, or an operation is not allowed."""


_VERSIONED = re.compile(r"^(\d+)\.(\w[\w-]*)\.json$")


class Repository:
    """One repository directory (online part, or the offline part with ``offline=True``)."""

    def __init__(
        self,
        path: Path,
        ring: KeyRing,
        offline: bool = False,
        expiry: Optional[Expiry] = None,
        now: Optional[dt.datetime] = None,
    ) -> None:
        self.base = Path(path) / "offline" if offline else Path(path)
        self.meta_dir = self.base / "metadata"
        self.targets_dir = self.base / "targets"
        self.ring = ring
        self.offline = offline
        self.expiry = expiry or Expiry()
        self._now = now

    # ------------------------------------------------------------------ helpers
    def now(self) -> dt.datetime:
        return (self._now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)

    def _expires(self, role: str) -> dt.datetime:
        life = self.expiry.offline if self.offline and role != "root" else getattr(self.expiry, role)
        return self.now() + life

    def signing_role(self, role: str) -> str:
        """The key-ring role whose keys sign ``role`` here (the offline part signs three roles with one key)."""
        if self.offline and role in ("targets", "snapshot", "timestamp"):
            return "offline"
        return role

    def latest_version(self, role: str) -> int:
        if role == "timestamp":
            path = self.meta_dir / "timestamp.json"
            return Metadata.from_file(str(path)).signed.version if path.exists() else 0
        best = 0
        for p in self.meta_dir.glob(f"*.{role}.json"):
            m = _VERSIONED.match(p.name)
            if m and m.group(2) == role:
                best = max(best, int(m.group(1)))
        return best

    def load(self, role: str) -> Metadata[Any]:
        version = self.latest_version(role)
        if version == 0:
            raise RepositoryError(f"{self.meta_dir}: no {role} metadata (run init first)")
        name = "timestamp.json" if role == "timestamp" else f"{version}.{role}.json"
        return Metadata.from_file(str(self.meta_dir / name))

    def _sign_and_write(self, md: Metadata[Any], role: str, extra_signers: Optional[Sequence[Signer]] = None) -> None:
        md.signatures.clear()
        for signer in self.ring.signers(self.signing_role(role)) + list(extra_signers or []):
            md.sign(signer, append=True)
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
        _atomic_write(self.meta_dir / name, data)
        if role == "root":
            _atomic_write(self.meta_dir / "root.json", data)

    # ------------------------------------------------------------------ init
    def init(self) -> None:
        """Create version 1 of every role."""
        if self.latest_version("root"):
            raise RepositoryError(f"{self.meta_dir} already holds a repository")
        root = Root(expires=self._expires("root"), consistent_snapshot=True)
        for key in self.ring.public("root"):
            root.add_key(key, "root")
        root.roles["root"].threshold = self.ring.roles["root"].threshold
        for role in ("targets", "snapshot", "timestamp"):
            signing = self.signing_role(role)
            for key in self.ring.public(signing):
                root.add_key(key, role)
            root.roles[role].threshold = self.ring.roles[signing].threshold
        self._sign_and_write(Metadata(root), "root")

        targets = Targets(expires=self._expires("targets"))
        if not self.offline:
            targets.delegations = self._trainer_delegation()
            self._sign_and_write(Metadata(Targets(expires=self._expires("trainer"))), "trainer")
        self._sign_and_write(Metadata(targets), "targets")
        self._snapshot_and_timestamp()

    def _trainer_delegation(self) -> Delegations:
        keys = self.ring.public("trainer")
        role = DelegatedRole(
            name="trainer",
            keyids=[k.keyid for k in keys],
            threshold=self.ring.roles["trainer"].threshold,
            terminating=True,
            paths=list(TRAINER_PATHS),
        )
        return Delegations(keys={k.keyid: k for k in keys}, roles={"trainer": role})

    def _snapshot_and_timestamp(self) -> None:
        version = self.latest_version("snapshot") + 1
        meta = {"targets.json": MetaFile(version=self.latest_version("targets"))}
        if not self.offline:
            meta["trainer.json"] = MetaFile(version=self.latest_version("trainer"))
        snapshot = Snapshot(version=version, expires=self._expires("snapshot"), meta=meta)
        self._sign_and_write(Metadata(snapshot), "snapshot")
        ts = Timestamp(
            version=self.latest_version("timestamp") + 1,
            expires=self._expires("timestamp"),
            snapshot_meta=MetaFile(version=version),
        )
        self._sign_and_write(Metadata(ts), "timestamp")

    # ------------------------------------------------------------------ operations
    def add_targets(self, files: Mapping[str, Union[bytes, Path]]) -> Dict[str, TargetFile]:
        """Add (or replace) targets, signed by the trainer role (online) or the offline key; bump versions."""
        role = "targets" if self.offline else "trainer"
        md = self.load(role)
        added = {}
        for target_path, content in files.items():
            data = content if isinstance(content, bytes) else Path(content).read_bytes()
            tf = TargetFile.from_data(target_path, data, ["sha256"])
            directory, _, name = target_path.rpartition("/")
            dest = self.targets_dir / directory / f"{tf.hashes['sha256']}.{name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                _atomic_write(dest, data)
            md.signed.targets[target_path] = tf
            added[target_path] = tf
        md.signed.version += 1
        md.signed.expires = self._expires(role)
        self._sign_and_write(md, role)
        self._snapshot_and_timestamp()
        return added

    def target_bytes(self, target_path: str) -> bytes:
        """The content of a target, looked up through this repository's signed metadata."""
        role = "targets" if self.offline else "trainer"
        tf = self.load(role).signed.targets.get(target_path)
        if tf is None:
            raise RepositoryError(f"{target_path} is not a target of this repository")
        directory, _, name = target_path.rpartition("/")
        return (self.targets_dir / directory / f"{tf.hashes['sha256']}.{name}").read_bytes()

    def bump_timestamp(self) -> None:
        """Re-sign snapshot and timestamp with fresh expiry (the online repository's periodic job)."""
        self._snapshot_and_timestamp()

    def rotate_root(self) -> None:
        """Write root N+1 with the key ring's current keys, signed by the old and the new root keys."""
        md = self.load("root")
        root: Root = md.signed
        old_root_signers = self.ring.signers("root", retired=True) if self.ring.roles["root"].retired else []
        for role in ("root", "targets", "snapshot", "timestamp"):
            signing = "root" if role == "root" else self.signing_role(role)
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            for key in self.ring.public(signing):
                root.add_key(key, role)
            root.roles[role].threshold = self.ring.roles[signing].threshold
        root.version += 1
        root.expires = self._expires("root")
        self._sign_and_write(md, "root", extra_signers=old_root_signers)

    def rotate_trainer(self) -> None:
        """Re-delegate to the key ring's current trainer keys (old key refused from now on) and re-sign."""
        if self.offline:
            return
        targets = self.load("targets")
        targets.signed.delegations = self._trainer_delegation()
        targets.signed.version += 1
        targets.signed.expires = self._expires("targets")
        self._sign_and_write(targets, "targets")
        trainer = self.load("trainer")
        trainer.signed.version += 1
        trainer.signed.expires = self._expires("trainer")
        self._sign_and_write(trainer, "trainer")
        self._snapshot_and_timestamp()

    def copy_metadata_to(self, dest: Path) -> None:
        """Copy the published metadata (every root version plus the current set) to ``dest``."""
        dest.mkdir(parents=True, exist_ok=True)
        names = [f"{v}.root.json" for v in range(1, self.latest_version("root") + 1)]
        names += ["timestamp.json", f"{self.latest_version('snapshot')}.snapshot.json"]
        names += [f"{self.latest_version('targets')}.targets.json"]
        if not self.offline:
            names.append(f"{self.latest_version('trainer')}.trainer.json")
        for name in names:
            shutil.copyfile(self.meta_dir / name, dest / name)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
