"""Archives and bundle directories are checked before anything is extracted (USB / pushed bundles)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Callable

import pytest

from agent.ota import BundleError
from agent.ota.bundle import extract_tar, vet_directory
from tests.agent.ota.conftest import World

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_members": 100, "max_ratio": 50.0}


def make_tar(path: Path, build: Callable[[tarfile.TarFile], None], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        build(tar)
    return path


def add_file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_with_mode(tar: tarfile.TarFile, name: str, mode: int, directory: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if directory:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    tar.addfile(info)


CASES = {
    "absolute": (lambda t: add_file(t, "/etc/cron.d/evil"), "absolute"),
    "dotdot": (lambda t: add_file(t, "metadata/../../evil"), "'..'"),
    "symlink": (lambda t: add_special(t, "metadata/root.json", tarfile.SYMTYPE, "/etc/shadow"), "links"),
    "hardlink": (lambda t: add_special(t, "metadata/x", tarfile.LNKTYPE, "/etc/shadow"), "links"),
    "chardev": (lambda t: add_special(t, "dev", tarfile.CHRTYPE), "special"),
    "fifo": (lambda t: add_special(t, "fifo", tarfile.FIFOTYPE), "special"),
    "duplicate": (lambda t: (add_file(t, "bundle.json"), add_file(t, "./bundle.json")), "duplicate"),
    "file_as_dir": (lambda t: (add_file(t, "a"), add_file(t, "a/b")), "is a file"),
    "too_many": (lambda t: [add_file(t, f"f{i}") for i in range(101)], "members"),
    "odd_chars": (lambda t: add_file(t, "metadata/root.json\nx"), "characters"),
    "setuid": (lambda t: add_with_mode(t, "targets/run", 0o4755), "setuid bit"),
    "setgid": (lambda t: add_with_mode(t, "targets/run", 0o2755), "setgid bit"),
    "sticky_dir": (lambda t: add_with_mode(t, "targets", 0o1777, directory=True), "sticky bit"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_unsafe_members_refused(tmp_path: Path, case: str) -> None:
    build, fragment = CASES[case]
    archive = make_tar(tmp_path / "b.tar", build)
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match=fragment) as info:
        extract_tar(archive, dest, **LIMITS)
    assert info.value.reason == "bundle_unsafe"
    assert not dest.exists()  # nothing written before the whole archive was vetted


def test_size_and_ratio_bombs(tmp_path: Path) -> None:
    big = make_tar(tmp_path / "big.tar", lambda t: add_file(t, "a", b"\0" * (11 * 1024 * 1024)))
    with pytest.raises(BundleError, match="more than"):
        extract_tar(big, tmp_path / "o1", **LIMITS)
    bomb = make_tar(tmp_path / "bomb.tar.gz", lambda t: add_file(t, "a", b"\0" * (5 * 1024 * 1024)), "w:gz")
    assert bomb.stat().st_size < 100_000
    with pytest.raises(BundleError, match="ratio"):
        extract_tar(bomb, tmp_path / "o2", **LIMITS)


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(BundleError) as info:
        extract_tar(junk, tmp_path / "o", **LIMITS)
    assert info.value.reason == "bundle_invalid"


def test_good_archive_extracts(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "ok.tar", lambda t: (add_file(t, "metadata/a.json", b"{}"), add_file(t, "bundle.json"))
    )
    extract_tar(archive, tmp_path / "o", **LIMITS)
    assert (tmp_path / "o" / "metadata" / "a.json").read_bytes() == b"{}"


def test_directory_with_symlink_refused(tmp_path: Path) -> None:
    (tmp_path / "b" / "metadata").mkdir(parents=True)
    os.symlink("/etc/passwd", tmp_path / "b" / "metadata" / "1.root.json")
    with pytest.raises(BundleError, match="symbolic"):
        vet_directory(tmp_path / "b", 1 << 20, 100)


@pytest.mark.parametrize(("mode", "fragment"), [(0o4755, "setuid"), (0o2755, "setgid")])
def test_directory_with_a_setuid_or_setgid_file_refused(tmp_path: Path, mode: int, fragment: str) -> None:
    (tmp_path / "metadata").mkdir()
    tool = tmp_path / "metadata" / "tool"
    tool.write_bytes(b"x")
    os.chmod(tool, mode)
    with pytest.raises(BundleError, match=fragment) as info:
        vet_directory(tmp_path, max_bytes=10**6, max_members=100)
    assert info.value.reason == "bundle_unsafe"


def test_directory_with_fifo_refused(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    os.mkfifo(tmp_path / "b" / "timestamp.json")
    with pytest.raises(BundleError, match="special"):
        vet_directory(tmp_path / "b", 1 << 20, 100)


def test_real_tar_bundle_installs_and_evil_one_does_not(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    good = committed_world.bundle("r2", tar=True)
    evil = committed_world.tmp / "evil.tar"
    with tarfile.open(good) as src, tarfile.open(evil, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        add_special(dst, "targets/x", tarfile.SYMTYPE, "/etc/shadow")
    inst = committed_world.installer()
    with pytest.raises(BundleError):
        inst.install_path(evil)
    assert inst.state().active.version == "1.0.0"
    assert inst.install_path(good).version == "1.1.0"
