"""Detection engine benchmark (issue 2): our pipeline against the bare ONNX Runtime run and Ultralytics.

All figures come from one run, on one model file, with one ONNX Runtime thread setting:
  (a) bare ``session.run`` on a prepared tensor (the floor),
  (b) our full pipeline on a 1080p frame (letterbox, run, decode, NMS, boxes back to the frame),
  (c) Ultralytics ``predict`` on the same frame,
  (d) video throughput, ours (decode overlapped with inference) vs Ultralytics ``predict(stream=True)``,
plus peak RSS of ``edge-agent detect`` on the demo model.

The model is a YOLOv8n graph at 640 (the size the targets were set for; weights do not change its speed).
Run: ``.venv/bin/python bench/bench_engine.py`` (writes the engine section of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.common import REPO, interleaved_ms, machine, write_section

os.environ.setdefault("YOLO_OFFLINE", "1")


def build_yolov8n(out_dir: Path, imgsz: int) -> Path:
    from trainer.offline import offline_environment

    with offline_environment(strict=False):
        from ultralytics import YOLO

        produced = YOLO("yolov8n.yaml").export(format="onnx", imgsz=imgsz, opset=17, simplify=True, verbose=False)
    target = out_dir / f"yolov8n-{imgsz}.onnx"
    Path(produced).replace(target)
    return target


def video_throughput(model_path: Path, video: Path, threads: int) -> dict:
    from agent.app.detect import PreparedVideo
    from agent.core.decode import DecodeParams
    from agent.engine import Detector, OnnxRuntimeConfig
    from agent.imaging import VideoFile
    from trainer.offline import offline_environment

    detector = Detector.open(model_path, OnnxRuntimeConfig(intra_op_threads=threads))
    params = DecodeParams()
    t0 = time.perf_counter()
    frames = 0
    reader = PreparedVideo(VideoFile(video), detector)
    try:
        for _, prepared in reader:
            detector.detect_prepared([prepared], params)
            frames += 1
    finally:
        reader.close()
    ours = frames / (time.perf_counter() - t0)
    detector.close()
    with offline_environment(strict=False):
        from ultralytics import YOLO

        yolo = YOLO(str(model_path), task="detect")
        ref_frames = 0
        t0 = time.perf_counter()
        for _ in yolo.predict(str(video), stream=True, verbose=False, device="cpu"):
            ref_frames += 1
        ref = ref_frames / (time.perf_counter() - t0)
    assert ref_frames == frames, (ref_frames, frames)
    return {"frames": frames, "ours_fps": ours, "ultralytics_fps": ref}


def peak_rss_mb(model: Path, source: Path) -> float:
    """Peak RSS of a fresh ``edge-agent detect`` process, from the kernel's own accounting (ru_maxrss)."""
    code = (
        "import resource, subprocess, sys;"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    cmd = [
        sys.executable,
        "-c",
        code,
        sys.executable,
        "-m",
        "agent",
        "detect",
        "--model",
        str(model),
        "--source",
        str(source),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--video-frames", type=int, default=90)
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()

    from agent.core.decode import DecodeParams
    from agent.engine import Detector, OnnxRuntimeConfig, StageTimes
    from agent.synthetic import render_frame, render_video
    from trainer.offline import offline_environment

    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    print(f"machine: {machine()}", file=sys.stderr)
    model_path = build_yolov8n(work, 640)
    frame = render_frame("factory", 2024, 0, (1080, 1920)).image
    detector = Detector.open(model_path, OnnxRuntimeConfig(intra_op_threads=args.threads))
    session = detector.backend._session  # type: ignore[attr-defined]  # the very session (a) and (b) share
    tensor = detector.prepare(frame).tensor.copy()
    input_name = session.get_inputs()[0].name
    params = DecodeParams()
    with offline_environment(strict=False):
        from ultralytics import YOLO

        yolo = YOLO(str(model_path), task="detect")
        yolo.predict(frame, verbose=False, device="cpu")
        times = interleaved_ms(
            {
                "session_run": lambda: session.run(None, {input_name: tensor}),
                "ours": lambda: detector.detect([frame], params),
                "ultralytics": lambda: yolo.predict(frame, verbose=False, device="cpu"),
            },
            rounds=args.rounds,
        )
    samples = []
    for _ in range(15):
        detector.detect([frame], params)
        samples.append(detector.last_times)
    stages = StageTimes(
        statistics.median(s.preprocess_ms for s in samples),
        statistics.median(s.inference_ms for s in samples),
        statistics.median(s.postprocess_ms for s in samples),
    )
    detector.close()
    print(f"per-frame ms: {times}", file=sys.stderr)

    video = render_video(work / "line-1080p.mp4", "factory", 7, frames=args.video_frames, fps=25, size=(1080, 1920))
    vt = video_throughput(model_path, Path(video), args.threads)
    print(f"video: {vt}", file=sys.stderr)

    rss = peak_rss_mb(REPO / "models" / "demo" / "demo.onnx", REPO / "samples")
    print(f"peak RSS edge-agent detect: {rss:.0f} MB", file=sys.stderr)

    ratio_pipeline = times["ours"] / times["session_run"]
    ratio_ultra = times["ultralytics"] / times["session_run"]
    ratio_video = vt["ours_fps"] / vt["ultralytics_fps"]
    ultra_video_ms = 1000.0 / vt["ultralytics_fps"]
    ceiling = ultra_video_ms / times["session_run"]
    body = f"""## Detection engine (issue 2)

Machine: {machine()}. Model: YOLOv8n graph at 640x640 (ONNX, opset 17, FP32), one ONNX Runtime session,
intra-op threads {args.threads or "default (all cores)"}; frame: a rendered 1920x1080 scene. Medians of
{args.rounds} interleaved rounds of 5.

| measure | ms per frame | ratio to bare `session.run` | target |
|---|---:|---:|---|
| (a) bare `session.run` on a prepared tensor | {times["session_run"]:.1f} | 1.000 | |
| (b) our pipeline, 1080p frame to boxes | {times["ours"]:.1f} | **{ratio_pipeline:.3f}** | ≤ 1.05 |
| (c) Ultralytics `predict`, same frame | {times["ultralytics"]:.1f} | {ratio_ultra:.3f} | (reference) |

Our stages on that frame (medians of 15 runs): letterbox {stages.preprocess_ms:.2f} ms,
inference {stages.inference_ms:.1f} ms, decode + NMS + rescale {stages.postprocess_ms:.2f} ms.

| video: {vt["frames"]} rendered 1080p frames, MPEG-4 Part 2 (mp4v) in MP4 | frames/s |
|---|---:|
| ours (`edge-agent detect` path: decode + letterbox in a thread, overlapped with inference) | {vt["ours_fps"]:.2f} |
| Ultralytics `predict(stream=True)` | {vt["ultralytics_fps"]:.2f} |
| ratio | **{ratio_video:.2f}x** (target ≥ 1.25x) |

Ceiling: Ultralytics spends {ultra_video_ms:.1f} ms per video frame, of which {times["session_run"]:.1f} ms is the
model run both pipelines share; a pipeline that hid every other cost (decode, letterbox, NMS) would reach
{ceiling:.2f}x at most on this machine. ONNX Runtime keeps both cores busy during the run, so the decode thread
mostly time-slices with it rather than filling idle time.

Peak RSS of `edge-agent detect --model models/demo/demo.onnx --source samples/` (a fresh process, kernel
`ru_maxrss`): **{rss:.0f} MB** (target ≤ 300 MB).

Reproduce: `make setup && .venv/bin/python bench/bench_engine.py`.
"""
    print(body)
    if not args.no_write:
        write_section("engine", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
