"""Four synthetic 1080p cameras through the daemon's pipeline vs the single-stream engine limit.

    PYTHONPATH=. python bench/bench_cameras.py --model models/demo/demo-int8.onnx --seconds 30

Measures, in one run on this machine:
1. the single-stream engine limit: ``Detector.detect`` on pre-rendered 1080p synthetic frames back to back
   (no camera, no rules, no spool): frames per second;
2. the full pipeline (CameraSource threads rendering 1080p synthetic frames, newest frame wins, the shared
   Detector, tracker, alert rules, triage, JPEG encoding, the SQLite spool) with N cameras unthrottled:
   aggregate FPS, per-camera p50/p99 capture-to-rules latency, frames dropped (replaced before inference
   took them), process RSS.

Prints the figures and the ratio aggregate / single-stream (target >= 0.9). No MQTT broker: the spool
only fills (the drain rate is the link's benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from agent.app.pipeline import CameraRuntime, InferenceThread, ModelInfo, OutputWriter, Pipeline, percentile
from agent.engine import Detector, OnnxRuntimeConfig
from agent.protocol.topics import Topics
from agent.sources.config import CameraConfig
from agent.sources.factory import build_source
from agent.spool.config import SpoolConfig
from agent.spool.store import Spool
from agent.synthetic import iter_frames


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def single_stream(detector: Detector, seconds: float, size: tuple) -> Dict[str, float]:
    frames = [f.image for f, _ in zip(iter_frames("factory", 7, size=size), range(8))]
    detector.detect([frames[0]])  # warm-up
    n, t0 = 0, time.perf_counter()
    times: List[float] = []
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        detector.detect([frames[n % len(frames)]])
        times.append((time.perf_counter() - t) * 1e3)
        n += 1
    elapsed = time.perf_counter() - t0
    return {"fps": n / elapsed, "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def cameras_run(detector: Detector, cameras: int, seconds: float, size: tuple, state: Path) -> Dict[str, Any]:
    spool = Spool(SpoolConfig(path=state / "spool.sqlite3", synchronous="NORMAL", max_bytes=256 * 1024 * 1024))
    topics = Topics("edge", "bench", "box")
    writer = OutputWriter(spool.put, topics, "box")
    writer.start()
    pipeline = Pipeline(
        detector, ModelInfo.of(detector), __import__("agent.core.decode", fromlist=["x"]).DecodeParams(), writer
    )
    runtimes = []
    for i in range(cameras):
        config = CameraConfig.model_validate(
            {
                "name": f"cam{i}",
                "source": {"type": "synthetic", "seed": i, "width": size[1], "height": size[0], "fps": 1000},
                "rules": {"alerts": [{"name": "cracked", "classes": ["cracked_washer"], "cooldown_s": 5}]},
            }
        )
        source = build_source(config)
        runtime = CameraRuntime(config, source, pipeline.class_names)
        pipeline.add_camera(runtime)
        runtimes.append(runtime)
        source.start()
    thread = InferenceThread()

    async def loop() -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not await thread.call(pipeline.step):
                await asyncio.sleep(0.002)

    time.sleep(1.0)  # let the readers render their first frames
    for r in runtimes:
        r.stats.latencies_ms.clear()
    frames0 = pipeline.counters.frames
    drops0 = {r.name: r.source.status().dropped for r in runtimes}
    t0 = time.monotonic()
    asyncio.run(loop())
    elapsed = time.monotonic() - t0
    result: Dict[str, Any] = {
        "aggregate_fps": (pipeline.counters.frames - frames0) / elapsed,
        "rss_mb": rss_mb(),
        "cameras": {},
    }
    for r in runtimes:
        lat = list(r.stats.latencies_ms)
        status = r.source.status()
        result["cameras"][r.name] = {
            "processed": r.stats.processed,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "dropped": status.dropped - drops0[r.name],
            "delivered": status.frames,
        }
    for r in runtimes:
        r.source.stop(2.0)
    thread.stop()
    writer.stop(5.0)
    result["spooled"] = {"alerts": writer.counters.alerts_spooled, "samples": writer.counters.samples_spooled}
    spool.close()
    return result


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo/demo-int8.onnx"))
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: default).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    size = (args.height, args.width)
    detector = Detector.open(args.model, OnnxRuntimeConfig(intra_op_threads=args.threads))
    single = single_stream(detector, args.seconds / 2, size)
    with tempfile.TemporaryDirectory() as tmp:
        multi = cameras_run(detector, args.cameras, args.seconds, size, Path(tmp))
    report = {
        "model": str(args.model),
        "sha256": detector.model.sha256[:12],
        "frame": f"{args.width}x{args.height}",
        "single_stream": single,
        "pipeline": multi,
        "ratio": multi["aggregate_fps"] / single["fps"],
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(
        f"model {report['model']} ({report['sha256']}), frames {report['frame']}, {args.cameras} cameras, {args.seconds:.0f} s"
    )
    print(
        f"single-stream engine limit: {single['fps']:.1f} fps (detect p50 {single['p50_ms']:.1f} ms, p99 {single['p99_ms']:.1f} ms)"
    )
    print(
        f"pipeline aggregate:         {multi['aggregate_fps']:.1f} fps  = {report['ratio']:.2f} x single-stream (target >= 0.90)"
    )
    for name, cam in multi["cameras"].items():
        print(
            f"  {name}: processed {cam['processed']:>5}  latency p50 {cam['p50_ms'] or 0:.0f} ms  p99 {cam['p99_ms'] or 0:.0f} ms"
            f"  dropped {cam['dropped']} of {cam['delivered']} delivered"
        )
    print(f"RSS {multi['rss_mb']:.0f} MB; spooled {multi['spooled']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
