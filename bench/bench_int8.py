"""INT8 benchmark (issue 3): ONNX Runtime static INT8 (QDQ) against FP32 of the same model, in one run.

FP32 is the graph ``edge-trainer export`` writes (DFL softmax rewritten, trainer/graph_rewrite.py). Three
quantisation recipes, all static QDQ with per-channel weights and uint8 activations calibrated by MinMax,
differing in what of the Detect head stays float (trainer.export.head_nodes_to_keep_float):
  decode: the decoding after the branches' last convolutions (boxes and scores share one tensor there; the
          DFL's softmax over distance bins cannot be resolved by uint8)
  tail:   that, and the branches' SiLU activations
  head:   the whole Detect head (its convolutions too)
Speed: bare ``session.run`` at 1 intra-op thread and at all cores, YOLOv8n graph at 640 (weights do not change
its speed) and the demo model at 256. Accuracy: the demo model on the 500-image factory holdout (seed 1000)
through the agent's engine.
Run: ``.venv/bin/python bench/bench_int8.py`` (writes the int8 section of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict

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


RECIPES = ("decode", "tail", "head")


def fused_copy(src: Path, dst: Path) -> Path:
    """``src`` with the DFL softmax rewritten, as ``edge-trainer export`` writes its FP32 model."""
    import onnx

    from trainer.graph_rewrite import fuse_dfl_softmax

    model = onnx.load(str(src))
    fuse_dfl_softmax(model)
    onnx.save(model, str(dst))
    return dst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from agent.synthetic import render_frame, write_yolo_dataset
    from trainer.evaluate import evaluate
    from trainer.export import quantize_int8

    work = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    fp32 = fused_copy(build_yolov8n(work, 640), work / "yolov8n-640-fused.onnx")
    calib = []
    for i in range(64):
        path = work / f"calib{i:03d}.png"
        cv2.imwrite(str(path), render_frame("factory", 99, i, (640, 640)).image)
        calib.append(path)
    big_models = {"fp32": fp32}
    for keep in RECIPES:
        big_models[keep] = quantize_int8(fp32, work / f"yolov8n-int8-{keep}.onnx", calib, 640, keep_float=keep)
    big = {threads: session_ms(big_models, threads, 640, args.rounds) for threads in (1, 0)}

    demo_dir = REPO / "models" / "demo"
    demo_calib = sorted((demo_dir / "calibration").iterdir())
    demo = {"fp32": fused_copy(demo_dir / "demo.onnx", work / "demo-fused.onnx")}
    for keep in RECIPES:  # every recipe from the shipped FP32 model and its shipped calibration set
        demo[keep] = quantize_int8(demo["fp32"], work / f"demo-int8-{keep}.onnx", demo_calib, 256, keep_float=keep)
    small = {threads: session_ms(demo, threads, 256, args.rounds * 3) for threads in (1, 0)}
    holdout = write_yolo_dataset(work / "holdout", "factory", 1000, 500, size=(256, 256))
    acc = {k: evaluate(p, holdout, "val", progress=False)["map50_95"] for k, p in demo.items()}
    print(big, small, acc, file=sys.stderr)

    def row(name: str, threads: int, t: Dict[str, float], target: str) -> str:
        def cell(k: str) -> str:
            speedup = f"{t['fp32'] / t[k]:.2f}x"
            return f"{t[k]:.2f} (**{speedup}**)" if k == "decode" else f"{t[k]:.2f} ({speedup})"

        cells = " | ".join(cell(k) for k in RECIPES)
        return f"| {name} | {threads or 'all (2)'} | {t['fp32']:.2f} | {cells} | {target} |"

    rows = [row("YOLOv8n graph, 640x640", th, big[th], "≥ 1.8x") for th in (1, 0)]
    rows += [row("demo model (edge-tiny), 256x256", th, small[th], "") for th in (1, 0)]
    acc_cells = " | ".join(f"{acc[k]:.4f} | **{acc['fp32'] - acc[k]:.4f}**" for k in RECIPES)
    body = f"""## ONNX Runtime INT8 vs FP32 (issue 3)

Machine: {machine()}. Bare `session.run`, batch 1, medians of interleaved rounds, at 1 intra-op thread (one core
for the model, the other left to cameras and rules, as in the four-camera benchmark) and at all cores.
FP32: the graph as `edge-trainer export` writes it (Ultralytics' export plus the DFL softmax rewrite of
`trainer/graph_rewrite.py`); every INT8 variant is quantised from that same file: static QDQ, per-channel
int8 weights, uint8 activations, MinMax calibration.
What of the Detect head stays float (`--int8-keep-float`): `decode` (default, the shipped `demo-int8.onnx`):
only its decoding after the branches' last convolutions (box/score concatenation, DFL, anchors, sigmoid);
`tail`: also the branches' SiLU activations; `head`: the whole head, its convolutions too.

| model | intra-op threads | FP32 ms | INT8 `decode` ms (speed-up) | INT8 `tail` ms | INT8 `head` ms | target |
|---|---|---:|---:|---:|---:|---|
{chr(10).join(rows)}

Demo model mAP50-95 on the 500-image factory holdout (seed 1000), agent engine; every INT8 variant quantised in
this run from `models/demo/demo.onnx` (DFL rewritten) with its 300 calibration images:

| FP32 | INT8 `decode` | loss | INT8 `tail` | loss | INT8 `head` | loss | target loss |
|---:|---:|---:|---:|---:|---:|---:|---|
| {acc["fp32"]:.4f} | {acc_cells} | ≤ 0.01 |

Reproduce: `make setup && .venv/bin/python bench/bench_int8.py`.
"""
    print(body)
    if not args.no_write:
        write_section("int8", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
