"""What the GPU check (bench/gpu_check.py) installs before it runs, and from where.

Two kinds of GPU machine are planned for:

- one that reaches the package registries (the issue's premise): what is missing comes from PyPI, and
  TensorRT from NVIDIA's index: PyPI's ``tensorrt-cu12-libs`` is only a stub that fetches the real wheel
  (about 2 GB) from ``pypi.nvidia.com`` at install time;
- one that reaches nothing, like the H200 lent to this project's sessions (docs/TENSORRT.md): what is missing
  comes from a folder of wheels carried with the working tree (``python -m bench.gpu_setup --out .whl`` fills
  it, within the 64 MiB a call may carry). TensorRT's libraries and ``onnxruntime-gpu`` do not fit, so the
  check reports their steps as not run instead of failing at set-up.

Everything goes into one ``--target`` folder put first on ``PYTHONPATH`` of the check's own process: the
machine's interpreter and its torch stay as they are, and nothing is resolved into that folder that the
machine already has (``--no-deps``, with every needed wheel named). Only TensorRT's meta package resolves its
own dependencies (its ``-libs`` and ``-bindings`` wheels) from NVIDIA's index.

The pure part, :func:`wanted` and :func:`pip_commands`, decides; :func:`prepare` runs pip and reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

NVIDIA_INDEX = "https://pypi.nvidia.com"
# The newest TensorRT with the builder flags and INT8 calibrator the Jetson releases use (JetPack 5: 8.5,
# JetPack 6: 10.3). TensorRT 11 builds strongly typed networks only; --tensorrt picks another release.
DEFAULT_TENSORRT = "<11"


@dataclass(frozen=True)
class Need:
    """A module the check imports, and the pip requirements that provide it."""

    module: str
    requirements: Tuple[str, ...]
    purpose: str
    index: str = "pypi"  # "pypi" or "nvidia"
    resolve: bool = False  # let pip resolve this one's dependencies
    carried: bool = True  # in the offline wheel folder (python -m bench.gpu_setup)


def wanted(cuda_major: int, tensorrt: str = DEFAULT_TENSORRT) -> List[Need]:
    """Everything the check may need beyond the standard library, numpy, OpenCV, torch and ONNX Runtime CPU,
    in install order. ``cuda_major`` picks the CUDA 12 or 13 builds (the machine's torch says which)."""
    cu = "cu13" if cuda_major >= 13 else "cu12"
    return [
        Need(
            "pydantic",
            # a matching pair, pinned: with --no-deps pip would take the newest core, which an older pydantic
            # refuses at import; typing-extensions because this pydantic needs a newer one than images carry
            (
                "pydantic==2.14.4",
                "pydantic-core==2.50.5",
                "annotated-types>=0.6",
                "typing-inspection>=0.4.4",
                "typing-extensions>=4.16",
            ),
            "the agent's configuration",
        ),
        Need("structlog", ("structlog>=23.1",), "the agent's logging"),
        Need("paho.mqtt", ("paho-mqtt>=2.0,<3",), "the agent's MQTT link (imported by the daemon's modules)"),
        Need("ultralytics", ("ultralytics==8.4.190", "ultralytics-thop>=2.2.3"), "training and the YOLOv8n graph"),
        # Ultralytics reads results.csv through polars at every checkpoint; 0.20 is its oldest allowed and the
        # smallest single wheel (29 MB against 54 MB for polars 2's runtime)
        Need("polars", ("polars==0.20.31",), "Ultralytics' checkpoints"),
        Need("onnxslim", ("onnxslim>=0.1.30",), "Ultralytics' ONNX export (simplify)"),
        # edge-trainer's command line imports its signing and certificate commands at start (5 MB)
        Need("cryptography", ("cryptography>=42", "cffi>=2.0", "pycparser"), "edge-trainer's command line"),
        Need("tensorrt", (f"tensorrt-{cu}{tensorrt}",), "TensorRT engines", "nvidia", resolve=True, carried=False),
        Need(
            "cuda.bindings",
            (f"cuda-bindings>={cuda_major}", "cuda-pathfinder"),
            "device buffers without pycuda",
            carried=False,  # the lent machine's image has it
        ),
        Need(
            "onnxruntime_gpu_probe", ("onnxruntime-gpu",), "ONNX Runtime's CUDA and TensorRT providers", carried=False
        ),
    ]


def pip_commands(
    python: str,
    site: Path,
    missing: Sequence[Need],
    wheels: Optional[Path],
    nvidia_index: Optional[str] = NVIDIA_INDEX,
) -> List[Tuple[Need, Optional[List[str]], str]]:
    """One pip command per missing need, or ``None`` with the reason it cannot be installed here.

    With a wheel folder pip reads only that folder (``--no-index``): the machine reaches no registry.
    """
    base = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile", "--target", str(site)]
    out: List[Tuple[Need, Optional[List[str]], str]] = []
    for need in missing:
        if wheels is not None:
            if not need.carried:
                out.append((need, None, "not in the carried wheels (too large to carry); the machine has no registry"))
                continue
            cmd = [*base, "--upgrade", "--no-index", "--find-links", str(wheels), "--no-deps", *need.requirements]
        elif need.index == "nvidia":
            if not nvidia_index:
                out.append((need, None, "NVIDIA's index not given (--nvidia-index)"))
                continue
            cmd = [*base, "--upgrade", "--extra-index-url", nvidia_index, *need.requirements]
        else:
            cmd = [*base, "--upgrade", *([] if need.resolve else ["--no-deps"]), *need.requirements]
        out.append((need, cmd, ""))
    return out


# ----------------------------------------------------------------------------------------------- I/O


def importable(python: str, modules: Sequence[str], env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``{module: "ok" | "<error>"}``, each imported in a fresh interpreter (a failing import cannot poison
    the next one). ``onnxruntime_gpu_probe`` asks ONNX Runtime whether its CUDA provider is built in."""
    probes = {
        m: (
            "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), 'CPU build'"
            if m == "onnxruntime_gpu_probe"
            else f"import {m}"
        )
        for m in modules
    }
    result: Dict[str, str] = {}
    for module, code in probes.items():
        try:
            r = subprocess.run(
                [python, "-c", code],
                check=False,
                capture_output=True,
                text=True,
                timeout=120,
                env=dict(env) if env else None,
            )
            result[module] = "ok" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["failed"])[-1][:300]
        except subprocess.TimeoutExpired:
            result[module] = "import timed out"
    return result


def cuda_major_of_torch(python: str) -> int:
    """The CUDA major version the machine's torch was built for (12 when it has none or no torch)."""
    try:
        r = subprocess.run(
            [python, "-c", "import torch; print(torch.version.cuda or '')"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return int(r.stdout.strip().split(".")[0]) if r.returncode == 0 and r.stdout.strip() else 12
    except (subprocess.TimeoutExpired, ValueError):
        return 12


def prepare(
    site: Path,
    *,
    wheels: Optional[Path],
    tensorrt: str = DEFAULT_TENSORRT,
    nvidia_index: Optional[str] = NVIDIA_INDEX,
    deadline: float,
    python: str = sys.executable,
) -> Dict[str, Any]:
    """Install what is missing into ``site``; returns (and writes to ``site/setup.json``) what happened to
    each need: ``present``, ``installed``, ``failed: ...`` or ``not installable: ...``. Never raises for a
    package that cannot be had: the step that needs it says it was not run."""
    site.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": pythonpath_with(site)}
    cuda_major = cuda_major_of_torch(python)
    needs = wanted(cuda_major, tensorrt)
    before = importable(python, [n.module for n in needs], env)
    report: Dict[str, Any] = {"cuda_major": cuda_major, "wheels": str(wheels) if wheels else None, "needs": {}}
    missing = [n for n in needs if before[n.module] != "ok"]
    for need in needs:
        if need not in missing:
            report["needs"][need.module] = "present"
    for need, cmd, reason in pip_commands(python, site, missing, wheels, nvidia_index):
        if cmd is None:
            report["needs"][need.module] = f"not installable: {reason}"
            continue
        left = deadline - time.time()
        if left < 20:
            report["needs"][need.module] = "not installed: out of the set-up budget"
            continue
        print("+ " + " ".join(cmd), flush=True)
        t0 = time.time()
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=left, env=env)
            ok, detail = r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1][:300]
        except subprocess.TimeoutExpired:
            ok, detail = False, f"pip ran past the set-up budget ({left:.0f} s)"
        after = importable(python, [need.module], env)[need.module] if ok else detail
        report["needs"][need.module] = (
            f"installed ({time.time() - t0:.0f} s)" if after == "ok" else f"failed: {after or detail}"
        )
        print(f"   {need.module}: {report['needs'][need.module]}", flush=True)
    (site / "setup.json").write_text(json.dumps(report, indent=2))
    return report


def pythonpath_with(site: Path) -> str:
    """``PYTHONPATH`` with ``site`` first."""
    rest = os.environ.get("PYTHONPATH", "")
    return str(site) + (os.pathsep + rest if rest else "")


# ------------------------------------------------------------------------ the offline wheel folder

# What one call to a lent machine may carry: the working tree and the carried folders together.
CARRY_LIMIT_BYTES = 64 << 20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def download_command(python: str, folder: Path, python_version: str, cuda_major: int) -> List[str]:
    """``pip download`` of every carried need, as wheels for the machine's interpreter."""
    requirements = [r for need in wanted(cuda_major) if need.carried for r in need.requirements]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    return [
        python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
        "--python-version", python_version, *platforms, "-d", str(folder), *requirements,
    ]  # fmt: skip


def tracked_bytes(repo: Path) -> int:
    """What the working tree's tracked files weigh (they all travel with each call)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=repo, check=True, capture_output=True).stdout.split(b"\0")
    return sum((repo / name.decode()).stat().st_size for name in listed if name and (repo / name.decode()).is_file())


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        description="Fill the wheel folder that a GPU machine with no registry installs from (bench/gpu_check.py "
        "--wheels), and check that it and the working tree fit in what one call may carry."
    )
    p.add_argument("--out", type=Path, default=Path(".whl"), help="the folder (git-ignored)")
    p.add_argument("--python-version", default="3.12", help="the machine's python3 (the lent H200: 3.12)")
    p.add_argument("--cuda-major", type=int, default=13, help="the machine's CUDA major (the lent H200: 13)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = download_command(sys.executable, args.out, args.python_version, args.cuda_major)
    print("+ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, check=False).returncode:
        return 1
    repo = Path(__file__).resolve().parents[1]
    wheels = sum(f.stat().st_size for f in args.out.glob("*.whl"))
    tree = tracked_bytes(repo)
    total = wheels + tree
    print(f"wheels {wheels / 2**20:.1f} MiB + tracked tree {tree / 2**20:.1f} MiB = {total / 2**20:.1f} MiB "
          f"(limit {CARRY_LIMIT_BYTES / 2**20:.0f} MiB)")  # fmt: skip
    if total > CARRY_LIMIT_BYTES:
        print("too much to carry in one call: drop a need or shrink the tree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
