"""``edge-agent``: the command line of the edge agent. Wiring only; each command lives in its module."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

from agent import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Edge vision agent.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from agent.app import detect
    from agent.config import add_config_argument
    from agent.ota import cli as ota_cli

    detect.add_parser(sub)
    # --config before the sub-command and after it (`edge-agent ota install --config X ...`); after it with
    # SUPPRESS as default: when absent there, the value given before it (or the default) stands
    ota_parser = ota_cli.add_parser(
        sub, shared=lambda p: add_config_argument(p, " (for the ota section)", default=argparse.SUPPRESS)
    )
    add_config_argument(ota_parser, " (for the ota section)")
    ota_parser.set_defaults(handler=_run_ota)
    from agent.app import config_example, status
    from agent.daemon import run

    run.add_run_parser(sub)
    status.add_status_parser(sub)

    config_example.add_config_parser(sub)
    return parser


WRITING_COMMANDS = ("install", "rollback", "commit")
"""`edge-agent ota` commands that write the installer's state (``status`` and ``verify`` only read it)."""


def _state_owner(state_dir: Path) -> Optional[int]:
    """The owner of the OTA state directory (or of the nearest existing parent: the daemon's StateDirectory=)."""
    for path in (state_dir, *state_dir.parents):
        try:
            return path.stat().st_uid if path != Path("/") else None
        except OSError:
            continue
    return None


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def _run_ota(args: argparse.Namespace) -> int:
    from agent.config import CREDENTIALS_SOURCE, ConfigError, OtaCommandConfig, load_settings
    from agent.ota import cli as ota_cli

    try:
        # the ota commands use no secret: run by a person or edge-agent-usb@, they check the file without them
        config = load_settings(
            args.config, OtaCommandConfig, credentials="optional", credential_source=CREDENTIALS_SOURCE
        )
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if config.ota is None:
        sys.stderr.write(f"error: {args.config}: updates are disabled (no 'ota' section)\n")
        return 2
    owner = _state_owner(config.ota.state_dir)
    if args.ota_command in WRITING_COMMANDS and owner is not None and os.geteuid() != owner:
        # root's files in the daemon's state directory (state.json, slots) would stop the daemon reading them
        name = _user_name(owner)
        sys.stderr.write(
            f"error: {config.ota.state_dir} belongs to {name}: run this as that user, e.g. "
            f"runuser -u {name} -- {sys.argv[0]} ota {args.ota_command} ...\n"
        )
        return 2
    from agent.ota.installer import ServingContext
    from agent.rules_config import class_needs

    # what `run` would serve and what its rules name: an install from here meets the same contract
    context = ServingContext(config.model.path, class_needs({c.name: c.rules for c in config.cameras if c.enabled}))
    return ota_cli.run(args, config.ota, serving=lambda: context)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Any = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent detect ... | head`: the reader left; not an error of ours
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
