"""bench/gpu_setup.py: what the GPU check installs, from where, and what it reports when it cannot.

The pip commands are decided by a pure function (table-driven below); one test installs a real wheel through
pip from a local folder with no index, the way a machine with no registry gets the carried wheels.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
import zipfile
from pathlib import Path
from typing import List, Optional

import pytest

from bench import gpu_setup
from bench.gpu_setup import Need, pip_commands, wanted

SITE = Path("/tmp/site")
WHEELS = Path("/tmp/wheels")
PYPI = Need("structlog", ("structlog>=23.1",), "logging")
RESOLVING = Need("x", ("x-meta",), "a meta package", resolve=True)
NVIDIA = Need("tensorrt", ("tensorrt-cu12<11",), "engines", "nvidia", resolve=True, carried=False)
LARGE = Need("onnxruntime_gpu_probe", ("onnxruntime-gpu",), "providers", carried=False)


@pytest.mark.parametrize(
    "need, wheels, nvidia_index, flags, reason",
    [
        (PYPI, WHEELS, None, ["--no-index", "--find-links", str(WHEELS), "--no-deps"], ""),  # carried
        (RESOLVING, WHEELS, None, ["--no-index", "--find-links", str(WHEELS), "--no-deps"], ""),  # all carried
        (NVIDIA, WHEELS, "https://pypi.nvidia.com", None, "not in the carried wheels"),  # offline: no TensorRT
        (LARGE, WHEELS, None, None, "not in the carried wheels"),
        (PYPI, None, None, ["--no-deps"], ""),  # online: only what is named, the machine's torch stays
        (RESOLVING, None, None, [], ""),
        (NVIDIA, None, "https://pypi.nvidia.com", ["--extra-index-url", "https://pypi.nvidia.com"], ""),
        (NVIDIA, None, None, None, "NVIDIA's index not given"),
        (LARGE, None, None, ["--no-deps"], ""),
    ],
)
def test_pip_commands(
    need: Need, wheels: Optional[Path], nvidia_index: Optional[str], flags: Optional[List[str]], reason: str
) -> None:
    [(got, cmd, why)] = pip_commands("py", SITE, [need], wheels, nvidia_index)
    assert got is need
    if flags is None:
        assert cmd is None and reason in why
        return
    assert cmd is not None and why == ""
    assert cmd[:3] == ["py", "-m", "pip"] and cmd[cmd.index("--target") + 1] == str(SITE)
    assert cmd[-len(need.requirements) :] == list(need.requirements)
    for flag in flags:
        assert flag in cmd
    assert ("--no-index" in cmd) == (wheels is not None)
    assert ("--no-deps" in cmd) == (wheels is not None or not need.resolve)


@pytest.mark.parametrize("cuda_major, suffix", [(12, "cu12"), (13, "cu13")])
def test_wanted_follows_the_machines_cuda(cuda_major: int, suffix: str) -> None:
    needs = {n.module: n for n in wanted(cuda_major, "<11")}
    assert needs["tensorrt"].requirements == (f"tensorrt-{suffix}<11",)
    assert not needs["tensorrt"].carried and needs["tensorrt"].index == "nvidia"
    # pydantic's core is pinned with it: pip --no-deps would otherwise pair a newer core with an older pydantic
    assert any(r.startswith("pydantic-core==") for r in needs["pydantic"].requirements)


def test_the_carried_wheels_are_downloaded_for_the_machines_interpreter() -> None:
    cmd = gpu_setup.download_command("py", Path("w"), "3.12", 13)
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--only-binary=:all:" in cmd and "--no-deps" in cmd
    assert "polars==0.20.31" in cmd and not any(r.startswith(("tensorrt", "onnxruntime-gpu")) for r in cmd)


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal, valid pure-Python wheel holding one module ``name``."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return wheel


def test_prepare_installs_carried_wheels_offline_and_reports_what_it_could_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "edge_gpu_probe_a", "1.0")
    needs = [
        Need("json", ("json-is-stdlib",), "already present"),
        Need("edge_gpu_probe_a", ("edge_gpu_probe_a==1.0",), "carried"),
        Need("edge_gpu_probe_b", ("edge_gpu_probe_b",), "named as carried, but not in the folder"),
        Need("edge_gpu_probe_c", ("edge_gpu_probe_c",), "too large to carry", carried=False),
    ]
    monkeypatch.setattr(gpu_setup, "wanted", lambda cuda_major, tensorrt: needs)
    monkeypatch.setattr(gpu_setup, "cuda_major_of_torch", lambda python: 13)
    site = tmp_path / "site"
    report = gpu_setup.prepare(site, wheels=wheels, deadline=time.time() + 240, python=sys.executable)
    got = report["needs"]
    assert got["json"] == "present"
    assert got["edge_gpu_probe_a"].startswith("installed")
    assert (site / "edge_gpu_probe_a" / "__init__.py").exists()
    assert got["edge_gpu_probe_b"].startswith("failed:")
    assert got["edge_gpu_probe_c"].startswith("not installable: not in the carried wheels")
    assert json.loads((site / "setup.json").read_text()) == report
    assert report["cuda_major"] == 13 and report["wheels"] == str(wheels)


def test_prepare_stops_installing_when_the_budget_is_spent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_setup, "wanted", lambda cuda_major, tensorrt: [Need("edge_gpu_probe_d", ("d",), "x")])
    monkeypatch.setattr(gpu_setup, "cuda_major_of_torch", lambda python: 12)
    report = gpu_setup.prepare(tmp_path / "site", wheels=tmp_path, deadline=time.time() + 5, python=sys.executable)
    assert report["needs"]["edge_gpu_probe_d"] == "not installed: out of the set-up budget"
