"""``edge-agent run``: load the configuration, set up logging (and the capture of C libraries' stderr), run
the :class:`~agent.daemon.Daemon` until SIGTERM; ``run --check`` validates the configuration and the
factory model without starting anything. Exit codes are the daemon's (docs/DAEMON.md).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import structlog

from agent.config import (
    CREDENTIALS_SOURCE,
    AgentConfig,
    ConfigError,
    CredentialError,
    add_config_argument,
    credential_file_problems,
    load_config,
)
from agent.daemon.daemon import EXIT_CONFIG, EXIT_OK, Daemon
from agent.observability.logs import setup_logging
from agent.observability.native_stderr import capture_native_stderr
from agent.threads import Supervisor

__all__ = ["add_run_parser", "main", "run_daemon"]

log = structlog.get_logger("agent.daemon")


def run_daemon(config_path: Path) -> int:
    """Load the configuration, set up logging, run until SIGTERM. Returns the exit code."""
    try:
        config = load_config(config_path)
        problems = credential_file_problems(config)
        if problems:  # an empty password or key would otherwise fail every connection as if the broker were down
            raise CredentialError(problems, str(config_path))
    except ConfigError as exc:
        setup_logging("info", "json")
        log.error("config_invalid", source=exc.source, problems=exc.problems)
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging.level, config.logging.format)
    supervisor = Supervisor()
    native = None
    if config.logging.format == "json":
        # FFmpeg / GStreamer / OpenCV / ONNX Runtime write to fd 2 between our JSON lines: wrap theirs too
        native = capture_native_stderr(supervisor)
    daemon = Daemon(config, config_path, model_updates=config.model_updates, supervisor=supervisor)
    try:
        return asyncio.run(daemon.run())
    finally:
        if native is not None:
            native.close()


def _check_model(config: AgentConfig) -> Optional[str]:
    """``run --check``: the factory model must exist and parse (no runtime needed), or OTA must be able to
    provide one."""
    from agent.engine.errors import EngineError
    from agent.engine.model import read_model

    if config.model.path is None:
        return None if config.ota is not None else "model.path: no model configured and OTA is disabled"
    try:
        read_model(config.model.path)
    except EngineError as exc:
        return f"model.path: {exc}"
    return None


def add_run_parser(subparsers: Any) -> Any:
    """``edge-agent run --config PATH`` (for agent/cli.py)."""
    parser = subparsers.add_parser("run", help="Run the edge agent daemon (under systemd: Type=notify).")
    add_config_argument(parser)
    parser.add_argument("--check", action="store_true", help="Validate the configuration and exit.")
    parser.add_argument(
        "--credentials-dir",
        type=Path,
        default=None,
        help="With --check: where the credentials the file names are read (default: $CREDENTIALS_DIRECTORY, "
        f"else {CREDENTIALS_SOURCE}, where the unit loads them from: a root shell checks what the unit will get).",
    )

    def handler(args: Any) -> int:
        if args.check:
            credentials = args.credentials_dir or os.environ.get("CREDENTIALS_DIRECTORY") or CREDENTIALS_SOURCE
            os.environ["CREDENTIALS_DIRECTORY"] = str(credentials)  # this process only checks, then exits
            try:
                config = load_config(args.config)
                problems = credential_file_problems(config)
                if problems:
                    raise CredentialError(problems, str(args.config))
            except ConfigError as exc:
                print(str(exc))
                return EXIT_CONFIG
            problem = _check_model(config)
            if problem:
                print(f"{args.config}: {problem}")
                return EXIT_CONFIG
            print(f"{args.config}: ok")
            return EXIT_OK
        return run_daemon(args.config)

    parser.set_defaults(handler=handler)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m agent.daemon --config PATH`` (the same as ``edge-agent run``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="edge-agent")
    add_run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
