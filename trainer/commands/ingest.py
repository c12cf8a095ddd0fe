"""``edge-trainer serve`` (the ingest service, and the learning rounds' policy thread beside it when
``rounds.policy.enabled``) and ``edge-trainer ingest-status`` (what it is doing)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.config import ConfigError
from agent.observability import setup_logging
from trainer.commands.common import install_signal_handlers
from trainer.ingest import IngestService, SideTask, status_path
from trainer.rounds import RoundPolicy
from trainer.settings import TrainerConfig, add_config_argument, load_trainer_config
from trainer.store import StoreError


def add_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the MQTT ingest service (samples, alerts, snapshots, statuses, OTA reports into the store)",
        description="Subscribe to the fleet's topics and store every message durably before acknowledging it. "
        "SIGTERM drains and stops.",
    )
    add_config_argument(serve)
    serve.set_defaults(handler=run_serve)
    status = subparsers.add_parser("ingest-status", help="what the running ingest service reports")
    add_config_argument(status)
    status.add_argument("--json", action="store_true", help="print the status document as JSON")
    status.set_defaults(handler=run_status)


def _load(args: argparse.Namespace) -> Any:
    try:
        config = load_trainer_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if config.ingest is None:
        print(f"error: {args.config} has no ingest section", file=sys.stderr)
        return None
    return config


def run_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    setup_logging(config.logging.level, config.logging.format)
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        service = build_service(config, args.config)
    except (StoreError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return service.run(stop)


def build_service(config: TrainerConfig, config_path: Path) -> IngestService:
    """The ingest service, and beside it (``rounds.policy.enabled``) the ``round-policy`` thread that starts
    ``edge-trainer round --config CONFIG_PATH`` when a round is due; its state is the status document's
    ``round_policy``."""
    policy: Optional[RoundPolicy] = None
    side_tasks: List[SideTask] = []
    if config.rounds is not None and config.rounds.policy.enabled:
        policy_stop = threading.Event()
        policy = RoundPolicy(config.rounds, config.store.index_path, config_path, policy_stop)
        side_tasks.append(SideTask("round-policy", policy.run, policy_stop.set))

    def policy_report() -> Optional[Dict[str, Any]]:
        if policy is None:
            return None
        return {"running": policy.child is not None, "last_reason": policy.last_reason, "started": len(policy.started)}

    return IngestService(config, side_tasks=side_tasks, reports={"round_policy": policy_report})


def run_status(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    path = status_path(config)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"error: no status at {path} ({exc}); is `edge-trainer serve` running?", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    age = time.time() - float(document.get("updated_at", 0))
    mqtt, writer, store = document["mqtt"], document["writer"], document["store"]
    stored = {k.split(":")[0]: v for k, v in writer["outcomes"].items() if k.endswith(":stored")}
    print(f"worker {document['worker']} ({document['state']}, pid {document['pid']}, status {age:.0f} s old)")
    print(
        f"  mqtt    {'connected' if mqtt['connected'] else 'DISCONNECTED'} protocol {mqtt['protocol']} "
        f"shared={mqtt['shared_subscription']} received {mqtt['received']} acked {mqtt['acked']}"
    )
    print(f"  stored  {', '.join(f'{k} {v}' for k, v in sorted(stored.items())) or 'nothing yet'}")
    print(f"  rejected {', '.join(f'{k} {v}' for k, v in sorted(writer['drops'].items())) or 'none'}")
    full = "FULL (new images refused)" if store["full"] else "ok"
    print(f"  store   {store['path']} ({store['blobs']}): {store['used_bytes'] / 1e6:.1f} MB used, {full}")
    for line in document.get("problems", []):
        print(f"  PROBLEM {line}")
    for line in document.get("warnings", []):
        print(f"  warning {line}")
    if age > 30:
        print("  warning: the status file is stale; the service may not be running")
    return 1 if document.get("problems") else 0
