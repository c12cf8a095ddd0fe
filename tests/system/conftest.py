"""Fixtures of the system tests: the clean OS, the wheelhouse, the install on a clean OS (once per session),
and a box booted from it for each test (``make test-system``; root on Linux, skipped elsewhere).

What the layers hold::

    rootfs        debootstrap's clean Debian bookworm (cached tarball, tests/system/images.py)
    installed     what `deploy/install-x86.sh --wheelhouse` wrote on that clean OS: the session's one install
    <test>/upper  what one test's box writes; thrown away with the test
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.system import images
from tests.system.nspawn import Box

REPO = images.REPO
SRC = "/srv/edge-vision-loop"  # the checkout on the box (read-only), as an operator unpacks a release
WHEELHOUSE = "/srv/wheelhouse"
APT_MIRROR = "/srv/apt"
# The plant's own apt mirror (the boxes have no network): what an offline site sets up before installing
USE_PLANT_MIRROR = (
    f"echo 'deb [trusted=yes] file:{APT_MIRROR} ./' > /etc/apt/sources.list && rm -f /etc/apt/sources.list.d/*"
)
TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "zstd")
FIGURES = Path(os.environ.get("EVL_SYSTEM_FIGURES", str(REPO / "runs" / "system" / "figures.json")))


def _why_not() -> str:
    if not sys.platform.startswith("linux"):
        return "the system tests boot Linux containers and VMs: Linux only"
    if os.geteuid() != 0:
        return "the system tests need root (systemd-nspawn, overlay mounts, QEMU with tap-less devices)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (make test-system installs them with apt)"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    reason = _why_not()
    if not reason:
        return
    skip = pytest.mark.skip(reason=f"SKIPPED LOUDLY: {reason}")
    for item in items:
        if "tests/system" in str(item.fspath):
            item.add_marker(skip)


def record_figure(name: str, value: float, unit: str, how: str) -> None:
    """A measured figure for docs/BENCHMARKS.md (runs/system/figures.json, merged across tests)."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    figures: Dict[str, object] = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[name] = {"value": round(value, 2), "unit": unit, "how": how, "at": time.strftime("%Y-%m-%d %H:%M")}
    FIGURES.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="session")
def rootfs() -> Path:
    return images.build_rootfs()


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    return images.build_wheelhouse()


@pytest.fixture(scope="session")
def apt_mirror(rootfs: Path) -> Path:
    return images.build_apt_mirror(rootfs)


@pytest.fixture(scope="session")
def system_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("system")


def box_binds(wheelhouse: Path, apt_mirror: Path) -> Dict[Path, str]:
    return {REPO: SRC, wheelhouse: WHEELHOUSE, apt_mirror: APT_MIRROR}


@dataclass
class Install:
    """The session's install on a clean OS, as an operator ran it."""

    layer: Path
    command: str
    output: str
    seconds: float
    boot_s: float


INSTALL_COMMAND = f"cd {SRC} && deploy/install-x86.sh --wheelhouse {WHEELHOUSE}"


@pytest.fixture(scope="session")
def installed(rootfs: Path, wheelhouse: Path, apt_mirror: Path, system_tmp: Path) -> Iterator[Install]:
    """`deploy/install-x86.sh` run once, as root, on a freshly booted clean OS with no network (apt from the
    plant's mirror, pip from the wheelhouse)."""
    layer = system_tmp / "installed"
    box = Box([rootfs], layer, box_binds(wheelhouse, apt_mirror), system_tmp / "install-console.log")
    boot_s = box.start()
    try:
        box.sh(USE_PLANT_MIRROR)
        started = time.monotonic()
        result = box.sh(INSTALL_COMMAND + " 2>&1", timeout=900)
        seconds = time.monotonic() - started
    finally:
        box.stop()
    yield Install(layer, INSTALL_COMMAND, result.stdout, seconds, boot_s)


@pytest.fixture
def box(rootfs: Path, wheelhouse: Path, apt_mirror: Path, installed: Install, tmp_path: Path) -> Iterator[Box]:
    """A box booted from the installed layer (as it is after the install: the unit enabled, the example
    configuration in place), with a write layer of its own."""
    binds = box_binds(wheelhouse, apt_mirror)
    booted = Box([rootfs, installed.layer], tmp_path / "upper", binds, tmp_path / "console.log")
    booted.start()
    try:
        yield booted
    finally:
        try:
            journal = booted.sh("journalctl --no-pager -o short-monotonic -n 400", check=False, timeout=30).stdout
            (tmp_path / "journal.txt").write_text(journal)
        finally:
            booted.stop()
