"""Four synthetic 1080p cameras through the daemon's pipeline vs the single-stream engine limit (issue 5).

    PYTHONPATH=. python bench/bench_cameras.py --model models/demo/demo-int8.onnx [--write]

Measures, in one run, with one Detector (same model, same ONNX Runtime thread setting):

1. the single-stream engine limit: ``Detector.detect`` back to back on the cameras' own pre-rendered 1080p
   frames (no camera threads, no rules, no spool), once before and once after the pipeline phase; the limit
   is the mean of the two, so load from other processes that drifts during the run hits both sides;
2. the pipeline: N ``CameraSource`` threads (newest frame wins), the shared Detector on the inference
   thread driven through a ``SerialWorker`` from an asyncio loop as the daemon does, tracker, alert
   rules, triage (near-duplicate thumbnails on), the output writer (JPEG + SQLite spool): aggregate FPS,
   per-camera FPS, capture-to-rules latency p50/p99, frames dropped (replaced before inference took
   them), process RSS, and CPU time per processed frame by thread (inference, cameras, output writer,
   the rest).

What the cameras cost: with ``--prerender N`` (default 4) each synthetic camera renders N frames at start
and replays them by reference, so a camera costs about what a hardware-decoded camera costs (the CPU
table shows it); ``--prerender 0`` renders every frame in the camera's thread (about 13 ms of CPU per
1080p frame, a renderer load test). ``--camera-fps 0`` (default) offers 1.2 x the measured engine limit
in all, so the pipeline, not the cameras, is the bottleneck (the drops are the surplus); give e.g.
``--camera-fps 30`` for real-camera rates.

No MQTT broker: the spool only fills (the drain rate is the link's benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from agent.app.pipeline import CameraRuntime, ModelInfo, OutputWriter, Pipeline, percentile
from agent.core.decode import DecodeParams
from agent.engine import Detector, OnnxRuntimeConfig
from agent.memory import release_free_memory
from agent.protocol.topics import Topics
from agent.sources.camera import CameraSource
from agent.sources.config import CameraConfig
from agent.sources.factory import build_source
from agent.spool.config import SpoolConfig
from agent.spool.store import Spool
from agent.synthetic.render import render_stream_frames
from agent.threads import SerialWorker
from bench.common import machine, write_section

TARGET_RATIO = 0.95  # issue 11 (issue 5 asked for 0.9)
TARGET_RSS_MB = 400.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


CHILD_PIDS: List[int] = []
"""Processes whose CPU time counts as the cameras' (``--camera-process``)."""


def _cpu_of(stat: Path) -> Optional[float]:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def thread_cpu_s() -> Dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id; the camera child
    process (if any) under its negated pid."""
    out: Dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        cpu = _cpu_of(task / "stat")
        if cpu is not None:
            out[int(task.name)] = cpu
    for pid in CHILD_PIDS:
        cpu = _cpu_of(Path(f"/proc/{pid}/stat"))
        if cpu is not None:
            out[-pid] = cpu
    return out


def thread_group(name: str) -> str:
    if name == "inference":
        return "inference"
    if name.startswith("camera-"):
        return "cameras"
    if name == "rules":
        return "rules"
    if name == "output-writer":
        return "output writer"
    if name == "MainThread":
        return "main (asyncio)"
    if name == "console-http" or "process_request" in name:
        return "console (preview)"
    if name.startswith("viewer-"):
        return "viewers (browsers)"
    return "other"


def cpu_by_group(before: Dict[int, float], after: Dict[int, float]) -> Dict[str, float]:
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    groups: Dict[str, float] = {}
    for tid, cpu in after.items():
        group = "camera process" if tid < 0 else thread_group(names.get(tid, ""))
        groups[group] = groups.get(group, 0.0) + cpu - before.get(tid, 0.0)
    return groups


def stage_totals(pipeline: Pipeline) -> Dict[str, float]:
    c = pipeline.counters
    return {
        "letterbox": c.preprocess_ms_total,
        "inference": c.inference_ms_total,
        "decode": c.postprocess_ms_total,
        "rules": pipeline.rules_timing.rules_ms_total,
    }


def single_stream(detector: Detector, frames: List[Any], seconds: float) -> Dict[str, float]:
    params = DecodeParams()
    detector.detect([frames[0]], params)  # warm-up
    n, times = 0, []
    stages = np.zeros(3)
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        detector.detect([frames[n % len(frames)]], params)
        times.append((time.perf_counter() - t) * 1e3)
        stages += (
            detector.last_times.preprocess_ms,
            detector.last_times.inference_ms,
            detector.last_times.postprocess_ms,
        )
        n += 1
    elapsed = time.perf_counter() - t0
    return {
        "fps": n / elapsed,
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "cpu_ms_per_frame": (time.process_time() - cpu0) * 1e3 / n,
        "stage_ms_per_frame": dict(zip(("letterbox", "inference", "decode"), (stages / n).tolist())),
        "load": load_average(),  # type: ignore[dict-item]
    }


def camera_config(i: int, size: Tuple[int, int], fps: float, prerender: int) -> CameraConfig:
    return CameraConfig.model_validate(
        {
            "name": f"cam{i}",
            "source": {
                "type": "synthetic",
                "seed": i,
                "width": size[1],
                "height": size[0],
                "fps": fps,
                "prerender": prerender,
            },
            "rules": {"alerts": [{"name": "cracked", "classes": ["cracked_washer"], "cooldown_s": 5}]},
        }
    )


def start_cameras(count: int, size: Tuple[int, int], fps: float, prerender: int) -> List[CameraSource]:
    sources = []
    for i in range(count):
        source = build_source(camera_config(i, size, fps, prerender))
        source.start()
        sources.append(source)
    deadline = time.monotonic() + 120.0  # prerendering 1080p frames of four cameras on two busy cores
    while any(s.status().frames == 0 for s in sources):
        if time.monotonic() > deadline:
            raise RuntimeError("the cameras delivered no frame within 120 s")
        time.sleep(0.05)
    return sources


def pipeline_run(
    detector: Detector,
    sources: List[CameraSource],
    size: Tuple[int, int],
    fps: float,
    prerender: int,
    seconds: float,
    rules_thread: bool = True,
    attach: Optional[Callable[[Pipeline], Callable[[], None]]] = None,
) -> Dict[str, Any]:
    """``attach(pipeline)``, when given, starts something beside the pipeline (bench_console_preview.py's
    preview viewers) and returns how to stop it."""
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(SpoolConfig(path=Path(tmp) / "spool.sqlite3", synchronous="NORMAL", max_bytes=256 * 1024 * 1024))
        writer = OutputWriter(spool.put, Topics("edge", "bench", "box"), "box")
        writer.start()
        pipeline = Pipeline(
            detector,
            ModelInfo.of(detector),
            DecodeParams(),
            writer,
            rules_thread=rules_thread,
            keep_previews=bool(attach),
        )
        runtimes = []
        for i, source in enumerate(sources):
            runtime = CameraRuntime(camera_config(i, size, fps, prerender), source, pipeline.class_names)
            pipeline.add_camera(runtime)
            runtimes.append(runtime)
        thread = SerialWorker("inference")
        measuring = {"on": False}
        detach = attach(pipeline) if attach is not None else None

        async def loop(warmup: float) -> None:  # the daemon's inference task, without the watchdog
            deadline = time.monotonic() + warmup + seconds
            while time.monotonic() < deadline:
                if not await thread.call(pipeline.step):
                    await asyncio.sleep(0.005)
                if not measuring["on"] and time.monotonic() > deadline - seconds:
                    measuring["on"] = True
                    mark.update(take_marks())

        def take_marks() -> Dict[str, Any]:
            for r in runtimes:
                r.stats.latencies_ms.clear()
            return {
                "t": time.monotonic(),
                "frames": pipeline.counters.frames,
                "stages": stage_totals(pipeline),
                "processed": {r.name: r.stats.processed for r in runtimes},
                "dropped": {r.name: r.source.status().dropped for r in runtimes},
                "delivered": {r.name: r.source.status().frames for r in runtimes},
                "cpu": thread_cpu_s(),
            }

        mark: Dict[str, Any] = {}
        asyncio.run(loop(warmup=2.0))
        elapsed = time.monotonic() - mark["t"]
        frames = pipeline.counters.frames - mark["frames"]
        cpu = cpu_by_group(mark["cpu"], thread_cpu_s())
        if detach is not None:
            detach()
        result: Dict[str, Any] = {
            "seconds": elapsed,
            "load": load_average(),
            "aggregate_fps": frames / elapsed,
            "rss_mb": rss_mb(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "stage_ms_per_frame": {
                k: (v - mark["stages"][k]) / max(1, frames) for k, v in stage_totals(pipeline).items()
            },
            "cpu_ms_per_frame": {k: v * 1e3 / max(1, frames) for k, v in sorted(cpu.items())},
            "cameras": {},
        }
        for r in runtimes:
            lat = list(r.stats.latencies_ms)
            status = r.source.status()
            result["cameras"][r.name] = {
                "fps": (r.stats.processed - mark["processed"][r.name]) / elapsed,
                "offered_fps": (status.frames - mark["delivered"][r.name]) / elapsed,
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
                "dropped": status.dropped - mark["dropped"][r.name],
                "delivered": status.frames - mark["delivered"][r.name],
            }
        thread.stop()
        thread.join(5.0)
        pipeline.close()
        writer.stop(5.0)
        result["spooled"] = {"alerts": writer.counters.alerts_spooled, "samples": writer.counters.samples_spooled}
        spool.close()
    return result


def render_table(report: Dict[str, Any]) -> str:
    single, multi = report["single_stream"], report["pipeline"]
    ok_ratio = "meets" if report["ratio"] >= TARGET_RATIO else "**misses**"
    ok_rss = "meets" if multi["rss_mb"] <= TARGET_RSS_MB else "**misses**"
    cameras = report["cameras"]
    lines = [
        "## Four cameras through the daemon's pipeline (issue 5)",
        "",
        f"Machine: {report['machine']}. Model: `{report['model']}` ({report['sha256']}), one Detector, ONNX Runtime "
        f"intra-op threads {report['threads'] or 'default (all cores)'}. {cameras} synthetic {report['frame']} "
        f"cameras, "
        f"{report['camera_source']}, offering {report['camera_fps']:.0f} fps each. Pipeline phase "
        f"{multi['seconds']:.0f} s after 2 s of warm-up. Load average (1/5/15 min) at the end of each phase: "
        f"single-stream {single['before']['load']} and {single['after']['load']}, pipeline {multi['load']}.",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| single-stream engine limit (`detect` back to back, same frames; before / after) | "
        f"{report['engine_limit_fps']:.1f} fps ({single['before']['fps']:.1f} / {single['after']['fps']:.1f}; "
        f"detect p50 {single['before']['p50_ms']:.2f} ms) | |",
        f"| pipeline aggregate, {cameras} cameras | **{multi['aggregate_fps']:.1f} fps** | |",
        f"| ratio aggregate / engine limit | **{report['ratio']:.2f}** | ≥ {TARGET_RATIO} ({ok_ratio}) |",
        f"| process RSS with {cameras} cameras (peak) | **{multi['rss_mb']:.0f} MB** ({multi['peak_rss_mb']:.0f} MB) "
        f"| ≤ {TARGET_RSS_MB:.0f} MB ({ok_rss}) |",
        "",
        "| camera | offered fps | processed fps | latency p50 | latency p99 | dropped / delivered |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, cam in multi["cameras"].items():
        lines.append(
            f"| {name} | {cam['offered_fps']:.1f} | {cam['fps']:.1f} | {cam['p50_ms'] or 0:.1f} ms | "
            f"{cam['p99_ms'] or 0:.1f} ms | {cam['dropped']} / {cam['delivered']} |"
        )
    cpu = multi["cpu_ms_per_frame"]
    lines += [
        "",
        "Latency: capture (the frame entering the camera's slot) to the end of rules and triage for that frame. "
        "Dropped: frames replaced in the slot before inference took them (newest frame wins).",
        "",
        "CPU time per processed frame, by thread (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        + f"; total {sum(cpu.values()):.2f}, against {single['before']['cpu_ms_per_frame']:.2f} for a single-stream "
        "`detect`.",
        "",
        "Wall time per frame in the inference thread (ms), pipeline vs single-stream: "
        + ", ".join(
            f"{k} {v:.2f}" + (f" vs {single['before']['stage_ms_per_frame'][k]:.2f}" if k != "rules" else "")
            for k, v in multi["stage_ms_per_frame"].items()
        )
        + " (rules: tracker, alert rules, triage with its near-duplicate thumbnail, output jobs).",
        "",
        f"Reproduce: `PYTHONPATH=. .venv/bin/python bench/bench_cameras.py --model {report['model']} --write`.",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo/demo-int8.onnx"))
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of the pipeline phase.")
    parser.add_argument("--single-seconds", type=float, default=5.0, help="Length of each single-stream phase.")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: all cores).")
    parser.add_argument(
        "--camera-fps", type=float, default=0.0, help="Rate each camera offers; 0: 1.2 x engine limit / cameras."
    )
    parser.add_argument(
        "--prerender", type=int, default=4, help="Frames each camera renders once and replays; 0: render live."
    )
    parser.add_argument(
        "--no-rules-thread", action="store_true", help="Run tracker/rules/triage on the inference thread."
    )
    parser.add_argument(
        "--camera-process",
        action="store_true",
        help="The experiment of issue 11: the cameras in a child process, frames in shared memory "
        "(bench/camera_process.py) instead of CameraSource threads.",
    )
    parser.add_argument(
        "--zero-copy",
        action="store_true",
        help="With --camera-process: hand the shared-memory slot to the pipeline without copying it "
        "(upper bound of the design; frames may be overwritten while held).",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=0.0,
        help="sys.setswitchinterval for the run (0: Python's default, 5 ms).",
    )
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    parser.add_argument("--write", action="store_true", help="Replace the cameras section of docs/BENCHMARKS.md.")
    args = parser.parse_args(argv)
    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1e3)
    size = (args.height, args.width)
    detector = Detector.open(args.model, OnnxRuntimeConfig(intra_op_threads=args.threads))
    frames = []
    for seed in range(args.cameras):  # the frames the cameras will show (the first of each loop)
        rendered = render_stream_frames("factory", seed, range(max(1, args.prerender)), size)
        frames += [f.image for f in rendered]
    before = single_stream(detector, frames, args.single_seconds)
    fps = args.camera_fps or 1.2 * before["fps"] / args.cameras
    del frames
    release_free_memory()
    process_cameras = None
    if args.camera_process:
        from bench.camera_process import ProcessCameras

        process_cameras = ProcessCameras(args.cameras, size, fps, args.prerender, copy=not args.zero_copy)
        CHILD_PIDS.append(process_cameras.pid)
        sources: List[Any] = list(process_cameras.sources)
    else:
        sources = start_cameras(args.cameras, size, fps, args.prerender)
    try:
        multi = pipeline_run(detector, sources, size, fps, args.prerender, args.seconds, not args.no_rules_thread)
    finally:
        for source in sources:
            source.stop(2.0)
        if process_cameras is not None:
            process_cameras.close()
    frames = []
    for seed in range(args.cameras):
        frames += [f.image for f in render_stream_frames("factory", seed, range(max(1, args.prerender)), size)]
    after = single_stream(detector, frames, args.single_seconds)
    limit = (before["fps"] + after["fps"]) / 2.0
    report = {
        "machine": machine(),
        "model": str(args.model),
        "sha256": detector.model.sha256[:12],
        "threads": args.threads,
        "frame": f"{args.width}x{args.height}",
        "cameras": args.cameras,
        "camera_fps": fps,
        "switch_interval_ms": sys.getswitchinterval() * 1e3,
        "camera_source": (
            f"in one child process, each rendering {args.prerender} frames once and replaying them into shared "
            + ("memory (handed over without a copy)" if args.zero_copy else "memory (copied out by the pipeline)")
            if args.camera_process
            else f"each rendering {args.prerender} frames once and replaying them by reference"
            if args.prerender
            else "each rendering every frame in its own thread"
        ),
        "single_stream": {"before": before, "after": after},
        "engine_limit_fps": limit,
        "pipeline": multi,
        "ratio": multi["aggregate_fps"] / limit,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(render_table(report))
    if args.write and not args.camera_process:
        write_section("cameras", render_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
