"""Bundles (USB drives, MQTT pushes): vetted before anything is extracted or trusted.

A bundle is a directory or an uncompressed / gzip tar file::

    bundle.json        {"format": "edge-ota-bundle", "version": 1, "trust": "offline"|"online",
                        "manifest": "models/<name>/<counter>/release.json"}   (a hint: nothing in it is trusted)
    metadata/          TUF metadata (versioned roots, timestamp.json, N.snapshot.json, N.targets.json, ...)
    targets/           hash-prefixed target files

``trust`` only chooses which *pinned* root verifies the metadata; ``manifest`` only says which signed
target to look up. Every archive member is checked before one byte is written: absolute paths, ``..``,
links, devices / FIFOs, setuid / setgid / sticky bits, duplicates, member count, total size and compression
ratio (bomb) limits. A bundle directory on a drive is held to the same rules.
Extraction then writes regular files itself (never ``tarfile.extract``), with ``O_EXCL``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import List, Tuple

from agent.ota.errors import BundleError

BUNDLE_FORMAT = "edge-ota-bundle"
MAX_BUNDLE_JSON = 16 * 1024
_MEMBER_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX  # never extracted with them; a bundle never needs them

# What reading a damaged archive raises besides TarError: a truncated gzip stream (EOFError), a corrupt one
# (zlib.error, gzip.BadGzipFile which is an OSError). Found by fuzzing (tests/agent/test_fuzz_parsers.py):
# they escaped as tracebacks instead of "bundle_invalid".
_CORRUPT_ARCHIVE = (tarfile.TarError, EOFError, zlib.error, OSError)
_CORRUPT_STREAM = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)  # without OSError: a full disk is not


def _check_mode_bits(name: str, mode: int) -> None:
    if mode & _SPECIAL_BITS:
        bits = [
            label
            for bit, label in ((stat.S_ISUID, "setuid"), (stat.S_ISGID, "setgid"), (stat.S_ISVTX, "sticky"))
            if mode & bit
        ]
        raise BundleError(f"{name}: {'/'.join(bits)} bit set (not allowed in a bundle)")


@dataclass(frozen=True)
class BundleInfo:
    """A bundle directory ready for verification (``root`` holds metadata/ and targets/)."""

    root: Path
    trust: str
    manifest: str


def _check_member_name(name: str) -> PurePosixPath:
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise BundleError(f"archive member {name!r}: absolute or malformed path")
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p != "."]
    if not parts:
        raise BundleError(f"archive member {name!r}: empty path", reason="bundle_invalid")
    if any(p == ".." for p in parts):
        raise BundleError(f"archive member {name!r}: '..' in path")
    if any(not _MEMBER_RE.match(p) for p in parts):
        raise BundleError(f"archive member {name!r}: unexpected characters")
    return PurePosixPath(*parts)


def vet_tar(
    path: Path, max_bytes: int, max_members: int, max_ratio: float
) -> List[Tuple[tarfile.TarInfo, PurePosixPath]]:
    """Check every member of a tar archive; return (member, normalised path) for files and directories.

    Raises:
        BundleError: "bundle_unsafe" for any dangerous member, "bundle_invalid" for an unreadable archive.
    """
    try:
        archive_size = path.stat().st_size
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the `with tar` below
    except _CORRUPT_ARCHIVE as exc:
        raise BundleError(f"{path}: not a readable tar archive: {exc}", reason="bundle_invalid") from exc
    members: List[Tuple[tarfile.TarInfo, PurePosixPath]] = []
    seen = set()
    total = 0
    with tar:
        try:
            for info in tar:  # streaming: stop at the first bad member, before reading the rest
                if len(members) >= max_members:
                    raise BundleError(f"{path}: more than {max_members} members")
                norm = _check_member_name(info.name)
                if info.issym() or info.islnk():
                    raise BundleError(f"archive member {info.name!r}: links are not allowed")
                if not (info.isfile() or info.isdir()):
                    raise BundleError(f"archive member {info.name!r}: device, FIFO or special file")
                _check_mode_bits(f"archive member {info.name!r}", info.mode)
                key = str(norm)
                if key in seen:
                    raise BundleError(f"archive member {info.name!r}: duplicate path")
                seen.add(key)
                if info.isfile():
                    total += info.size
                    if total > max_bytes:
                        raise BundleError(f"{path}: unpacks to more than {max_bytes} bytes")
                    if total > max(archive_size, 1) * max_ratio:
                        raise BundleError(f"{path}: compression ratio above {max_ratio} (archive bomb)")
                members.append((info, norm))
        except _CORRUPT_ARCHIVE as exc:
            raise BundleError(f"{path}: corrupt tar archive: {exc}", reason="bundle_invalid") from exc
    # A file inside a path that is itself a file would make extraction ambiguous.
    files = {str(n) for i, n in members if i.isfile()}
    for _info, norm in members:
        for parent in norm.parents:
            if str(parent) in files:
                raise BundleError(f"archive member {norm}: parent {parent} is a file")
    return members


def extract_tar(path: Path, dest: Path, max_bytes: int, max_members: int, max_ratio: float) -> None:
    """Vet ``path`` then write its files under ``dest`` (which must be empty or absent)."""
    members = vet_tar(path, max_bytes, max_members, max_ratio)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _write_members(path, dest, members)
    except _CORRUPT_STREAM as exc:  # damaged after the headers were vetted (or changed on the drive since)
        raise BundleError(f"{path}: corrupt tar archive: {exc}", reason="bundle_invalid") from exc


def _write_members(path: Path, dest: Path, members: List[Tuple[tarfile.TarInfo, PurePosixPath]]) -> None:
    with tarfile.open(path, "r:*") as tar:
        by_name = {m.name: m for m, _ in members}
        for info, norm in members:
            target = dest.joinpath(*norm.parts)
            if info.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(by_name[info.name])
            if src is None:
                raise BundleError(f"archive member {info.name!r} cannot be read", reason="bundle_invalid")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            written = 0
            with os.fdopen(fd, "wb") as out, src:
                while True:
                    try:
                        block = src.read(1 << 20)
                    except _CORRUPT_ARCHIVE as exc:  # damaged after the headers were vetted
                        raise BundleError(
                            f"archive member {info.name!r} cannot be read: {exc}", reason="bundle_invalid"
                        ) from exc
                    if not block:
                        break
                    written += len(block)
                    if written > info.size:  # the header lied
                        raise BundleError(f"archive member {info.name!r} longer than declared")
                    out.write(block)


def vet_directory(root: Path, max_bytes: int, max_members: int) -> None:
    """Check a bundle directory on a drive: no links, no special files, bounded size and entry count."""
    total = 0
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            count += 1
            if count > max_members:
                raise BundleError(f"{root}: more than {max_members} entries")
            full = Path(dirpath) / name
            _check_member_name(str(full.relative_to(root)))
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise BundleError(f"{full}: symbolic links are not allowed in a bundle")
            _check_mode_bits(str(full), st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{full}: device, FIFO or special file")
            total += st.st_size
            if total > max_bytes:
                raise BundleError(f"{root}: more than {max_bytes} bytes")


def read_bundle_json(root: Path) -> BundleInfo:
    """Read the (unsigned) bundle description; it only selects a pinned root and a signed target."""
    path = root / "bundle.json"
    try:
        if path.is_symlink() or path.stat().st_size > MAX_BUNDLE_JSON:
            raise BundleError(f"{path}: not a small regular file")
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{root}: no bundle.json (not an update bundle)", reason="bundle_invalid") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable: {exc}", reason="bundle_invalid") from exc
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT or raw.get("version") != 1:
        raise BundleError(f"{path}: not an {BUNDLE_FORMAT} version 1 description", reason="bundle_invalid")
    trust, manifest = raw.get("trust"), raw.get("manifest")
    if trust not in ("offline", "online") or not isinstance(manifest, str):
        raise BundleError(
            f"{path}: 'trust' must be offline|online and 'manifest' a target path", reason="bundle_invalid"
        )
    return BundleInfo(root, trust, manifest)
