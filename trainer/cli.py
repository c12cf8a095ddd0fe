"""``edge-trainer``: the cloud side's command line. Wiring only; each command lives in trainer/commands/."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from trainer.commands import (
    devices,
    evaluate,
    export,
    fleet_pages,
    ingest,
    labelling,
    push,
    release,
    rollout,
    rounds,
    store,
    synth,
    train,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-trainer", description="Train, evaluate, export and release models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    synth.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    release.add_parsers(sub)
    push.add_parser(sub)
    ingest.add_parser(sub)
    store.add_parsers(sub)
    labelling.add_parser(sub)
    rounds.add_parser(sub)
    rollout.add_parser(sub)
    devices.add_parser(sub)
    fleet_pages.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in release.COMMANDS:
        return int(release.run(args))
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
