"""``edge-trainer console``: serve the fleet pages until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from agent.config import ConfigError
from agent.observability import setup_logging
from trainer.commands.common import install_signal_handlers
from trainer.fleet_pages import CloudConsoleConfig, FleetData, FleetPagesServer
from trainer.settings import add_config_argument, load_trainer_config


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "console",
        help="serve the fleet pages (fleet, rollouts, rounds, samples) from the store and records",
        description="A web page over the sample store, the fleet registry, rollouts and learning rounds. "
        "Loopback only unless console.password is set.",
    )
    add_config_argument(p)
    p.add_argument("--port", type=int, help="override console.port")
    p.set_defaults(handler=run_console)


def run_console(args: argparse.Namespace) -> int:
    try:
        config = load_trainer_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, config.logging.format)
    console = config.console or CloudConsoleConfig()
    if args.port is not None:
        console = console.model_copy(update={"port": args.port})
    data = FleetData(config)
    try:
        server = FleetPagesServer(console, data)
    except OSError as exc:
        print(f"error: cannot serve on {console.host}:{console.port}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    install_signal_handlers(stop)
    server.start()
    print(f"fleet pages on http://{console.host}:{server.port}/", flush=True)
    stop.wait()
    server.stop()
    data.close()
    return 0
