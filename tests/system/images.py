"""What the system tests boot and install, built once and cached outside the repository.

Cache (``$EVL_SYSTEM_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/edge-vision-loop/system``), every entry keyed
by what it was built from, so a fresh clone on the same machine (CI) reuses it::

    debs/                       debootstrap's and apt's downloads (rebuilds need no network for them)
    rootfs-<key>.tar.zst        the clean Debian bookworm root file system (key: suite, packages, recipe)
    rootfs-<key>/               the same, unpacked (booted read-only: every test writes to an overlay)
    wheelhouse-<key>/           every wheel `.[cloud]` needs on the guest's Python, plus the build backend
                                (key: pyproject.toml and the guest's Python version)

Run ``python -m tests.system.images`` to build them ahead of a test run (the Makefile's ``test-system`` does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Sequence

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = os.environ.get("EVL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The box as a customer installs it: Debian minbase, systemd as init, udev, Python with venv (what
# deploy/install-x86.sh expects to find; it would apt-get them otherwise, and the box has no network here).
BOX_PACKAGES = ("systemd", "systemd-sysv", "udev", "python3", "python3-venv")
# Added for the tests, not for the product: the MQTT broker the guest's agent publishes to (on the guest's own
# loopback, as a site broker would be on the plant network), and Debian's kernel for the QEMU boots (its
# modules must be inside the root file system: usb-storage, xhci, vfat are loaded by udev on hot-plug).
TEST_PACKAGES = ("mosquitto", "linux-image-amd64")
# Bump when _post_configure changes: part of the key, so an old tarball is never reused for a new recipe.
ROOTFS_RECIPE = 1
GUEST_PYTHON = "3.11"  # bookworm's python3: the wheelhouse is built for it


def cache_dir() -> Path:
    explicit = os.environ.get("EVL_SYSTEM_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-vision-loop" / "system"


def _key(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _log(message: str) -> None:
    print(f"[system-images] {message}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], **kwargs: object) -> None:
    _log("$ " + " ".join(cmd))
    subprocess.run(list(cmd), check=True, **kwargs)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------- root file system


def rootfs_key(packages: Iterable[str] = BOX_PACKAGES + TEST_PACKAGES) -> str:
    return _key({"suite": SUITE, "packages": sorted(packages), "recipe": ROOTFS_RECIPE})


def _post_configure(root: Path) -> None:
    """What debootstrap leaves undone for a bootable box: a host name, an fstab for the VM's disk, no apt
    downloads kept. Nothing of the product: the install script does that in each test."""
    (root / "etc" / "hostname").write_text("box\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tbox\n::1\tlocalhost ip6-localhost\n")
    # QEMU boots /dev/vda as the root; systemd-remount-fs applies these options (nspawn ignores the file)
    (root / "etc" / "fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    for leftover in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        leftover.unlink()
    # An empty machine-id: each boot of the read-only tree gets a fresh one, as a freshly imaged box does.
    (root / "etc" / "machine-id").write_text("")
    # No first-boot questions on a console nobody reads (systemd-firstboot would prompt for a locale).
    for unit in ("systemd-firstboot.service",):
        link = root / "etc" / "systemd" / "system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to("/dev/null")


def build_rootfs(packages: Sequence[str] = BOX_PACKAGES + TEST_PACKAGES) -> Path:
    """The unpacked root file system (built by debootstrap on the first call, then from the cached tarball)."""
    cache = cache_dir()
    key = rootfs_key(packages)
    tarball = cache / f"rootfs-{key}.tar.zst"
    unpacked = cache / f"rootfs-{key}"
    if (unpacked / ".complete").exists():
        return unpacked
    cache.mkdir(parents=True, exist_ok=True)
    if not tarball.exists():
        debs = cache / "debs"
        debs.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix="debootstrap-") as tmp:
            root = Path(tmp) / "root"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(sorted(packages))}",
                    f"--cache-dir={debs}",
                    SUITE,
                    str(root),
                    MIRROR,
                ]
            )
            _post_configure(root)
            partial = tarball.with_suffix(".partial")
            _run(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--acls",
                    "-C",
                    str(root),
                    "-I",
                    "zstd -T0 -3",
                    "-cf",
                    str(partial),
                    ".",
                ]
            )
            partial.rename(tarball)
    if unpacked.exists():
        shutil.rmtree(unpacked)
    unpacked.mkdir()
    _run(["tar", "--numeric-owner", "--xattrs", "--acls", "-C", str(unpacked), "-I", "zstd", "-xf", str(tarball)])
    (unpacked / ".complete").write_text(key + "\n")
    return unpacked


# ------------------------------------------------------------------------------- the plant's apt mirror

# What the install scripts apt-get on a box (deploy/install-x86.sh, install-jetson.sh): GStreamer and its Python
# bindings for RTSP, CSI and GStreamer cameras (seen by the venv through --system-site-packages), and on a Jetson
# OpenCV (Debian's python3-opencv is built with GStreamer, as JetPack's is: the script refuses one without).
# The boxes have no network: they get these from a local mirror, as an offline plant does (a flat repository
# bound read-only at /srv/apt, `deb [trusted=yes] file:/srv/apt ./`).
GSTREAMER_PACKAGES = (
    "python3-gi",
    "gir1.2-gstreamer-1.0",
    "gir1.2-gst-plugins-base-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-libav",
)
JETSON_PACKAGES = ("python3-opencv",)
MIRROR_RECIPE = 1
# Stubs, named as such, for what only NVIDIA ships:
#   python3-libnvinfer    a `tensorrt` module with a version and nothing else (no engine can be built or run),
#                         as a .deb in the mirror, so the script's apt step installs it like JetPack's
#   /etc/nv_tegra_release the L4T release file the script checks for          } the Jetson layer
#   onnxruntime-gpu       stand-in: the PyPI CPU onnxruntime wheel in the     } (build_jetson_layer)
#                         system's dist-packages, where JetPack's would be
TENSORRT_STUB_VERSION = "8.6.2"
NV_TEGRA_RELEASE = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
    "# STUB written by tests/system/images.py: this is an x86 container standing in for a Jetson\n"
)
TENSORRT_STUB = f'''"""STUB of JetPack's TensorRT Python bindings (python3-libnvinfer), made by tests/system/images.py.

It only lets deploy/install-jetson.sh find and print a version on an x86 container; any use raises.
"""

__version__ = "{TENSORRT_STUB_VERSION}"


def __getattr__(name):
    raise ImportError(f"tensorrt.{{name}}: this is a stub of python3-libnvinfer (no TensorRT on this machine)")
'''


def _stub_deb(work: Path, package: str, version: str, files: Dict[str, str]) -> Path:
    root = work / package
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: tests/system <stub@invalid>\n"
        f"Description: STUB of JetPack's {package} for the system tests (tests/system/images.py)\n"
    )
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    deb = work / f"{package}_{version}_all.deb"
    _run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], stdout=subprocess.DEVNULL)
    return deb


def apt_mirror_key(rootfs: Path) -> str:
    packages = sorted(GSTREAMER_PACKAGES + JETSON_PACKAGES)
    return _key({"rootfs": rootfs.name, "packages": packages, "recipe": MIRROR_RECIPE, "trt": TENSORRT_STUB_VERSION})


def build_apt_mirror(rootfs: Path) -> Path:
    """A flat apt repository with every package the install scripts may apt-get on the clean root file system
    (and their dependencies), plus the python3-libnvinfer stub. Downloaded once, with network, by apt itself in
    a throwaway container over the clean root file system (so the set is exactly what that OS lacks)."""
    cache = cache_dir()
    mirror = cache / f"apt-mirror-{apt_mirror_key(rootfs)}"
    if (mirror / ".complete").exists():
        return mirror
    if mirror.exists():
        shutil.rmtree(mirror)
    mirror.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="mirror-") as tmp:
        work = Path(tmp)
        _stub_deb(
            work,
            "python3-libnvinfer",
            f"{TENSORRT_STUB_VERSION}-stub",
            {"usr/lib/python3/dist-packages/tensorrt/__init__.py": TENSORRT_STUB},
        )
        (work / "upper").mkdir()
        packages = " ".join(GSTREAMER_PACKAGES + JETSON_PACKAGES)
        script = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
            "apt-get install -y -qq --download-only --no-install-recommends "
            f"-o Dir::Cache::archives=/mirror {packages}; "
            "apt-get install -y -qq --no-install-recommends apt-utils >/dev/null; cp /stub/*.deb /mirror/; "
            "cd /mirror && rm -f lock && rm -rf partial && apt-ftparchive packages . > Packages"
        )
        _run(
            [
                "systemd-nspawn",
                "--quiet",
                f"--directory={rootfs}",
                f"--overlay={rootfs}:{work / 'upper'}:/",
                "--register=no",
                "--keep-unit",
                "--resolv-conf=replace-host",
                f"--bind={mirror}:/mirror",
                f"--bind-ro={work}:/stub",
                "bash",
                "-c",
                script,
            ]
        )
    (mirror / ".complete").write_text("ok\n")
    return mirror


def jetson_layer_key(wheelhouse: Path) -> str:
    ort = sorted(p.name for p in wheelhouse.glob("onnxruntime-*.whl"))
    return _key({"ort": ort, "nv_tegra_release": NV_TEGRA_RELEASE, "recipe": MIRROR_RECIPE})


def build_jetson_layer(wheelhouse: Path) -> Path:
    """An overlay layer: the L4T release file and JetPack's onnxruntime-gpu stand-in (see above)."""
    cache = cache_dir()
    layer = cache / f"jetson-layer-{jetson_layer_key(wheelhouse)}"
    if (layer / ".complete").exists():
        return layer
    if layer.exists():
        shutil.rmtree(layer)
    site = layer / "usr" / "lib" / "python3" / "dist-packages"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "--no-deps",
            "--target",
            str(site),
            "onnxruntime",
            "flatbuffers",
            "protobuf",
            "packaging",
        ]
    )
    (layer / "etc").mkdir(exist_ok=True)
    (layer / "etc" / "nv_tegra_release").write_text(NV_TEGRA_RELEASE)
    (layer / ".complete").write_text("ok\n")
    return layer


# ------------------------------------------------------------------------------------------------ wheelhouse


def wheelhouse_key() -> str:
    return _key({"pyproject": hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest(), "py": GUEST_PYTHON})


def build_wheelhouse(python: str = sys.executable) -> Path:
    """Every wheel the `cloud` extra (which includes `edge`) pulls for the guest's Python, plus pip and the
    project's build backend, so that the install scripts run with ``--wheelhouse`` and no index at all."""
    if sys.version_info[:2] != tuple(int(p) for p in GUEST_PYTHON.split(".")):
        raise RuntimeError(f"the wheelhouse is built by Python {GUEST_PYTHON} (the guest's); this is {sys.version}")
    cache = cache_dir()
    house = cache / f"wheelhouse-{wheelhouse_key()}"
    if (house / ".complete").exists():
        return house
    partial = house.with_name(house.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    build_backend = _build_requirements()
    _run([*pip, "download", "--quiet", "--only-binary=:all:", "--dest", str(partial), "pip", *build_backend])
    # the project's own dependencies (its own wheel is built per run: it follows the working tree)
    _run([*pip, "download", "--quiet", "--prefer-binary", "--dest", str(partial), f"{REPO}[cloud]"])
    for stray in partial.glob("edge_vision_loop-*"):
        stray.unlink()
    (partial / ".complete").write_text(wheelhouse_key() + "\n")
    partial.rename(house)
    return house


def _build_requirements() -> list[str]:
    text = (REPO / "pyproject.toml").read_text()
    start = text.index("requires = [", text.index("[build-system]")) + len("requires = [")
    return [item.strip().strip('"') for item in text[start : text.index("]", start)].split(",") if item.strip()]


def prune(keep: Iterable[Path]) -> None:
    """Remove cache entries built from anything else than what this tree needs now (an older pyproject.toml,
    package list or recipe): each is hundreds of MB, and nothing would ever use them again."""
    kept = {p.name for p in keep} | {f"{p.name}.tar.zst" for p in keep}
    prefixes = ("rootfs-", "wheelhouse-", "apt-mirror-", "jetson-layer-")
    for entry in cache_dir().iterdir():
        if entry.name.startswith(prefixes) and entry.name not in kept:
            _log(f"removing the stale {entry}")
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def main(argv: Sequence[str] = ()) -> int:
    rootfs = build_rootfs()
    _log(f"root file system: {rootfs}")
    house = build_wheelhouse()
    _log(f"wheelhouse: {house} ({len(list(house.glob('*.whl')))} wheels)")
    mirror = build_apt_mirror(rootfs)
    _log(f"apt mirror: {mirror} ({len(list(mirror.glob('*.deb')))} packages)")
    layer = build_jetson_layer(house)
    _log(f"Jetson layer: {layer}")
    from tests.system import vm  # the VM's kernel and initramfs, built here so that no two test workers race

    _log(f"VM boot files: {vm.boot_files(rootfs)['initrd'].parent}")
    prune([rootfs, house, mirror, layer])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
