"""``edge-trainer export``: ONNX FP32 + INT8 (+ a TensorRT calibration cache) of trained weights (trainer.export)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from trainer.export import KEEP_FLOAT_RECIPES, ExportError, export_all


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="export ONNX FP32 + INT8 (+ TensorRT calibration cache)")
    p.add_argument("--weights", type=Path, required=True, help="trained .pt")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--name", default="model", help="file stem of the exported models")
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--version", default="0.0.0", help="model version written into the metadata")
    p.add_argument("--calib", type=Path, nargs="+", required=True, help="folders of target-domain images")
    p.add_argument("--calib-count", type=int, default=300, help="calibration images (default 300)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument(
        "--int8-keep-float",
        default="decode",
        choices=list(KEEP_FLOAT_RECIPES),
        help="Detect-head part left in float: 'decode' (its decoding only: fastest), 'tail' (also the "
        "branches' activations) or 'head' (the whole head: no accuracy loss, slowest)",
    )
    p.add_argument("--holdout", type=Path, help="data.yaml to score every variant on")
    p.add_argument("--training-data", default="", help="recorded in the metadata for lineage")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = export_all(
            args.weights,
            args.out,
            args.imgsz,
            args.version,
            args.calib,
            args.calib_count,
            args.holdout,
            args.name,
            args.calib_method,
            args.training_data,
            args.int8_keep_float,
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0
