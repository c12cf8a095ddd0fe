"""``edge-trainer train``: train or fine-tune a detector (trainer.train, Ultralytics, offline)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict

from trainer.train import TrainError, train


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("train", help="train or fine-tune a detector (Ultralytics, offline)")
    p.add_argument("--data", type=Path, required=True, help="Ultralytics data.yaml")
    p.add_argument(
        "--model",
        default="tiny",
        help="start weights (.pt), a model YAML, or 'tiny' for the shipped edge-tiny architecture",
    )
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16, help="total batch size (split across GPUs under DDP)")
    p.add_argument("--devices", default="cpu", help="'cpu', '0', or '0,1,2,3' for multi-GPU DDP")
    p.add_argument("--amp", dest="amp", action="store_true", default=True, help="mixed precision on GPU (default)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="disable mixed precision")
    p.add_argument("--resume", action="store_true", help="resume the run whose last.pt is --model")
    p.add_argument("--workers", type=int, default=2, help="data loader workers per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=100, help="early-stop after this many epochs without gain")
    p.add_argument("--replay-data", type=Path, help="base data.yaml to replay from when fine-tuning")
    p.add_argument("--replay-fraction", type=float, default=0.3, help="share of the train list taken from the base")
    p.add_argument("--mosaic", type=float, default=None, help="mosaic augmentation probability (Ultralytics)")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate (Ultralytics default 0.01)")
    p.add_argument("--lrf", type=float, default=None, help="final learning rate as a fraction of lr0")
    p.add_argument("--warmup-epochs", type=float, default=None, help="warm-up epochs (Ultralytics default 3)")
    p.add_argument("--close-mosaic", type=int, default=None, help="last N epochs without mosaic (default 10)")
    p.add_argument("--optimizer", default=None, help="SGD, AdamW, ... (default auto; AdamW when --lr0 is given)")
    p.add_argument("--freeze", type=int, default=None, help="freeze the first N layers (fine-tuning)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    extra: Dict[str, Any] = {}
    for key in ("mosaic", "lr0", "lrf", "warmup_epochs", "close_mosaic", "optimizer", "freeze"):
        value = getattr(args, key)
        if value is not None:
            extra[key] = value
    try:
        summary = train(
            data=args.data,
            model=args.model,
            out=args.out,
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            devices=args.devices,
            amp=args.amp,
            resume=args.resume,
            workers=args.workers,
            seed=args.seed,
            patience=args.patience,
            replay_data=args.replay_data,
            replay_fraction=args.replay_fraction,
            extra=extra,
        )
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0
