"""Agent RSS over repeated model updates, with and without giving freed heap back (agent/memory.py).

Run: PYTHONPATH=. .venv/bin/python bench/bench_swap_memory.py [--updates 15] [--write]

Each update does what the daemon does (agent/daemon/, agent/ota/health.py): the OTA worker thread
health-checks the candidate beside the current model (two sessions, golden images, both closed), a fresh
loader thread opens the new detector, the long-lived inference thread swaps it in, closes the old one and
runs frames. Both variants run in fresh processes of their own in this one run; "without" replaces
``release_free_memory`` by a no-op, i.e. the agent as it was before. The figure is the RSS growth from after the first
updates (medians of the first three and the last three) to the end (the soak's "memory flat" criterion: growth <= 5 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "demo" / "demo-int8.onnx"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(updates: int, trim: bool) -> List[float]:
    """One variant, in this process: RSS after each update."""
    import queue
    import threading

    from agent.engine import Detector, OnnxRuntimeConfig
    from agent.engine import onnxruntime as ort_backend
    from agent.synthetic.render import render_frame

    if not trim:
        ort_backend.release_free_memory = lambda: False  # type: ignore[assignment]
    frames = [render_frame("factory", 7, i).image for i in range(4)]
    jobs: queue.Queue[Any] = queue.Queue()

    def inference() -> None:
        detector = None
        while True:
            item = jobs.get()
            if item is None:
                return
            new, done = item
            old, detector = detector, new
            if old is not None:
                old.close()
            for _ in range(10):
                for frame in frames:
                    detector.detect([frame])
            done.set()

    def in_fresh_thread(fn: Any) -> Any:
        box: Dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", fn()))
        thread.start()
        thread.join()
        return box.get("r")

    def health_check() -> None:
        candidate = Detector.open(MODEL, OnnxRuntimeConfig(intra_op_threads=1))
        current = Detector.open(MODEL, OnnxRuntimeConfig(intra_op_threads=1))
        for frame in frames[:3]:
            candidate.detect([frame])
            current.detect([frame])
        candidate.close()
        current.close()

    threading.Thread(target=inference, daemon=True).start()
    rss: List[float] = []
    for _ in range(updates + 1):
        in_fresh_thread(health_check)
        done = threading.Event()
        jobs.put((in_fresh_thread(lambda: Detector.open(MODEL, OnnxRuntimeConfig(intra_op_threads=2))), done))
        done.wait()
        rss.append(round(_rss_mb(), 1))
        print(
            f"[swap-memory] {'with' if trim else 'without'} trim: update {len(rss) - 1}: {rss[-1]} MB",
            file=sys.stderr,
            flush=True,
        )
    jobs.put(None)
    return rss


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--write", action="store_true", help="write the section of docs/BENCHMARKS.md")
    ap.add_argument("--child", choices=["trim", "no-trim"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.updates, args.child == "trim")))
        return 0
    result: Dict[str, Any] = {}
    for variant in ("no-trim", "trim"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--updates", str(args.updates)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )
        sys.stderr.write(out.stderr[-2000:])
        rss = json.loads(out.stdout.strip().splitlines()[-1])
        first, last = statistics.median(rss[1:4]), statistics.median(rss[-3:])  # medians of 3: RSS jitters by MBs
        result[variant] = {
            "rss_mb": rss,
            "first_mb": first,
            "last_mb": last,
            "growth_pct": round(100 * (last - first) / first, 1),
        }
    from bench.common import machine, write_section

    body = (
        "## Agent memory over model updates\n\n"
        f"{args.updates} model updates in one process, as the daemon makes them (health check of the candidate "
        "beside the current model in the OTA worker, load in a fresh thread, swap in the inference thread, "
        "frames run), the demo INT8 model, each variant in a fresh process of its own, one run; "
        f"{machine()}.\n\n"
        "| freed heap | RSS after updates 1-3 | after the last 3 | growth |\n|---|---:|---:|---:|\n"
        + "".join(
            f"| {label} | {result[v]['first_mb']} MB | {result[v]['last_mb']} MB | {result[v]['growth_pct']:+.1f} % |\n"
            for v, label in (("no-trim", "kept by malloc (before)"), ("trim", "given back, `malloc_trim(0)` on close"))
        )
        + "\nglibc keeps the pages a closed ONNX Runtime session frees in the per-thread arena they came from; the "
        "daemon loads in fresh threads, so nobody reuses them. `agent/memory.py` gives them back when a "
        "session closes (about 3 ms). Reproduce: `PYTHONPATH=. .venv/bin/python bench/bench_swap_memory.py --write`; "
        "raw figures in bench/results/swap_memory.json.\n"
    )
    print(body)
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "swap_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.write:
        write_section("swap-memory", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
