"""INT8 speed benchmark (issue 3): ONNX Runtime static INT8 (QDQ) against FP32 of the same model, same run.

Speed uses a YOLOv8n graph at 640 (the weights do not change its speed; calibrated on 64 rendered frames) and
the shipped demo model; accuracy of the demo model's variants comes from its export report
(models/demo/export_report.json), measured on the 500-image factory holdout.
Run: ``.venv/bin/python bench/bench_int8.py`` (writes the int8 section of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from bench.bench_engine import build_yolov8n
from bench.common import REPO, interleaved_ms, machine, write_section

os.environ.setdefault("YOLO_OFFLINE", "1")


def session_ms(paths, threads: int, imgsz: int, rounds: int):
    import onnxruntime as ort

    fns = {}
    for key, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        tensor = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
        fns[key] = lambda s=session, n=name, t=tensor: s.run(None, {n: t})
    return interleaved_ms(fns, rounds=rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from agent.synthetic import render_frame
    from trainer.export import quantize_int8

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    fp32 = build_yolov8n(work, 640)
    calib = []
    for i in range(64):
        path = work / f"calib{i:03d}.png"
        cv2.imwrite(str(path), render_frame("factory", 99, i, (640, 640)).image)
        calib.append(path)
    int8 = quantize_int8(fp32, work / "yolov8n-640-int8.onnx", calib, 640)
    big = session_ms({"fp32": fp32, "int8": int8}, args.threads, 640, args.rounds)
    demo_dir = REPO / "models" / "demo"
    small = session_ms(
        {"fp32": demo_dir / "demo.onnx", "int8": demo_dir / "demo-int8.onnx"}, args.threads, 256, args.rounds * 3
    )
    report = json.loads((demo_dir / "export_report.json").read_text())
    acc = report.get("accuracy", {})
    print(big, small, file=sys.stderr)
    body = f"""## ONNX Runtime INT8 vs FP32 (issue 3)

Machine: {machine()}. Bare `session.run`, batch 1, medians of interleaved rounds; intra-op threads
{args.threads or "default (all cores)"}. INT8 = static QDQ, per-channel weights, uint8 activations, Detect-head
tail kept in float (see trainer/export.py).

| model | FP32 ms | INT8 ms | INT8 speed-up (frames/s ratio) | target |
|---|---:|---:|---:|---|
| YOLOv8n graph, 640x640 | {big["fp32"]:.1f} | {big["int8"]:.1f} | **{big["fp32"] / big["int8"]:.2f}x** | ≥ 1.8x |
| demo model (edge-tiny), 256x256 | {small["fp32"]:.2f} | {small["int8"]:.2f} | {small["fp32"] / small["int8"]:.2f}x | |

Demo model accuracy on the 500-image factory holdout (seed 1000), agent engine, from its export report:
FP32 mAP50-95 **{acc.get("onnx_fp32", {}).get("map50_95", float("nan")):.4f}**, INT8
**{acc.get("onnx_int8", {}).get("map50_95", float("nan")):.4f}**:
loss **{acc.get("int8_loss_map50_95", float("nan")):.4f}**
(target ≤ 0.01).

Reproduce: `make setup && .venv/bin/python bench/bench_int8.py`.
"""
    print(body)
    if not args.no_write:
        write_section("int8", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
