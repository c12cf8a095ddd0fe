"""``edge-trainer``: the cloud side's command line. Wiring only; each command lives in its module."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-trainer", description="Train, evaluate, export and release models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from trainer import evaluate, export, synth, train
    from trainer.console import cli as console_cli
    from trainer.devices import cli as devices_cli
    from trainer.ingest import cli as ingest_cli
    from trainer.labelling import cli as label_cli
    from trainer.release import cli as release_cli
    from trainer.release import push
    from trainer.rollout import cli as rollout_cli
    from trainer.rounds import cli as rounds_cli
    from trainer.store import cli as store_cli

    for module in (synth, train, evaluate, export):
        module.add_parser(sub)
    release_cli.add_parsers(sub)
    push.add_parser(sub)
    ingest_cli.add_parser(sub)
    store_cli.add_parsers(sub)
    label_cli.add_parser(sub)
    rounds_cli.add_parser(sub)
    rollout_cli.add_parser(sub)
    devices_cli.add_parser(sub)
    console_cli.add_parser(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from trainer.release import cli as release_cli

    if args.command in release_cli.COMMANDS:
        return int(release_cli.run(args))
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    return int(handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
