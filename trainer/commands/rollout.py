"""``edge-trainer rollout start|status|promote|halt|watch``: a staged rollout of a signed release."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from agent.config import ConfigError
from trainer.commands.tables import format_table
from trainer.release import PushError
from trainer.rollout import MAX_ROLLBACKS, MqttActions, Rollout, RolloutError, dumps
from trainer.rounds import list_rounds
from trainer.settings import TrainerConfig, add_config_argument, load_trainer_config
from trainer.store import StoreError, open_reader


def add_parser(subparsers: Any) -> None:
    rollout = subparsers.add_parser(
        "rollout",
        help="staged rollout: canary group, wider groups, the fleet; halts on OTA failures and quality shifts",
    )
    sub = rollout.add_subparsers(dest="rollout_command", required=True)
    p = sub.add_parser("start", help="start rolling out a release (default: the newest published round's)")
    add_config_argument(p)
    p.add_argument("--bundle", type=Path, help="the release's online bundle (edge-trainer usb-bundle --online)")
    p.add_argument("--round", dest="round_id", help="the release a learning round published")
    p.add_argument("--repo", type=Path, help="the repository the URL pushes point at (rollout.urls)")
    p.set_defaults(handler=run_start)
    for name, helptext in (
        ("status", "the current rollout and every device's phase"),
        ("watch", "step the rollout every tick until it completes (exit 0) or halts (exit 1)"),
    ):
        p = sub.add_parser(name, help=helptext)
        add_config_argument(p)
        p.add_argument("--json", action="store_true")
        if name == "watch":
            p.add_argument("--max-minutes", type=float, default=None, help="give up after this long (exit 3)")
        p.set_defaults(handler=run_status if name == "status" else run_watch)
    p = sub.add_parser("promote", help="promote the current stage (its conditions must hold, or --force)")
    add_config_argument(p)
    p.add_argument("--force", action="store_true")
    p.set_defaults(handler=run_promote)
    p = sub.add_parser("halt", help="halt: restore the stages' previous pushes, roll devices back")
    add_config_argument(p)
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=run_halt)


def _rollout(args: argparse.Namespace) -> Any:
    config = load_trainer_config(args.config)
    if config.rollout is None:
        raise ConfigError(["rollout: missing (site, stages, broker)"], str(args.config))
    rollout_config = config.rollout
    return config, Rollout(
        rollout_config,
        lambda: open_reader(config.store.index_path, config.store.busy_timeout_ms),
        lambda: MqttActions(rollout_config),
    )


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _line(state: Dict[str, Any]) -> str:
    stage = state["stages"][min(state["stage"], len(state["stages"]) - 1)]
    release = state["release"]
    text = f"rollout {state['id']}: {release['name']} {release['version']} (#{release['counter']}) {state['state']}"
    if state["state"] == "running":
        text += f", stage {stage['name']} ({state['stage'] + 1}/{len(state['stages'])})"
        decision = state.get("last_decision")
        if decision:
            text += f": {decision['action']}, {'; '.join(decision['reasons'])[:300]}"
    if state.get("halt"):
        text += (
            f" at stage {state['stages'][state['halt']['stage']]['name']}: {'; '.join(state['halt']['reasons'])[:500]}"
        )
    return text


def _bundle_of_round(config: TrainerConfig, round_id: Optional[str]) -> Path:
    if config.rounds is None:
        raise ValueError("give --bundle (trainer.yaml has no rounds section)")
    published = [r for r in list_rounds(config.rounds.workdir) if r.get("state") == "published"]
    if round_id:
        published = [r for r in published if r["id"] == round_id]
    if not published:
        raise ValueError(f"no published round{' ' + round_id if round_id else ''}: give --bundle")
    return Path(published[-1]["release"]["bundle"])


def run_start(args: argparse.Namespace) -> int:
    try:
        config, rollout = _rollout(args)
        bundle = args.bundle or _bundle_of_round(config, args.round_id)
        try:
            state = rollout.start(bundle, repo=args.repo)
        finally:
            rollout.close()
    except (ConfigError, StoreError, RolloutError, PushError, ValueError, OSError) as exc:
        return _fail(exc)
    print(_line(state))
    return 0


def run_status(args: argparse.Namespace) -> int:
    try:
        _, rollout = _rollout(args)
        try:
            status = rollout.status()
        finally:
            rollout.close()
    except (ConfigError, StoreError, RolloutError) as exc:
        return _fail(exc)
    if args.json:
        print(dumps(status))
        return 0
    print(_line(status))
    print(
        format_table(
            ["DEVICE", "GROUPS", "MODEL", "OTA", "NEW", "COMMITTED", "FRAMES (NEW)", "PROBLEM"],
            (
                [
                    d["device"],
                    ",".join(d["groups"]),
                    d["model_version"] or "-",
                    d["ota_phase"] or "-",
                    "yes" if d["running_new"] else "",
                    "yes" if d["committed_new"] else "",
                    d["after_frames"],
                    d["problem"] or "",
                ]
                for d in status["devices"]
            ),
        )
    )
    for e in status["events"][-8:]:
        print(f"  {time.strftime('%H:%M:%S', time.localtime(e['at']))} {e['event']}: {e['detail']}")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    try:
        _, rollout = _rollout(args)
        try:
            state = rollout.promote(force=args.force)
        finally:
            rollout.close()
    except (ConfigError, StoreError, RolloutError, PushError) as exc:
        return _fail(exc)
    print(_line(state))
    return 0


def run_halt(args: argparse.Namespace) -> int:
    try:
        _, rollout = _rollout(args)
        try:
            state = rollout.halt(args.reason)
        finally:
            rollout.close()
    except (ConfigError, StoreError, RolloutError) as exc:
        return _fail(exc)
    print(_line(state))
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """Exit 0 completed, 1 halted, 3 out of time."""
    try:
        config, rollout = _rollout(args)
    except (ConfigError, StoreError) as exc:
        return _fail(exc)
    deadline = None if args.max_minutes is None else time.monotonic() + args.max_minutes * 60
    last = ""
    try:
        while True:
            state = rollout.tick()
            line = _line(state)
            if line != last:
                print(line, flush=True)
                last = line
            if state["state"] == "completed":
                return 0
            if state["state"] == "halted":
                stuck = [d["device"] for d in rollout.status()["devices"] if d["running_new"]]
                tries = state["halt"].get("rollbacks", {})
                if not stuck:
                    return 1
                if all(tries.get(device, 0) >= MAX_ROLLBACKS for device in stuck):
                    print(
                        f"halted, but {', '.join(stuck)} still run {state['release']['version']} after "
                        f"{MAX_ROLLBACKS} rollback commands: see their command replies and logs",
                        flush=True,
                    )
                    return 1
            if deadline is not None and time.monotonic() > deadline:
                return 3
            time.sleep(config.rollout.tick_s)
    except (RolloutError, PushError, StoreError) as exc:
        return _fail(exc)
    finally:
        rollout.close()
