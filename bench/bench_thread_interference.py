"""What a busy Python thread costs native code running in another thread of the same process (issue 5).

The daemon runs its cameras, rules and inference as threads of one process: the model runs without the GIL
on one core while other threads run Python on the other. This measures, for a fixed native workload in the
main thread (an ONNX Runtime run of the demo INT8 model at 1 intra-op thread, and zlib's CRC-32 of 8 MB,
both of which release the GIL), its wall and CPU time per call:

  alone           nothing else runs;
  python thread   a thread of this process runs a pure-Python loop (holds the GIL);
  native thread   a thread of this process runs numpy matrix products (releases the GIL);
  python process  another process runs the same pure-Python loop.

Wall time above CPU time is waiting (for the GIL); CPU time above "alone" is the workload itself running
slower. Run: ``PYTHONPATH=. .venv/bin/python bench/bench_thread_interference.py [--write]``.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.common import REPO, machine, write_section

PY_LOOP = "x = 0\nwhile True:\n    x += 1\n"


def per_call(fn: Callable[[], object], seconds: float) -> Tuple[float, float]:
    """(wall ms, CPU ms of this thread) per call of ``fn``, over about ``seconds``."""
    for _ in range(3):
        fn()
    n, wall0, cpu0 = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - wall0) * 1e3 / n, (time.thread_time() - cpu0) * 1e3 / n


class Background:
    """Context managers that keep the other core busy in one of three ways."""

    def __init__(self) -> None:
        self.stop = False

    def _python(self) -> None:
        x = 0
        while not self.stop:
            x += 1

    def _native(self) -> None:
        a = np.ones((256, 256), np.float32)
        while not self.stop:
            a @ a  # BLAS: the GIL is released while it computes

    @contextlib.contextmanager
    def thread(self, target: Callable[[], None]) -> Iterator[None]:
        self.stop = False
        worker = threading.Thread(target=target, name="background", daemon=True)
        worker.start()
        time.sleep(0.3)
        try:
            yield
        finally:
            self.stop = True
            worker.join()

    @contextlib.contextmanager
    def process(self) -> Iterator[None]:
        proc = subprocess.Popen([sys.executable, "-c", PY_LOOP])
        time.sleep(0.5)
        try:
            yield
        finally:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "demo" / "demo-int8.onnx")
    parser.add_argument("--seconds", type=float, default=3.0, help="Per workload and condition.")
    parser.add_argument("--write", action="store_true", help="Replace the section in docs/BENCHMARKS.md.")
    args = parser.parse_args()

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    tensor = np.random.default_rng(0).random((1, 3, *inp.shape[2:]), dtype=np.float32)
    data = bytes(8_000_000)
    workloads: Dict[str, Callable[[], object]] = {
        f"ONNX Runtime run, {args.model.name}": lambda: session.run(None, {inp.name: tensor}),
        "zlib.crc32 of 8 MB": lambda: zlib.crc32(data),
    }
    bg = Background()
    conditions = {
        "alone": contextlib.nullcontext,
        "python thread": lambda: bg.thread(bg._python),
        "native thread": lambda: bg.thread(bg._native),
        "python process": bg.process,
    }
    results: Dict[str, Dict[str, Tuple[float, float]]] = {}
    for wname, fn in workloads.items():
        results[wname] = {}
        for cname, make in conditions.items():
            with make():
                results[wname][cname] = per_call(fn, args.seconds)
            wall, cpu = results[wname][cname]
            print(f"{wname}, {cname}: wall {wall:.2f} ms, cpu {cpu:.2f} ms", file=sys.stderr)

    rows = []
    for wname, by in results.items():
        base_cpu = by["alone"][1]
        for cname, (wall, cpu) in by.items():
            rows.append(f"| {wname} | {cname} | {wall:.2f} | {cpu:.2f} | {cpu / base_cpu:.2f}x |")
    body = f"""## Threads of one process on this VM (issue 5)

Machine: {machine()}. A fixed native workload in the main thread (it releases the GIL while it computes),
per call, while the other core is kept busy in different ways (`bench/bench_thread_interference.py`).

| workload | other core runs | wall ms | CPU ms | CPU vs alone |
|---|---|---:|---:|---:|
{chr(10).join(rows)}

A pure-Python thread of the same process makes native code in another thread both wait (for the GIL, when it
returns) and run slower on its own core (CPU time), while the same loop in another process, or a native thread
of the same process, costs next to nothing. This bounds what the daemon's threaded pipeline can reach here:
its camera, rules and event-loop threads run Python while the model runs (see the cameras section).

Reproduce: `make setup && PYTHONPATH=. .venv/bin/python bench/bench_thread_interference.py --write`.
"""
    print(body)
    if args.write:
        write_section("threads", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
