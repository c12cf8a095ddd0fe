"""The TUF trust layer: everything the installer trusts chains to a pinned root through python-tuf ngclient.

Works with tuf 5.1 (Python 3.8: tuf 6.0's ngclient does not import there), 6.x and 7.x. 6.x and 7.x
take ``bootstrap=`` (7.x requires it); 5.1 reads ``root.json`` from the metadata directory, so there we
write the bootstrap root there first. The bootstrap is the newest root this device already verified
(cached in the metadata directory), or the shipped root on first use. Never the shipped root after a
rotation: a revoked root key set could then sign a fake rotation.

On top of ngclient:

- a **time floor** (:class:`TimeFloor`): the newest wall-clock time this device has seen while verifying,
  persisted and never lowered. ngclient checks expiry against ``now``; setting the clock back would
  revive expired (possibly compromised) metadata, so every top-level role must also outlive the floor.
- **targets through staging**: :meth:`TrustClient.download` gets the signed ``TargetFile`` with
  ``get_targetinfo``, downloads with our length-capped, resumable :class:`~agent.ota.fetchers.StagedFile`,
  then ``verify_length_and_hashes`` (ngclient's ``download_target`` can neither resume nor cap below the
  signed length).
- tuf exceptions mapped to :class:`~agent.ota.errors.VerificationError` / ``TransportError`` reason codes.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
from pathlib import Path
from typing import Any, Dict, Optional

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Metadata
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.updater import Updater

from agent.ota.errors import OtaError, TransportError, VerificationError
from agent.ota.fetchers import Fetcher, StagedFile, TooSlowError
from agent.ota.fsutil import atomic_write_bytes

_UPDATER_TAKES_BOOTSTRAP = "bootstrap" in inspect.signature(Updater.__init__).parameters


class TimeFloor:
    """A persisted wall-clock lower bound (UTC), raised after each successful verification."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> dt.datetime:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
            return dt.datetime.fromisoformat(raw["time_floor"]).astimezone(dt.timezone.utc)
        except FileNotFoundError:
            return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OtaError(f"time floor file {self.path} unreadable: {exc}", reason="state") from exc

    def raise_to(self, when: dt.datetime) -> None:
        if when > self.get():
            atomic_write_bytes(self.path, json.dumps({"time_floor": when.isoformat()}).encode())


_NEWER_CACHED = (
    "this box holds newer metadata than the repository serves: a replay, or metadata signed with a compromised "
    "online key; once the keys are rotated (`edge-trainer keys rotate online`) the box accepts the repository again"
)
_MISSING_VERSION = (
    "the repository lacks the version this box's trusted metadata names: another repository, or metadata signed "
    "with a compromised online key (docs/OPERATIONS.md, Recover)"
)


def map_tuf_error(exc: BaseException, what: str, metadata: bool = False) -> OtaError:
    """Translate a python-tuf exception into our reason-coded errors (``what``: the file and role concerned;
    ``metadata``: the failure was fetching a metadata file, which changes what a 404 means)."""
    detail = str(exc).strip().rstrip(".:;,") or type(exc).__name__  # never "what: " with nothing after it
    message = f"{what}: {detail}"
    if isinstance(exc, tuf_exc.UnsignedMetadataError):
        return VerificationError(message, reason="unsigned")
    if isinstance(exc, tuf_exc.ExpiredMetadataError):
        return VerificationError(message, reason="expired")
    if isinstance(exc, tuf_exc.BadVersionNumberError):
        return VerificationError(f"{message} ({_NEWER_CACHED})", reason="replayed")
    if isinstance(exc, tuf_exc.DownloadHTTPError) and exc.status_code == 404 and metadata:
        return VerificationError(f"{message} ({_MISSING_VERSION})", reason="not_found")
    if isinstance(exc, tuf_exc.LengthOrHashMismatchError):
        return VerificationError(message, reason="hash_mismatch")
    if isinstance(exc, tuf_exc.DownloadLengthMismatchError):
        return VerificationError(message, reason="too_large")
    if isinstance(exc, tuf_exc.DownloadHTTPError) and exc.status_code == 404:
        return VerificationError(message, reason="not_found")
    if isinstance(exc, TooSlowError):
        return TransportError(message, reason="too_slow")
    if isinstance(exc, tuf_exc.DownloadError):
        return TransportError(message)
    if isinstance(exc, tuf_exc.RepositoryError):
        return VerificationError(message, reason="metadata_invalid")
    return VerificationError(f"{what}: {type(exc).__name__}: {detail}", reason="metadata_invalid")


def metadata_subject(url: Optional[str]) -> str:
    """``.../metadata/3.snapshot.json`` -> ``metadata 3.snapshot.json (snapshot role)``."""
    if not url:
        return "metadata refresh"
    name = url.rstrip("/").rsplit("/", 1)[-1]
    stem = name[: -len(".json")] if name.endswith(".json") else name
    version, _, rest = stem.partition(".")
    role = rest if version.isdigit() and rest else stem  # "3.snapshot" -> "snapshot"; "timestamp" stays
    return f"metadata {name} ({role} role)"


def _root_version(data: bytes) -> int:
    try:
        version = json.loads(data.decode("utf-8"))["signed"]["version"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return -1
    return version if isinstance(version, int) else -1


class TrustClient:
    """One TUF repository as seen from this device (online or offline set), over one :class:`Fetcher`.

    Args:
        metadata_dir: where ngclient caches verified metadata (in the state dir, per repository).
        trusted_root: the pinned root metadata bytes shipped with the agent.
        fetcher: the transport.
        metadata_url / targets_url: base URLs as the fetcher understands them.
        time_floor: the persisted clock floor.
    """

    def __init__(
        self,
        metadata_dir: Path,
        trusted_root: bytes,
        fetcher: Fetcher,
        metadata_url: str,
        targets_url: str,
        time_floor: TimeFloor,
        max_target_bytes: int = 2 * 1024**3,
        chunk: int = 256 * 1024,
        now: Optional[dt.datetime] = None,
    ) -> None:
        self.metadata_dir = metadata_dir
        self.fetcher = fetcher
        self.targets_url = targets_url if targets_url.endswith("/") else targets_url + "/"
        self.time_floor = time_floor
        self.max_target_bytes = max_target_bytes
        self.chunk = chunk
        self._now = now
        metadata_dir.mkdir(parents=True, exist_ok=True)
        bootstrap = trusted_root
        try:
            cached = (metadata_dir / "root.json").read_bytes()
        except OSError:
            cached = b""
        if cached and _root_version(cached) > _root_version(trusted_root):
            bootstrap = cached  # verified by ngclient through the rotation chain when it was cached
        kwargs: Dict[str, Any] = {}
        if _UPDATER_TAKES_BOOTSTRAP:
            kwargs["bootstrap"] = bootstrap
        elif bootstrap is not cached:
            atomic_write_bytes(metadata_dir / "root.json", bootstrap)
        try:
            self._updater = Updater(
                metadata_dir=str(metadata_dir),
                metadata_base_url=metadata_url,
                target_base_url=self.targets_url,
                target_dir=None,
                fetcher=fetcher,
                config=UpdaterConfig(),
                **kwargs,
            )
        except Exception as exc:
            raise map_tuf_error(exc, "trusted root") from exc
        self._refreshed = False

    def now(self) -> dt.datetime:
        return self._now or dt.datetime.now(dt.timezone.utc)

    def refresh(self) -> None:
        """Fetch and verify root (rotations), timestamp, snapshot and targets; check the time floor."""
        floor = self.time_floor.get()
        now = self.now()
        if now < floor - dt.timedelta(minutes=5):
            # The clock went backwards past what we have seen: expiry checks against `now` mean nothing.
            raise VerificationError(
                f"system clock {now.isoformat()} is behind the time floor {floor.isoformat()}",
                reason="clock_rolled_back",
            )
        self.fetcher.last_metadata_url = None
        try:
            self._updater.refresh()
        except Exception as exc:
            fetched = self.fetcher.last_metadata_url
            raise map_tuf_error(exc, metadata_subject(fetched), metadata=fetched is not None) from exc
        for role in ("timestamp", "snapshot", "targets"):
            expires = Metadata.from_bytes((self.metadata_dir / f"{role}.json").read_bytes()).signed.expires
            if expires <= floor:
                raise VerificationError(f"{role} metadata expired at {expires} (time floor {floor})", reason="expired")
        self.time_floor.raise_to(now)
        self._refreshed = True

    def target_info(self, path: str) -> TargetInfo:
        """The signed length and hashes of target ``path`` (searching delegations).

        Raises:
            VerificationError: "not_found" when no trusted role signs ``path``; "too_large" over the cap.
        """
        if not self._refreshed:
            self.refresh()
        self.fetcher.last_metadata_url = None
        try:
            info = self._updater.get_targetinfo(path)
        except Exception as exc:
            # a delegated role's metadata is fetched on the way: name it when it is what failed
            fetched = self.fetcher.last_metadata_url
            what = f"target {path}, {metadata_subject(fetched)}" if fetched else f"target {path}"
            raise map_tuf_error(exc, what, metadata=fetched is not None) from exc
        if info is None:
            raise VerificationError(f"{path}: no trusted role signs this target", reason="not_found")
        if info.length > self.max_target_bytes:
            raise VerificationError(
                f"{path}: {info.length} bytes signed, above the {self.max_target_bytes} byte limit", reason="too_large"
            )
        sha = info.hashes.get("sha256")
        if not sha:
            raise VerificationError(f"{path}: metadata carries no sha256", reason="metadata_invalid")
        return TargetInfo(path, info.length, sha, dict(info.hashes), info)

    def target_url(self, info: TargetInfo) -> str:
        """URL of a target: consistent-snapshot repositories prefix the file name with its hash."""
        directory, _, name = info.path.rpartition("/")
        prefix = (directory + "/") if directory else ""
        consistent = self._updater.config.prefix_targets_with_hash and self._consistent()
        return self.targets_url + prefix + (f"{info.sha256}.{name}" if consistent else name)

    def _consistent(self) -> bool:
        root = Metadata.from_bytes((self.metadata_dir / "root.json").read_bytes())
        return bool(root.signed.consistent_snapshot)

    def download(self, info: TargetInfo, dest: Path) -> Path:
        """Download ``info`` into ``dest`` (resuming a ``.part``), capped at the signed length, verified."""
        staged = StagedFile(dest, info.length, info.sha256, label=f"target {info.path}")
        staged.fill(self.fetcher, self.target_url(info), self.chunk)
        path = staged.finish(self.chunk)
        if set(info.hashes) != {"sha256"}:
            try:
                with open(path, "rb") as f:
                    info.tuf.verify_length_and_hashes(f)
            except tuf_exc.LengthOrHashMismatchError as exc:
                path.unlink()
                raise VerificationError(f"{info.path}: {exc}", reason="hash_mismatch") from exc
        return path

    def fetch_small(self, path: str, dest: Path, max_bytes: int) -> bytes:
        """Download and verify a small target (manifest, channel pointer) and return its bytes."""
        info = self.target_info(path)
        if info.length > max_bytes:
            raise VerificationError(f"{path}: {info.length} bytes, above {max_bytes}", reason="too_large")
        return self.download(info, dest).read_bytes()


class TargetInfo:
    """A target's signed facts: path, length, sha256 (plus every hash) and the tuf ``TargetFile``."""

    def __init__(self, path: str, length: int, sha256: str, hashes: Dict[str, str], tuf: object) -> None:
        self.path = path
        self.length = length
        self.sha256 = sha256
        self.hashes = hashes
        self.tuf: Any = tuf


def read_root(path: Path) -> bytes:
    """Read a pinned root file (small; refuse anything huge)."""
    try:
        if path.stat().st_size > 512_000:
            raise VerificationError(f"{path}: pinned root is implausibly large", reason="metadata_invalid")
        return path.read_bytes()
    except OSError as exc:
        raise OtaError(f"cannot read pinned root {path}: {exc}", reason="state") from exc
