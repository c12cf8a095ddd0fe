"""Helpers shared by the benchmarks: machine description, timing, and writing docs/BENCHMARKS.md sections."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    import numpy
    import onnxruntime

    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}"
    )


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples: List[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def interleaved_ms(fns: Dict[str, Callable[[], object]], rounds: int, per_round: int = 5) -> Dict[str, float]:
    """Median ms of each function, measured in alternating rounds so that machine drift hits all alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[key].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- bench:NAME -->`` markers in docs/BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)
