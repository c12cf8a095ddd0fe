"""``edge-trainer evaluate``: mAP of a model on a holdout (trainer.evaluate); a regression gate with --baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict

from agent.engine import EngineError
from trainer.evaluate import EvaluateError, evaluate, write_plots


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("evaluate", help="mAP of a model on a holdout; regression gate with --baseline")
    p.add_argument("--model", type=Path, required=True, help=".onnx (agent engine) or .pt (Ultralytics)")
    p.add_argument("--data", type=Path, required=True, help="data.yaml of the holdout")
    p.add_argument("--split", default="val", help="split of data.yaml to score (default val)")
    p.add_argument("--baseline", type=Path, help="model to compare against")
    p.add_argument(
        "--max-regression",
        type=float,
        default=0.01,
        help="largest allowed mAP50-95 drop versus the baseline (default 0.01)",
    )
    p.add_argument("--imgsz", type=int, help="inference size for .pt models (default: the model's)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all cores)")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="report folder (JSON and plots)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Exit codes: 0 ok, 1 regression beyond the threshold, 2 bad input."""
    try:
        report = evaluate(args.model, args.data, args.split, args.imgsz, args.threads)
        baseline = evaluate(args.baseline, args.data, args.split, args.imgsz, args.threads) if args.baseline else None
    except Exception as exc:
        if isinstance(exc, (EvaluateError, EngineError)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    args.out.mkdir(parents=True, exist_ok=True)
    verdict: Dict[str, Any] = {"candidate": report}
    code = 0
    if baseline is not None:
        delta = report["map50_95"] - baseline["map50_95"]
        regressed = delta < -args.max_regression
        verdict.update(
            baseline=baseline, delta_map50_95=round(delta, 5), max_regression=args.max_regression, passed=not regressed
        )
        code = 1 if regressed else 0
    plots = write_plots(report, args.out, baseline)
    verdict["plots"] = [str(p) for p in plots]
    (args.out / "report.json").write_text(json.dumps(verdict, indent=2))
    print(
        f"{args.model.name}: mAP50 {report['map50']:.4f}  mAP50-95 {report['map50_95']:.4f}"
        f"  ({report['images']} images)"
    )
    for name, row in report["per_class"].items():
        print(f"  {name:<16} mAP50 {row['map50']:.4f}  mAP50-95 {row['map50_95']:.4f}  n={row['instances']}")
    if baseline is not None:
        print(
            f"baseline {args.baseline.name}: mAP50-95 {baseline['map50_95']:.4f};"
            f" delta {verdict['delta_map50_95']:+.4f}"
            f" -> {'PASS' if code == 0 else 'REGRESSION'} (threshold {args.max_regression})"
        )
    print(f"report: {args.out / 'report.json'}")
    return code
