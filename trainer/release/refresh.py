"""Keep a repository's short-lived metadata fresh, and say when it is about to expire.

The online ``timestamp`` lives 1 day and ``snapshot`` 7 (``Expiry``): without a re-sign inside that time every
box refuses every online update as ``expired``. :func:`refresh` re-signs snapshot and timestamp (and, when
asked, the offline set's), and nothing else:

- targets and trainer metadata are never touched (the new snapshot lists the same versions);
- it signs only with keys the repository's root trusts now: a key ring that still names a key root no longer
  lists (a stale backup after ``keys rotate``) is refused, never used;
- it holds the repository lock (:func:`repository_lock`, shared with releases and key rotations), so two
  refreshes at once, or a refresh during a release, run one after the other instead of writing the same
  version twice.

:func:`expiries` reads each role's version and expiry for ``edge-trainer repo check`` and the metrics file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from tuf.api.metadata import Root

from agent.ota.fsutil import atomic_write_bytes
from trainer.release.keys import KeyRing
from trainer.release.repo import Repository, RepositoryError

LOCK_NAME = ".repository.lock"
_NO_KEYS = KeyRing(Path("/nonexistent"), {})  # reading metadata needs no keys


class RepositoryBusy(RepositoryError):
    """Another release, rotation or refresh holds the repository lock for longer than we wait."""


@contextlib.contextmanager
def repository_lock(repo: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Hold ``REPO/.repository.lock`` (``flock``): one writer of a repository's metadata at a time."""
    repo = Path(repo)
    if not (repo / "metadata").is_dir():
        raise RepositoryError(f"{repo}: no repository here (no metadata/ directory)")
    fd = os.open(str(repo / LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RepositoryBusy(
                        f"{repo}: another release, key rotation or refresh holds {LOCK_NAME} (waited {timeout_s:g} s)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@dataclass(frozen=True)
class RoleExpiry:
    """One role's metadata: where, which version, until when."""

    part: str  # "online" or "offline"
    role: str
    version: int
    expires: dt.datetime

    def remaining(self, now: dt.datetime) -> dt.timedelta:
        return self.expires - now


def expiries(repo: Path) -> List[RoleExpiry]:
    """Version and expiry of every role of the online and (when present) the offline part, as published."""
    out = []
    for offline in (False, True):
        part = Repository(repo, _NO_KEYS, offline=offline)
        if offline and not part.meta_dir.is_dir():
            continue
        roles = ["root", "targets", "snapshot", "timestamp"] + ([] if offline else ["trainer"])
        for role in roles:
            signed = part.load(role).signed
            out.append(RoleExpiry("offline" if offline else "online", role, signed.version, signed.expires))
    return out


def _check_signing_keys(part: Repository, ring: KeyRing) -> None:
    """Refuse to sign snapshot/timestamp with a key this part's root does not list for the role."""
    root: Root = part.load("root").signed
    for role in ("snapshot", "timestamp"):
        trusted = set(root.roles[role].keyids)
        ours = {key.keyid for key in ring.public(part.signing_role(role))}
        if not ours <= trusted:
            where = "offline" if part.offline else "online"
            raise RepositoryError(
                f"{where} {role}: the key ring's key {sorted(ours - trusted)[0][:12]}... is not one root "
                f"v{root.version} trusts for {role} (a key ring from before a rotation?); refusing to sign with it"
            )


@dataclass(frozen=True)
class RefreshResult:
    part: str
    snapshot_version: int
    timestamp_version: int
    timestamp_expires: dt.datetime


def refresh(
    repo: Path,
    ring: KeyRing,
    offline: bool = False,
    now: Optional[dt.datetime] = None,
    lock_timeout_s: float = 600.0,
) -> List[RefreshResult]:
    """Re-sign snapshot and timestamp of the online part (and of the offline part with ``offline=True``)."""
    results = []
    with repository_lock(repo, lock_timeout_s):
        for part_offline in (False, True) if offline else (False,):
            part = Repository(repo, ring, offline=part_offline, now=now)
            _check_signing_keys(part, ring)
            before = _signed_versions(part)
            part.bump_timestamp()
            after = _signed_versions(part)
            if before != after:  # cannot happen through bump_timestamp; guards the promise in the docstring
                raise RepositoryError(f"refresh changed {before} into {after}")
            ts = part.load("timestamp").signed
            results.append(
                RefreshResult(
                    "offline" if part_offline else "online",
                    part.latest_version("snapshot"),
                    ts.version,
                    ts.expires,
                )
            )
    return results


def _signed_versions(part: Repository) -> Dict[str, int]:
    roles = ["root", "targets"] + ([] if part.offline else ["trainer"])
    return {role: part.latest_version(role) for role in roles}


def metrics_text(found: List[RoleExpiry], ok: bool, at: dt.datetime) -> str:
    """Prometheus text (for node_exporter's textfile collector): expiry per role, last refresh outcome."""
    lines = [
        "# HELP edge_trainer_repo_metadata_expiry_timestamp_seconds When each role's published metadata expires.",
        "# TYPE edge_trainer_repo_metadata_expiry_timestamp_seconds gauge",
    ]
    for item in found:
        lines.append(
            f'edge_trainer_repo_metadata_expiry_timestamp_seconds{{part="{item.part}",role="{item.role}"}} '
            f"{item.expires.timestamp():.0f}"
        )
    lines += [
        "# HELP edge_trainer_repo_refresh_success Whether the last refresh succeeded (1) or failed (0).",
        "# TYPE edge_trainer_repo_refresh_success gauge",
        f"edge_trainer_repo_refresh_success {1 if ok else 0}",
        "# HELP edge_trainer_repo_refresh_last_run_timestamp_seconds When the last refresh ran.",
        "# TYPE edge_trainer_repo_refresh_last_run_timestamp_seconds gauge",
        f"edge_trainer_repo_refresh_last_run_timestamp_seconds {at.timestamp():.0f}",
    ]
    return "\n".join(lines) + "\n"


def write_metrics(path: Path, text: str) -> None:
    """Atomically (the collector must never read half a file)."""
    atomic_write_bytes(Path(path), text.encode())
