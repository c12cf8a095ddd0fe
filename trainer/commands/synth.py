"""``edge-trainer synth``: render a synthetic YOLO data set or a conveyor video.

Wiring (trainer/cli.py)::

    synth.add_parser(subparsers)          # registers "synth" with func=synth.run

Examples::

    edge-trainer synth --domain factory --seed 1 --count 800 --out data/factory-train
    edge-trainer synth --domain factory --seed 2 --count 500 --out data/factory-holdout
    edge-trainer synth --domain drifted --seed 3 --video --frames 300 --size 1080x1920 --out demo/drifted.mp4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Tuple

from agent.synthetic import DOMAINS, SyntheticError, render_video, write_yolo_dataset

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")


def parse_size(text: str) -> Tuple[int, int]:
    """``HxW`` (e.g. ``256x256``, ``1080x1920``) -> (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"size must look like HxW, e.g. 256x256 or 1080x1920, not {text!r}")
    height, width = int(parts[0]), int(parts[1])
    if not (16 <= height <= 8192 and 16 <= width <= 8192):
        raise argparse.ArgumentTypeError(f"size {text!r}: each side must lie within 16..8192 pixels")
    return height, width


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand on an ``argparse`` subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="render a synthetic YOLO data set or conveyor video",
        description=(
            "Render frames of the seeded conveyor scene (agent.synthetic). Without --video: a YOLO data set "
            "(images/, labels/, data.yaml) in --out. With --video: a conveyor video at --out "
            "(a file name ending in .mp4/.avi, or a folder that gets synthetic-DOMAIN-SEED.mp4)."
        ),
    )
    parser.add_argument("--domain", required=True, help=f"scene domain: {', '.join(sorted(DOMAINS))}")
    parser.add_argument("--seed", required=True, type=_non_negative_int, help="random seed (>= 0)")
    parser.add_argument("--count", type=_non_negative_int, help="number of data set images (required without --video)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (data set) or video file/folder")
    parser.add_argument("--size", type=parse_size, default=None, help="HxW; default 256x256, or 1080x1920 with --video")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of images in a val split (default 0: val = train)",
    )
    parser.add_argument(
        "--image-format",
        choices=("png", "jpg"),
        default="png",
        help="image files (default png: exact pixels)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the images/, labels/ and data.yaml of an existing data set",
    )
    parser.add_argument("--video", action="store_true", help="render a conveyor video instead of a data set")
    parser.add_argument("--frames", type=_non_negative_int, default=150, help="video length in frames (default 150)")
    parser.add_argument("--fps", type=float, default=15.0, help="video frame rate (default 15)")
    parser.add_argument("--codec", default="mp4v", help="video FourCC (default mp4v; MJPG for .avi)")
    parser.set_defaults(func=run)
    return parser


def _progress_printer(label: str, stream: Any) -> Callable[[int, int], None]:
    """A progress callback that prints a line at every 10 % step (and the last item)."""
    last_decile = [-1]

    def report(done: int, total: int) -> None:
        decile = done * 10 // total
        if decile != last_decile[0] or done == total:
            last_decile[0] = decile
            print(f"{label}: {done}/{total} ({100 * done // total}%)", file=stream, flush=True)

    return report


def run(args: argparse.Namespace) -> int:
    """Execute ``synth``; returns the process exit code (0 ok, 2 bad input or output problem)."""
    started = time.monotonic()
    try:
        if args.video:
            return _run_video(args, started)
        return _run_dataset(args, started)
    except (SyntheticError, ValueError, OSError) as exc:
        print(f"edge-trainer synth: error: {exc}", file=sys.stderr)
        return 2


def _run_dataset(args: argparse.Namespace, started: float) -> int:
    if args.count is None or args.count < 1:
        print("edge-trainer synth: error: --count N (>= 1) is required without --video", file=sys.stderr)
        return 2
    size = args.size or (256, 256)
    data_yaml = write_yolo_dataset(
        args.out,
        args.domain,
        args.seed,
        args.count,
        size=size,
        val_fraction=args.val_fraction,
        progress=_progress_printer("synth", sys.stderr),
        image_format=args.image_format,
        overwrite=args.overwrite,
    )
    n_val = round(args.count * args.val_fraction)
    print(
        f"synth: wrote {args.count} images ({args.count - n_val} train, {n_val} val) of domain {args.domain}"
        f" seed {args.seed} at {size[0]}x{size[1]} in {time.monotonic() - started:.1f} s: {data_yaml}"
    )
    return 0


def _run_video(args: argparse.Namespace, started: float) -> int:
    if args.frames < 1:
        print("edge-trainer synth: error: --frames must be >= 1", file=sys.stderr)
        return 2
    size = args.size or (1080, 1920)
    out: Path = args.out
    target = out if out.suffix.lower() in VIDEO_SUFFIXES else out / f"synthetic-{args.domain}-{args.seed}.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    render_video(
        target,
        args.domain,
        args.seed,
        args.frames,
        fps=args.fps,
        size=size,
        codec=args.codec,
        progress=_progress_printer("synth video", sys.stderr),
    )
    print(
        f"synth: wrote {args.frames} frames of domain {args.domain} seed {args.seed} at {size[0]}x{size[1]}"
        f" {args.fps:g} fps in {time.monotonic() - started:.1f} s: {target}"
    )
    return 0
