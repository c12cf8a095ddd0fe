"""INT8 benchmark (issue 3): ONNX Runtime static INT8 (QDQ) against FP32 of the same model, in one run.

Two quantisation recipes, both static QDQ with per-channel weights and uint8 activations calibrated by MinMax:
  tail: the Detect head's decoding tail stays float: non-convolution nodes (boxes and scores share one tensor
        there) and the DFL block (a softmax over distance bins that uint8 cannot resolve)
  head: the whole Detect head stays float (its convolutions too)
Speed: bare ``session.run``, YOLOv8n graph at 640 (weights do not change its speed) and the demo model at 256.
Accuracy: the demo model on the 500-image factory holdout (seed 1000) through the agent's engine.
Run: ``.venv/bin/python bench/bench_int8.py`` (writes the int8 section of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
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

    from agent.synthetic import render_frame, write_yolo_dataset
    from trainer.evaluate import evaluate
    from trainer.export import quantize_int8

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    fp32 = build_yolov8n(work, 640)
    calib = []
    for i in range(64):
        path = work / f"calib{i:03d}.png"
        cv2.imwrite(str(path), render_frame("factory", 99, i, (640, 640)).image)
        calib.append(path)
    big_models = {"fp32": fp32}
    for keep in ("tail", "head"):
        big_models[keep] = quantize_int8(fp32, work / f"yolov8n-int8-{keep}.onnx", calib, 640, keep_float=keep)
    big = session_ms(big_models, args.threads, 640, args.rounds)

    demo_dir = REPO / "models" / "demo"
    demo_calib = sorted((demo_dir / "calibration").iterdir())
    demo = {"fp32": demo_dir / "demo.onnx"}
    for keep in ("tail", "head"):  # both recipes from the shipped FP32 model and its shipped calibration set
        demo[keep] = quantize_int8(demo["fp32"], work / f"demo-int8-{keep}.onnx", demo_calib, 256, keep_float=keep)
    small = session_ms(demo, args.threads, 256, args.rounds * 3)
    holdout = write_yolo_dataset(work / "holdout", "factory", 1000, 500, size=(256, 256))
    acc = {k: evaluate(p, holdout, "val", progress=False)["map50_95"] for k, p in demo.items()}
    print(big, small, acc, file=sys.stderr)

    def row(name: str, t: dict, speed_target: str) -> str:
        return (
            f"| {name} | {t['fp32']:.2f} | {t['tail']:.2f} (**{t['fp32'] / t['tail']:.2f}x**) | "
            f"{t['head']:.2f} ({t['fp32'] / t['head']:.2f}x) | {speed_target} |"
        )

    loss_tail = acc["fp32"] - acc["tail"]
    loss_head = acc["fp32"] - acc["head"]
    body = f"""## ONNX Runtime INT8 vs FP32 (issue 3)

Machine: {machine()}. Bare `session.run`, batch 1, medians of interleaved rounds; intra-op threads
{args.threads or "default (all cores)"}. Static QDQ, per-channel weights, uint8 activations, MinMax calibration.
Recipe `tail` keeps the Detect head's decoding tail in float: its non-convolution nodes and the DFL block (default
of `edge-trainer export`, the shipped `demo-int8.onnx`); `head` keeps the whole Detect head in float
(`--int8-keep-float head`).

| model | FP32 ms | INT8 `tail` ms (speed-up) | INT8 `head` ms (speed-up) | target |
|---|---:|---:|---:|---|
{row("YOLOv8n graph, 640x640", big, "≥ 1.8x")}
{row("demo model (edge-tiny), 256x256", small, "")}

Demo model mAP50-95 on the 500-image factory holdout (seed 1000), agent engine; both INT8 variants quantised in
this run from `models/demo/demo.onnx` with its 300 calibration images (the shipped `demo-int8.onnx` is the
`tail` variant):

| FP32 | INT8 `tail` | loss | INT8 `head` | loss | target loss |
|---:|---:|---:|---:|---:|---|
| {acc["fp32"]:.4f} | {acc["tail"]:.4f} | **{loss_tail:.4f}** | {acc["head"]:.4f} | **{loss_head:.4f}** | ≤ 0.01 |

Reproduce: `make setup && .venv/bin/python bench/bench_int8.py`.
"""
    print(body)
    if not args.no_write:
        write_section("int8", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
