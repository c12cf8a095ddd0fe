"""The install state machine: verify → install into a slot → health check → switch → probation → commit.

::

    idle ──install──► downloading ──► verified ──► installed ──► health_checked ──switch──► trial
      ▲                  │ reject/fail  │             │ health fails   │                 │  │
      └──────────────────┴──────────────┴─────────────┴────────────────┘      commit ◄───┘  └──► rolled_back
                                                                   (period over / daemon healthy)   (crashes ≥ N,
                                                                                                     unhealthy)

Every arrow is one atomic write of ``state.json`` (:mod:`agent.ota.state`). :meth:`Installer.on_start`,
called by the daemon at every start, finishes what a kill interrupted: an attempt that had not passed its
health check is abandoned (its downloads stay in staging and resume next time), one that had passed is
switched; a trial counts the start, and an unclean previous run counts as a crash; ``max_crashes`` crashes
roll back to the last known-good release. The anti-rollback floor rises only at commit. How a run ended
(crash or power loss) and how much probation is served are :mod:`agent.ota.probation`'s rules; the daemon
tells the installer when it actually serves a trial's model (:meth:`Installer.mark_serving`).

A local bundle installed while a release is on probation is queued (:meth:`Installer.install_or_queue`):
verified, copied under ``<state_dir>/queue/`` (the drive can go), and installed by
:meth:`Installer.install_queued` once the trial commits or rolls back, verified again then.

Above 400 lines for one reason: :class:`Installer` is the only writer of ``state.json``, and every operation
(install, queue, switch, serve, commit, roll back, start) is a sequence of its locked steps on that one state;
the pure rules live apart (:mod:`agent.core.release`, :mod:`agent.core.interface`, :mod:`agent.ota.probation`),
and so do trust, fetching, vetting and the health check.

``EDGE_AGENT_OTA_FAULT=<point>`` makes the installer SIGKILL itself right after persisting ``<point>``
(one of :data:`FAULT_POINTS`): the seam the crash-safety tests use, inert unless set.
``EDGE_AGENT_BOOT_ID_FILE=<path>`` reads the boot id from that file instead of the kernel's (tests that
simulate a reboot in a child process).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

from agent import __version__
from agent.core.interface import ClassNeeds, ModelInterface, check_interface
from agent.core.release import (
    DeviceProfile,
    ReleaseError,
    ReleaseManifest,
    check_compatibility,
    check_rollback_floor,
    parse_manifest,
)
from agent.ota.bundle import extract_tar, read_bundle_json, vet_directory
from agent.ota.config import OtaConfig
from agent.ota.errors import (
    BundleError,
    HealthCheckFailed,
    InProbation,
    OtaError,
    ReleaseRejected,
    StateError,
    VerificationError,
)
from agent.ota.fetchers import DirectoryFetcher, Fetcher, HttpFetcher, TransferPace
from agent.ota.fsutil import fsync_dir, remove_tree
from agent.ota.health import HealthReport, ReferenceCheck, RuntimeCheck, run_health_check
from agent.ota.probation import RunEnd, commit_due, previous_run_end
from agent.ota.state import InstallState, Pending, Phase, Queued, SlotRecord, StateFile, Trial, utcnow
from agent.ota.trust import TimeFloor, TrustClient, read_root

FAULT_ENV = "EDGE_AGENT_OTA_FAULT"
BOOT_ID_ENV = "EDGE_AGENT_BOOT_ID_FILE"
KERNEL_BOOT_ID = "/proc/sys/kernel/random/boot_id"
MAX_QUEUED_ATTEMPTS = 2
"""Install attempts of a queued bundle that a kill may interrupt before it is dropped (one that kills the
daemon at every try must not do so for ever)."""
FAULT_POINTS = (
    "downloading",
    "downloaded_one",
    "verified",
    "installed",
    "health_checked",
    "trial",
    "committed",
    "rolled_back",
)
EVENT_KINDS = (
    "downloading",
    "verified",
    "installed",
    "health_checked",
    "trial",
    "committed",
    "rolled_back",
    "rejected",
    "failed",
    "queued",
    "already_active",
)
PROTOCOL_PHASE = {
    "downloading": "downloading",
    "verified": "verifying",
    "installed": "staging",
    "health_checked": "health_check",
    "trial": "probation",
    "committed": "committed",
    "already_active": "committed",
    "rolled_back": "rolled_back",
    "rejected": "failed",
    "failed": "failed",
    "queued": "staging",  # verified and kept on the box, waiting for the trial to end
}
"""Event kind → ``agent.protocol.models.OtaPhase`` value, for the daemon's MQTT reports."""


@dataclass(frozen=True)
class OtaEvent:
    """One step of an install attempt, for the daemon to publish (``reason`` set on rejected / failed)."""

    kind: str
    release: Optional[Dict[str, Any]] = None
    reason: Optional[str] = None
    detail: Optional[str] = None

    @property
    def phase(self) -> str:
        return PROTOCOL_PHASE[self.kind]


@dataclass(frozen=True)
class ServingContext:
    """What the box serves when no release is active, and the classes its configuration names.

    Given by the wiring (the daemon, ``edge-agent ota``) from the agent configuration: the installer checks
    every candidate against it (:func:`agent.core.interface.check_interface`).
    """

    factory_model: Optional[Path] = None
    needs: ClassNeeds = field(default_factory=ClassNeeds)


EventCallback = Callable[[OtaEvent], None]
HealthChecker = Callable[[Path, ReleaseManifest], HealthReport]


def channel_target(channel: str) -> str:
    """Target path of a channel's current manifest."""
    return f"models/channels/{channel}.json"


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def read_boot_id() -> Optional[str]:
    """The kernel's id of the current boot (a new one at every boot), ``None`` where it cannot be read."""
    try:
        text = Path(os.environ.get(BOOT_ID_ENV) or KERNEL_BOOT_ID).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text[:64] or None


@dataclass(frozen=True)
class _Verified:
    """A dry run's result: the verified manifest and its slot (SHA-256 of the manifest's bytes)."""

    manifest: ReleaseManifest
    slot: str


class _Lock:
    """An exclusive ``flock`` on the state directory: one installer (daemon or CLI) at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StateError("another OTA operation is running") from None
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class Installer:
    """Installs, switches, commits and rolls back releases under ``config.state_dir``.

    Args:
        config: OTA configuration.
        on_event: receives every :class:`OtaEvent` (the daemon publishes them).
        health_check: replaces :func:`run_health_check` (only where the real backend cannot run).
        now: clock for probation (tests).
        serving: what the box serves without a release and what its rules name (``None``: no factory
            model, no rules; the running release is still the reference).
        boot_id: the current kernel boot's id (default :func:`read_boot_id`; tests simulate reboots).
    """

    def __init__(
        self,
        config: OtaConfig,
        on_event: Optional[EventCallback] = None,
        health_check: Optional[HealthChecker] = None,
        agent_version: str = __version__,
        now: Optional[Callable[[], dt.datetime]] = None,
        serving: Optional[Callable[[], ServingContext]] = None,
        boot_id: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        self.config = config
        self._boot_id = boot_id or read_boot_id
        self.serving = serving or ServingContext
        self.on_event = on_event or (lambda _e: None)
        self._health = health_check or self._default_health
        self.agent_version = agent_version
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        base = config.state_dir
        self.slots_dir = base / "slots"
        self.staging_dir = base / "staging"
        self.queue_dir = base / "queue"
        self.state_file = StateFile(base / "state.json")
        self.time_floor = TimeFloor(base / "time_floor.json")
        self._lock_path = base / "lock"

    # ------------------------------------------------------------------ queries
    def state(self) -> InstallState:
        return self.state_file.load()

    def slot_dir(self, slot: str) -> Path:
        return self.slots_dir / slot

    def active_model_path(self) -> Optional[Path]:
        """The model file the daemon should serve, or ``None`` before the first install."""
        active = self.state().active
        return None if active is None else self.slot_dir(active.slot) / active.model

    def status(self) -> Dict[str, Any]:
        """``ota status --json``: active, previous, known-good, probation, floor, pending attempt."""
        s = self.state()

        def rec(r: Optional[SlotRecord]) -> Optional[Dict[str, Any]]:
            return None if r is None else dict(vars(r))

        return {
            "active": rec(s.active),
            "previous": rec(s.previous),
            "known_good": rec(s.known_good),
            "probation": None if s.trial is None else dict(vars(s.trial)),
            "pending": None if s.pending is None else dict(vars(s.pending)),
            "floor": s.floor,
            "last": s.last,
            "time_floor": self.time_floor.get().isoformat(),
            "bad": list(s.bad),
            "queued": None if s.queued is None else dict(vars(s.queued)),
        }

    # ------------------------------------------------------------------ sources
    def _client(self, trust: str, fetcher: Fetcher, metadata_url: str, targets_url: str) -> TrustClient:
        if trust == "offline":
            if self.config.offline_root is None:
                raise VerificationError("offline bundles are disabled (no offline_root)", reason="unsigned")
            root = read_root(self.config.offline_root)
        else:
            root = read_root(self.config.trusted_root)
        return TrustClient(
            self.config.state_dir / "metadata" / trust,
            root,
            fetcher,
            metadata_url,
            targets_url,
            self.time_floor,
            max_target_bytes=self.config.limits.max_target_bytes,
            chunk=self.config.limits.chunk_bytes,
        )

    def install_url(self, url: str, dry_run: bool = False) -> Union[SlotRecord, ReleaseManifest]:
        """Install the configured channel's release from an online repository at ``url``."""
        base = url if url.endswith("/") else url + "/"
        limits = self.config.limits
        pace = TransferPace(limits.fetch_deadline_s, limits.fetch_min_rate, limits.fetch_grace_s)
        fetcher = HttpFetcher(limits.http_timeout_s, chunk=limits.chunk_bytes, pace=pace)
        return self.install_from(
            fetcher,
            base + "metadata/",
            base + "targets/",
            "online",
            channel_target(self.config.channel),
            source=url,
            dry_run=dry_run,
        )

    def install_path(self, path: Path, dry_run: bool = False) -> Union[SlotRecord, ReleaseManifest]:
        """Install from a bundle directory, a bundle tar file, or a local mirror of the online repository."""
        with _Lock(self._lock_path):
            return _public(self._install_path_locked(Path(path), str(path), dry_run))

    def _install_path_locked(self, path: Path, source: str, dry_run: bool) -> Union[SlotRecord, _Verified]:
        limits = self.config.limits
        if path.is_file():
            with tempfile.TemporaryDirectory(dir=self._tmp_parent()) as tmp:
                root = Path(tmp) / "bundle"
                extract_tar(
                    path, root, limits.max_bundle_bytes, limits.max_bundle_members, limits.max_compression_ratio
                )
                return self._install_dir(root, source, dry_run)
        if not path.is_dir():
            raise OtaError(f"{path}: no such bundle file or directory", reason="bundle_invalid")
        return self._install_dir(path, source, dry_run)

    def install_bundle(self, path: Path) -> Union[SlotRecord, ReleaseManifest]:
        """Install a bundle assembled by another transport (the MQTT push)."""
        return self.install_path(path)

    def _tmp_parent(self) -> Path:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        return self.staging_dir

    def _install_dir(self, root: Path, source: str, dry_run: bool) -> Union[SlotRecord, _Verified]:
        limits = self.config.limits
        vet_directory(root, limits.max_bundle_bytes, limits.max_bundle_members)
        fetcher = DirectoryFetcher(root, chunk=limits.chunk_bytes)
        if (root / "bundle.json").exists():
            info = read_bundle_json(root)
            trust, manifest = info.trust, info.manifest
        else:
            trust, manifest = "online", channel_target(self.config.channel)
        return self._install_locked(
            fetcher, fetcher.url("metadata/"), fetcher.url("targets/"), trust, manifest, source, dry_run
        )

    # ------------------------------------------------------------------ install
    def install_from(
        self,
        fetcher: Fetcher,
        metadata_url: str,
        targets_url: str,
        trust: str,
        manifest_target: str,
        source: str = "",
        dry_run: bool = False,
    ) -> Union[SlotRecord, ReleaseManifest]:
        """Verify and (unless ``dry_run``) install, health-check and switch to one release.

        Returns the new active :class:`SlotRecord` (or the verified manifest when ``dry_run``).

        Raises:
            VerificationError / ReleaseRejected / HealthCheckFailed: rejected; the active model untouched.
            TransportError: fetching failed; downloads kept in staging for the next attempt.
            InProbation: a release is in probation (see :meth:`install_or_queue`).
            StateError: another operation runs.
        """
        with _Lock(self._lock_path):
            return _public(
                self._install_locked(fetcher, metadata_url, targets_url, trust, manifest_target, source, dry_run)
            )

    def _install_locked(
        self,
        fetcher: Fetcher,
        metadata_url: str,
        targets_url: str,
        trust: str,
        manifest_target: str,
        source: str,
        dry_run: bool,
    ) -> Union[SlotRecord, _Verified]:
        state = self.state_file.load()
        if state.trial is not None and not dry_run:
            raise InProbation(
                f"release {_label(state.active)} is in probation; commit or roll back first "
                "(a bundle from a drive is queued instead: edge-agent ota install PATH)"
            )
        if state.pending is not None:
            self._abandon(state, "superseded")
        release_ref: Optional[Dict[str, Any]] = None
        try:
            if not dry_run:
                state.pending = Pending(Phase.DOWNLOADING.value, source=source, started=utcnow())
                self.state_file.store(state)
                self._emit("downloading")
                _fault("downloading")
            client = self._client(trust, fetcher, metadata_url, targets_url)
            staging = self.staging_dir / "files"
            if dry_run:
                tmp = tempfile.mkdtemp(dir=self._tmp_parent())
                staging = Path(tmp)
            try:
                manifest, manifest_bytes = self._verified_manifest(client, manifest_target, staging)
                release_ref = {"name": manifest.name, "version": str(manifest.version), "counter": manifest.counter}
                slot = hashlib.sha256(manifest_bytes).hexdigest()
                self._check_release(state, manifest, slot)
                if not dry_run and self._is_committed_active(state, slot):
                    return self._already_active(state, release_ref)
                staged = self._download_all(client, manifest, staging)
                self._check_model_interface(state, manifest, staged)
            finally:
                if dry_run:
                    remove_tree(staging)
            if dry_run:
                return _Verified(manifest, slot)
            assert state.pending is not None
            state.pending.phase, state.pending.slot, state.pending.release = Phase.VERIFIED.value, slot, release_ref
            self.state_file.store(state)
            self._emit("verified", release_ref)
            _fault("verified")

            slot_dir = self._install_slot(slot, manifest_bytes, staged)
            state.pending.phase = Phase.INSTALLED.value
            self.state_file.store(state)
            self._emit("installed", release_ref)
            _fault("installed")

            try:
                self._health(slot_dir, manifest)
            except HealthCheckFailed:
                state.bad.append(slot)
                raise
            state.pending.phase = Phase.HEALTH_CHECKED.value
            self.state_file.store(state)
            self._emit("health_checked", release_ref)
            _fault("health_checked")
            return self._switch(state, manifest, slot)
        except (VerificationError, ReleaseRejected, HealthCheckFailed) as exc:
            self._finish_failed(state, "rejected", exc, release_ref, keep_staging=False)
            raise
        except OtaError as exc:
            self._finish_failed(state, "failed", exc, release_ref, keep_staging=True)
            raise

    @staticmethod
    def _is_committed_active(state: InstallState, slot: str) -> bool:
        return state.active is not None and state.active.slot == slot and state.trial is None

    def _already_active(self, state: InstallState, release: Dict[str, Any]) -> SlotRecord:
        """The committed active release delivered again (a retained push, a USB stick left in): nothing to do,
        and above all no new probation."""
        assert state.active is not None
        state.pending = None
        self._conclude(
            state, "already_active", release, "already_active", "it is the active, committed release: nothing installed"
        )
        return state.active

    def _finish_failed(
        self, state: InstallState, kind: str, exc: OtaError, release: Optional[Dict[str, Any]], keep_staging: bool
    ) -> None:
        if not keep_staging:
            remove_tree(self.staging_dir / "files")
        if state.pending is None:  # a dry run (`ota verify`): nothing was attempted, nothing to record
            self._emit(kind, release, exc.reason, exc.detail)
            return
        slot = state.pending.slot
        state.pending = None
        self._conclude(state, kind, release, exc.reason, exc.detail)
        if slot and slot not in state.slots_in_use():
            remove_tree(self.slot_dir(slot))

    def _verified_manifest(self, client: TrustClient, target: str, staging: Path) -> tuple[ReleaseManifest, bytes]:
        staging.mkdir(parents=True, exist_ok=True)
        info = client.target_info(target)
        data = client.fetch_small(
            target, staging / f"{info.sha256}.manifest.json", self.config.limits.max_manifest_bytes
        )
        try:
            return parse_manifest(data), data  # parsed only now: its hash was verified by fetch_small
        except ReleaseError as exc:
            raise ReleaseRejected(str(exc), reason=exc.reason) from exc

    def _check_release(self, state: InstallState, manifest: ReleaseManifest, slot: str) -> None:
        if slot in state.bad:
            raise ReleaseRejected(f"release {slot[:12]} failed before on this device", reason="known_bad")
        d = self.config.device
        device = DeviceProfile(
            d.device_type, self.agent_version, d.tensorrt_version, d.jetpack_version, d.compute_capability
        )
        try:
            check_compatibility(manifest, device)
            check_rollback_floor(manifest.counter, state.floor)
        except ReleaseError as exc:
            raise ReleaseRejected(str(exc), reason=exc.reason) from exc
        total = sum(ref.length for ref in manifest.targets())
        if total > self.config.limits.max_release_bytes:
            raise VerificationError(f"release is {total} bytes, above the limit", reason="too_large")

    def current_model(self, state: InstallState) -> Optional[Path]:
        """The model file served now: the active release's, else the factory model (``None``: nothing)."""
        if state.active is not None:
            return self.slot_dir(state.active.slot) / state.active.model
        return self.serving().factory_model

    def _check_model_interface(self, state: InstallState, manifest: ReleaseManifest, staged: Dict[str, Path]) -> None:
        """The release's compatibility contract (agent.core.interface): its model file must be what its manifest
        declares, and fit the running model and the alert rules unless a declared change is accepted."""
        ref = manifest.served_file(self.config.health.model_role)
        try:
            candidate = _interface_of(staged[ref.path])
        except ValueError as exc:
            raise ReleaseRejected(f"{ref.path}: the model cannot be served here: {exc}", reason="incompatible") from exc
        declared = manifest.model
        if declared.classes is not None and declared.classes != candidate.classes:
            raise ReleaseRejected(
                f"{ref.path}: the manifest declares classes {list(declared.classes)}, the model file has "
                f"{list(candidate.classes)}",
                reason="incompatible",
            )
        if declared.input_size is not None and declared.input_size != candidate.input_size:
            raise ReleaseRejected(
                f"{ref.path}: the manifest declares input size {list(declared.input_size)}, the model file takes "
                f"{list(candidate.input_size)}",
                reason="incompatible",
            )
        current: Optional[ModelInterface] = None
        current_path = self.current_model(state)
        if current_path is not None:
            try:
                current = _interface_of(current_path)
            except ValueError:
                current = None  # a running model that no longer reads is no reference (and needs replacing)
        c = self.config
        accepted = {
            what
            for what, ok in (
                ("classes", c.accept_class_changes),
                ("input_size", c.accept_input_size_changes),
                ("output_layout", c.accept_output_layout_changes),
            )
            if ok
        }
        try:
            check_interface(candidate, current, declared.changes, self.serving().needs, accepted)
        except ReleaseError as exc:
            raise ReleaseRejected(str(exc), reason=exc.reason) from exc

    def _download_all(self, client: TrustClient, manifest: ReleaseManifest, staging: Path) -> Dict[str, Path]:
        staged = {}
        for i, ref in enumerate(manifest.targets()):
            info = client.target_info(ref.path)
            if info.length != ref.length or info.sha256 != ref.sha256:
                # The manifest and the signed targets disagree: files of two releases mixed.
                raise VerificationError(f"{ref.path}: signed metadata and manifest disagree", reason="hash_mismatch")
            staged[ref.path] = client.download(info, staging / f"{info.sha256}.{ref.path.rsplit('/', 1)[-1]}")
            if i == 0:
                _fault("downloaded_one")
        return staged

    def _install_slot(self, slot: str, manifest_bytes: bytes, staged: Dict[str, Path]) -> Path:
        final = self.slot_dir(slot)
        if (final / ".complete").exists():
            return final
        tmp = self.slots_dir / f".tmp-{slot}"
        remove_tree(tmp)
        tmp.mkdir(parents=True)
        for target_path, src in staged.items():
            dest = tmp.joinpath(*target_path.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
        (tmp / "release.json").write_bytes(manifest_bytes)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        (tmp / ".complete").write_bytes(b"")
        remove_tree(final)
        os.replace(tmp, final)
        fsync_dir(self.slots_dir)
        return final

    def _switch(self, state: InstallState, manifest: ReleaseManifest, slot: str) -> SlotRecord:
        model_ref = manifest.served_file(self.config.health.model_role)
        record = SlotRecord(
            slot,
            manifest.name,
            str(manifest.version),
            manifest.counter,
            manifest.channel,
            model_ref.path,
            health_passed=True,
        )
        if state.active is None or state.active.slot != slot:
            state.previous = state.active
        state.active = record
        state.pending = None
        if state.known_good is None:
            # Nothing to fall back to: the first release that passes its health check is committed at once.
            state.known_good = record
            state.floor = max(state.floor, manifest.counter)
            self._conclude(state, "committed", record.ref(), None, "first release on this device: committed at once")
        else:
            state.trial = Trial(slot, since=self._now().isoformat())
            self._conclude(state, "trial", record.ref(), None, "installed; on probation")
        _fault("trial")
        self._gc(state)
        return record

    def _abandon(self, state: InstallState, why: str) -> None:
        pending = state.pending
        assert pending is not None
        state.pending = None
        self._conclude(
            state, "failed", pending.release, "interrupted", f"install attempt abandoned ({why}) at {pending.phase}"
        )
        if pending.slot and pending.slot not in state.slots_in_use():
            remove_tree(self.slot_dir(pending.slot))

    # ------------------------------------------------------------------ the queue (install during probation)
    def install_or_queue(self, path: Path) -> Union[SlotRecord, Queued]:
        """``ota install PATH``: install a local bundle; while a release is on probation, queue it instead.

        Queueing verifies the bundle now (TUF, hashes, compatibility, the model interface, the floor as it is
        now), keeps a copy of it under ``<state_dir>/queue/`` so that the drive can be removed, and records
        it in the state; :meth:`install_queued` installs it once the trial commits or rolls back (the daemon
        and ``ota commit`` / ``ota rollback`` call it), verifying it again then. One bundle is queued at a time:
        a newer release (higher counter) replaces it, an older one is refused (``dequeue`` drops it).

        Returns the new active release, the queued entry, or the active release when the bundle holds the
        release on probation itself (nothing to do).

        Raises:
            OtaError: as :meth:`install_path`; ``StateError`` when an older release than the queued one is given.
        """
        path = Path(path)
        with _Lock(self._lock_path):
            state = self.state_file.load()
            if state.trial is None:
                return _installed(self._install_path_locked(path, str(path), dry_run=False))
            return self._queue_locked(state, path)

    def _queue_locked(self, state: InstallState, path: Path) -> Union[SlotRecord, Queued]:
        limits = self.config.limits
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self._clean_queue(state)
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=str(self.queue_dir)))
        try:
            # Copy first, then verify the copy: what is verified is what will be installed, not the drive.
            if path.is_file():
                size = path.stat().st_size
                if size > limits.max_bundle_bytes:
                    raise BundleError(f"{path}: {size} bytes, above the bundle limit {limits.max_bundle_bytes}")
                copy = incoming / "bundle.tar"
            elif path.is_dir():
                # vetted before it is read (links, devices, sizes): the copy must not follow a link off the drive
                vet_directory(path, limits.max_bundle_bytes, limits.max_bundle_members)
                copy = incoming / "bundle"
            else:
                raise OtaError(f"{path}: no such bundle file or directory", reason="bundle_invalid")
            try:
                if copy.name.endswith(".tar"):
                    shutil.copyfile(path, copy)
                else:
                    shutil.copytree(path, copy, symlinks=True)
                _fsync_tree(incoming)
            except OSError as exc:  # a full disk, a drive pulled out while copying
                raise StateError(f"cannot keep a copy of {path} on this box: {exc}") from exc
            verified = self._install_path_locked(copy, str(path), dry_run=True)
            assert isinstance(verified, _Verified)
            manifest, slot = verified.manifest, verified.slot
            ref = {"name": manifest.name, "version": str(manifest.version), "counter": manifest.counter}
            state = self.state_file.load()  # the dry run may have written it (an abandoned attempt)
            active = state.active
            if active is not None and active.slot == slot:
                self._emit("already_active", ref, "already_active", "it is the release on probation: nothing queued")
                return active
            old = state.queued
            if old is not None and old.slot != slot and int(old.release.get("counter", 0)) > manifest.counter:
                raise StateError(
                    f"{_label_ref(ref)} is not queued: {_label_ref(old.release)} is queued already "
                    "(edge-agent ota dequeue drops it)"
                )
            name = slot + (".tar" if copy.name.endswith(".tar") else "")
            final = self.queue_dir / name
            remove_tree(final)
            os.replace(copy, final)
            fsync_dir(self.queue_dir)
            state.queued = Queued(slot, ref, name, source=str(path), queued_at=utcnow())
            self._conclude(
                state,
                "queued",
                ref,
                None,
                f"verified and kept on the box: installs when {_label(active)} (on probation) commits or rolls "
                "back, verified again then; the drive can be removed",
            )
            if old is not None and old.bundle != name:
                remove_tree(self.queue_dir / old.bundle)
            return state.queued
        finally:
            remove_tree(incoming)

    def install_queued(self) -> Optional[SlotRecord]:
        """Install the queued bundle if no release is on probation any more; ``None`` when there is nothing to do.

        The copy is verified again as any bundle is (its metadata against the device's newest, its counter
        against the floor of now: a trial that committed a newer release makes it stale). Whatever the outcome
        it leaves the queue; the outcome is the state's ``last`` and the events, as for any install.

        Raises:
            OtaError: the install failed (the release is dropped from the queue).
        """
        with _Lock(self._lock_path):
            state = self.state_file.load()
            queued = state.queued
            if queued is None or state.trial is not None:
                return None
            if queued.attempts >= MAX_QUEUED_ATTEMPTS:
                self._forget_queued(state, queued)
                self._conclude(
                    state,
                    "failed",
                    queued.release,
                    "interrupted",
                    f"queued release dropped: {queued.attempts} install attempts were interrupted",
                )
                return None
            queued.attempts += 1
            self.state_file.store(state)
            bundle = self.queue_dir / queued.bundle
            try:
                record = _installed(self._install_path_locked(bundle, f"queued from {queued.source}", dry_run=False))
            except OtaError:
                self._settle_queued(queued)  # refused or failed: recorded as any install's outcome, not retried
                raise
            self._settle_queued(queued)
            return record

    def _settle_queued(self, queued: Queued) -> None:
        state = self.state_file.load()
        if state.queued is not None and state.queued.slot == queued.slot:
            self._forget_queued(state, state.queued)
            self.state_file.store(state)

    def dequeue(self) -> Optional[Queued]:
        """Drop the queued bundle (``ota dequeue``); returns it, or ``None`` when none was queued."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            queued = state.queued
            if queued is not None:
                self._forget_queued(state, queued)
                self.state_file.store(state)
            return queued

    def _forget_queued(self, state: InstallState, queued: Queued) -> None:
        state.queued = None
        remove_tree(self.queue_dir / queued.bundle)

    def _clean_queue(self, state: InstallState) -> None:
        """Delete what the queue holds besides the queued bundle (copies a kill interrupted, replaced ones)."""
        if not self.queue_dir.is_dir():
            return
        keep = None if state.queued is None else state.queued.bundle
        for entry in self.queue_dir.iterdir():
            if entry.name != keep:
                remove_tree(entry)

    # ------------------------------------------------------------------ daemon lifecycle
    def on_start(self) -> Optional[Path]:
        """Call at every daemon start: finish or abandon an interrupted attempt, count trial starts/crashes.

        Returns the model the daemon should load now.
        """
        with _Lock(self._lock_path):
            state = self.state_file.load()
            if state.pending is not None:
                pending = state.pending
                slot_dir = self.slot_dir(pending.slot) if pending.slot else None
                if (
                    pending.phase == Phase.HEALTH_CHECKED.value
                    and slot_dir is not None
                    and (slot_dir / ".complete").exists()
                ):
                    manifest = parse_manifest((slot_dir / "release.json").read_bytes())
                    self._switch(state, manifest, pending.slot or "")
                else:
                    self._abandon(state, "restart")
            for tmp in self.slots_dir.glob(".tmp-*"):
                remove_tree(tmp)
            self._clean_queue(state)
            if state.trial is not None:
                self._count_start(state, state.trial)
        return self.active_model_path()

    def _count_start(self, state: InstallState, trial: Trial) -> None:
        """A daemon start with a release on probation: judge how the previous run ended, then begin serving."""
        boot = self._boot_id()
        end = previous_run_end(trial, boot)
        if end is RunEnd.CRASH:
            trial.crashes += 1
        elif end is RunEnd.POWER_LOSS:
            trial.power_losses += 1
        self._begin_serving(trial, boot)
        probation = self.config.probation
        if trial.crashes >= probation.max_crashes:
            self._rollback(state, "crash_loop", f"{trial.crashes} unclean restart(s) during probation")
        elif trial.power_losses >= probation.max_power_losses:
            # not the model's crashes: back to the known-good release, but the release is not marked bad
            self._rollback(
                state,
                "power_loss",
                f"{trial.power_losses} power losses / hard resets during probation: the trial cannot finish",
                mark_bad=False,
            )
        else:
            self.state_file.store(state)
            if end is RunEnd.POWER_LOSS:
                self._emit(
                    "trial",
                    self._ref_of(state, trial.slot),
                    "power_loss",
                    "the previous run ended with its machine (a new kernel boot): power loss "
                    f"{trial.power_losses} of {probation.max_power_losses}, not counted as a crash; the time of "
                    "the run it cut short does not count towards probation",
                )

    def _begin_serving(self, trial: Trial, boot: Optional[str]) -> None:
        trial.starts += 1
        trial.running = True
        trial.boot_id = boot
        trial.serving_since = self._now().isoformat()

    @staticmethod
    def _ref_of(state: InstallState, slot: str) -> Optional[Dict[str, Any]]:
        active = state.active
        return active.ref() if active is not None and active.slot == slot else None

    def mark_serving(self, slot: str) -> bool:
        """The daemon now runs the model of release ``slot``: if it is on probation and this run has not
        counted it yet (installed by another process, or switched by this daemon while it ran), this run is
        one of its starts from now: crash mark, boot id, and the probation clock. Returns whether it was."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            trial = state.trial
            if trial is None or trial.slot != slot or trial.running:
                return False
            self._begin_serving(trial, self._boot_id())
            self.state_file.store(state)
            return True

    def mark_clean_shutdown(self) -> None:
        """Call when the daemon stops cleanly (so the next start is not counted as a crash)."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            trial = state.trial
            if trial is not None and trial.running:
                if trial.serving_since is not None:  # the run ended cleanly: its time counts
                    since = dt.datetime.fromisoformat(trial.serving_since)
                    trial.served_s += max(0.0, (self._now() - since).total_seconds())
                trial.running, trial.serving_since = False, None
                self.state_file.store(state)

    def report_unhealthy(self, reason: str) -> bool:
        """The daemon's health metrics failed: roll a release in probation back. Returns whether it did."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            if state.trial is None:
                return False
            self._rollback(state, "unhealthy", reason)
            return True

    def maybe_commit(self) -> bool:
        """Commit the trial once it has served its probation period (call periodically while healthy)."""
        state = self.state()
        if state.trial is None:
            return False
        if not commit_due(state.trial, self._now(), self.config.probation.period_s):
            return False
        self.commit()
        return True

    def commit(self) -> SlotRecord:
        """Make the trial release the known-good one and raise the anti-rollback floor to its counter."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            if state.trial is None or state.active is None:
                raise StateError("no release in probation to commit")
            state.known_good = state.active
            state.floor = max(state.floor, state.active.counter)
            state.trial = None
            self._conclude(state, "committed", state.active.ref(), None, "probation passed")
            _fault("committed")
            self._gc(state)
            return state.active

    def rollback(self, reason: str = "manual") -> SlotRecord:
        """Roll back: a release in probation → known-good; otherwise → the previous release."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            return self._rollback(state, reason, "requested")

    def rollback_if_active(self, name: str, counter: int, reason: str = "manual") -> Optional[SlotRecord]:
        """Roll back only while release (``name``, ``counter``) is the active one; otherwise nothing and None.

        Checked under the state lock, so a repeated request (a rollout re-sending its halt) can never flip the
        device back to the release it left."""
        with _Lock(self._lock_path):
            state = self.state_file.load()
            active = state.active
            if active is None or (active.name, active.counter) != (name, counter):
                return None
            return self._rollback(state, reason, "requested")

    def _rollback(self, state: InstallState, reason: str, detail: str, mark_bad: bool = True) -> SlotRecord:
        failed = state.active
        if state.trial is not None:
            target = state.known_good
            if mark_bad and failed is not None and failed.slot not in state.bad:
                state.bad.append(failed.slot)
        else:
            target = state.previous
        if target is not None and target.slot in state.bad:
            # e.g. the previous release is the one a crash loop rolled back from: never back into it
            raise StateError(
                f"nothing safe to roll back to: the previous release {target.name} {target.version} "
                f"#{target.counter} failed on this device (marked bad); the active release stays"
            )
        if target is None or not target.health_passed or not (self.slot_dir(target.slot) / ".complete").exists():
            raise StateError("no healthy release to roll back to")
        state.active, state.previous, state.trial = target, failed, None
        if state.known_good is None:
            state.known_good = target
        self._conclude(state, "rolled_back", None if failed is None else failed.ref(), reason, detail)
        _fault("rolled_back")
        return target

    # ------------------------------------------------------------------ housekeeping
    def _gc(self, state: InstallState) -> None:
        """Delete slots that are neither active, previous, known-good nor pending; clear staging."""
        keep = set(state.slots_in_use())
        if self.slots_dir.exists():
            for path in self.slots_dir.iterdir():
                if path.name not in keep:
                    remove_tree(path)
        if state.pending is None:
            remove_tree(self.staging_dir / "files")

    def _conclude(
        self,
        state: InstallState,
        kind: str,
        release: Optional[Dict[str, Any]],
        reason: Optional[str],
        detail: Optional[str],
    ) -> None:
        """Store ``state`` with this outcome as its ``last`` (what ``ota status`` tells), then emit the event."""
        state.last = {"kind": kind, "release": release, "reason": reason, "detail": detail, "at": utcnow()}
        self.state_file.store(state)
        self._emit(kind, release, reason, detail)

    def _emit(
        self,
        kind: str,
        release: Optional[Dict[str, Any]] = None,
        reason: Optional[str] = None,
        detail: Optional[str] = None,
    ) -> None:
        try:
            self.on_event(OtaEvent(kind, release, reason, detail))
        except Exception:
            pass

    def _default_health(self, slot_dir: Path, manifest: ReleaseManifest) -> HealthReport:
        h = self.config.health
        return run_health_check(
            slot_dir,
            manifest,
            h.model_role,
            h.intra_op_threads,
            h.latency_repeats,
            self._reference(slot_dir),
            RuntimeCheck(h.runtime_agreement, h.agreement_conf, h.agreement_iou),
        )

    def _reference(self, candidate_dir: Path) -> Optional[ReferenceCheck]:
        """The current model and the golden images this device trusts (the active release's, verified when it
        was installed), for the health check's comparison; ``None`` when nothing runs or it is disabled."""
        h = self.config.health
        state = self.state()
        model = self.current_model(state)
        if h.min_agreement <= 0 or model is None or not model.is_file():
            return None
        images: List[Path] = []
        if state.active is not None and self.slot_dir(state.active.slot) != candidate_dir:
            active_dir = self.slot_dir(state.active.slot)
            try:
                trusted = parse_manifest((active_dir / "release.json").read_bytes())
                images = [active_dir / g.target.path for g in trusted.health.golden]
            except (OSError, ReleaseError):
                images = []
        return ReferenceCheck(model, images, h.min_agreement, h.agreement_conf, h.agreement_iou)


def _public(result: Union[SlotRecord, _Verified]) -> Union[SlotRecord, ReleaseManifest]:
    """What the public install methods return: the new active release, or a dry run's verified manifest."""
    return result.manifest if isinstance(result, _Verified) else result


def _installed(result: Union[SlotRecord, _Verified]) -> SlotRecord:
    assert isinstance(result, SlotRecord)
    return result


def _label(record: Optional[SlotRecord]) -> str:
    return "-" if record is None else f"{record.name} {record.version} (#{record.counter})"


def _label_ref(ref: Dict[str, Any]) -> str:
    return f"{ref.get('name')} {ref.get('version')} (#{ref.get('counter')})"


def _fsync_tree(root: Path) -> None:
    """Make a copied tree durable before it is recorded (a power cut must not leave a recorded, empty copy)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]:
        fsync_dir(directory)


def _interface_of(path: Path) -> ModelInterface:
    """Read a model file's interface without a runtime (ONNX protobuf + metadata). Raises ValueError."""
    from agent.engine.errors import EngineError
    from agent.engine.model import read_model

    try:
        model = read_model(path)
    except EngineError as exc:
        raise ValueError(str(exc)) from exc
    return ModelInterface(model.metadata.class_names, model.metadata.imgsz, model.layout.value)


def iter_fault_points() -> Iterator[str]:
    return iter(FAULT_POINTS)
