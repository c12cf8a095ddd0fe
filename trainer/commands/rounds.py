"""``edge-trainer round`` (run one learning round now) and ``edge-trainer rounds`` (the rounds so far)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict

from agent.config import ConfigError
from trainer.commands.tables import format_table, iso
from trainer.labelling import resolve_classes
from trainer.rounds import Round, RoundRefused, list_rounds, running_model
from trainer.settings import add_config_argument, load_trainer_config
from trainer.store import StoreError, open_blobs, open_reader


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "round",
        help="run one learning round: field samples + replay -> fine-tune -> export -> gate (INT8) -> release",
        description="Trains on the store's labelled field samples plus a replay share of the base set, exports "
        "what ships, gates the INT8 model through the agent's engine on the base and new-domain holdouts, and "
        "signs a passing candidate (trainer.yaml rounds.release). Exit 0 published, 1 rejected or failed, 2 "
        "refused (too few samples) or bad configuration.",
    )
    add_config_argument(p)
    p.add_argument(
        "--classes",
        help="class names, comma-separated (default: trainer.yaml labelling.classes, "
        "the running model's, else the synthetic scenes')",
    )
    p.set_defaults(handler=run_round)
    p = subparsers.add_parser("rounds", help="the learning rounds so far and the model they left running")
    add_config_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_rounds)


def run_round(args: argparse.Namespace) -> int:
    try:
        config = load_trainer_config(args.config)
        if config.rounds is None:
            raise ConfigError(["rounds: missing (base_data, base_holdout, ...)"], str(args.config))
        rounds = config.rounds
        classes = resolve_classes(
            args.classes, config.labelling.classes, running_model(rounds.workdir, rounds.baseline).onnx
        )
        reader = open_reader(config.store.index_path, config.store.busy_timeout_ms)
        blobs = open_blobs(config.store)
    except (ConfigError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        record = Round(rounds, classes).run(reader, blobs)
    except RoundRefused as exc:
        print(f"round refused: {exc}", file=sys.stderr)
        return 2
    finally:
        blobs.close()
        reader.close()
    print(summary_line(record))
    for reason in record.get("reasons", []):
        print(f"  {reason}")
    if record.get("report"):
        print(f"report: {record['report'].get('markdown')}")
    return 0 if record["state"] == "published" else 1


def summary_line(record: Dict[str, Any]) -> str:
    f = (record.get("gate") or {}).get("figures") or {}
    scores = ""
    if f:
        scores = (
            f" new domain {f['new_domain_before']:.3f} -> {f['new_domain_after']:.3f}, base "
            f"{f['base_before']:.3f} -> {f['base_after']:.3f}"
        )
    release = record.get("release")
    released = f", released {release['version']} (#{release['counter']})" if release else ""
    return f"round {record['id']}: {record['state']}{scores}{released}"


def run_rounds(args: argparse.Namespace) -> int:
    try:
        config = load_trainer_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.rounds is None:
        print("error: trainer.yaml has no rounds section", file=sys.stderr)
        return 2
    records = list_rounds(config.rounds.workdir)
    running = running_model(config.rounds.workdir, config.rounds.baseline)
    if args.json:
        print(json.dumps({"running": running.as_dict(), "rounds": records}, indent=2, default=str))
        return 0
    rows = []
    for r in records:
        f = (r.get("gate") or {}).get("figures") or {}
        rows.append(
            [
                r["id"],
                iso(r.get("started_at")),
                r.get("state"),
                f"{f['new_domain_before']:.3f}->{f['new_domain_after']:.3f}" if f else "-",
                f"{f['base_before']:.3f}->{f['base_after']:.3f}" if f else "-",
                (r.get("release") or {}).get("version", "-"),
                (r.get("report") or {}).get("markdown", "-"),
            ]
        )
    print(format_table(["ROUND", "STARTED", "STATE", "NEW DOMAIN", "BASE", "RELEASE", "REPORT"], rows))
    print(
        f"running: {running.name} {running.version}"
        + (f" (round {running.round_id})" if running.round_id else " (baseline)")
    )

    return 0
