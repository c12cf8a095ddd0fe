"""``edge-agent ota ...``: install, status, rollback, verify (handlers for the lead's agent/cli.py).

Wiring::

    from agent.ota import cli as ota_cli
    ota_cli.add_parser(subparsers)          # adds "ota" with its sub-commands
    ...
    if args.command == "ota": return ota_cli.run(args, ota_config)

Exit codes: 0 done (``install`` of a drive's bundle while a release is on probation: queued, verified and
kept on the box, so the drive can be removed); 2 rejected (verification, compatibility, floor, health); 3
transport failed; 4 state (another operation running, nothing to roll back to, a URL install during
probation, an older release than the one queued); 1 anything else. Errors print ``reason: detail``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from agent.ota.config import OtaConfig
from agent.ota.errors import (
    BundleError,
    HealthCheckFailed,
    OtaError,
    ReleaseRejected,
    StateError,
    TransportError,
    VerificationError,
)
from agent.ota.installer import Installer, OtaEvent, ServingContext
from agent.ota.probation import served_s
from agent.ota.state import Queued, Trial


def add_parser(
    subparsers: Any, shared: Optional[Callable[[argparse.ArgumentParser], None]] = None
) -> argparse.ArgumentParser:
    """Add ``ota`` and its sub-commands to an ``argparse`` sub-parser collection; ``shared`` adds options every
    sub-command takes too (``--config`` after the sub-command)."""
    parser: argparse.ArgumentParser = subparsers.add_parser("ota", help="signed model updates")
    sub = parser.add_subparsers(dest="ota_command", required=True)
    commands = []
    p = sub.add_parser(
        "install",
        help="verify, health-check and switch to a release (PATH or URL); a PATH given while a release is on "
        "probation is verified and queued until that trial ends",
    )
    p.add_argument("source", help="bundle directory / .tar file, or the base URL of a release repository")
    p.add_argument("--json", action="store_true", help="print events as JSON lines")
    commands.append(p)
    p = sub.add_parser("status", help="active, previous and known-good release, probation, floor")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    commands.append(p)
    commands.append(sub.add_parser("rollback", help="return to the known-good (in probation) or the previous release"))
    p = sub.add_parser("verify", help="verify a bundle or repository without installing")
    p.add_argument("source", help="bundle directory / .tar file, or a repository URL")
    commands.append(p)
    commands.append(sub.add_parser("commit", help="end probation now and commit the active release"))
    commands.append(sub.add_parser("dequeue", help="drop the release queued to install after the probation"))
    if shared is not None:
        for command in commands:
            shared(command)
    return parser


def _exit_code(exc: OtaError) -> int:
    if isinstance(exc, (VerificationError, ReleaseRejected, HealthCheckFailed, BundleError)):
        return 2
    if isinstance(exc, TransportError):
        return 3
    if isinstance(exc, StateError):
        return 4
    return 1


def describe_probation(trial: Optional[Dict[str, Any]], period_s: float, now: Optional[dt.datetime] = None) -> str:
    """The trial in one line: probation served against the period, starts, crashes, power losses."""
    if not trial:
        return "-"
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        served = f"{served_s(Trial(**trial), now):.0f} of {period_s:.0f} s served"
    except (TypeError, ValueError):
        served = "served time unknown"
    where = f"served by the daemon since {trial['serving_since']}" if trial.get("serving_since") else "not served now"
    return (
        f"[{str(trial.get('slot', ''))[:12]}] {served}, {where}; starts {trial.get('starts', 0)}, "
        f"crashes {trial.get('crashes', 0)}, power losses {trial.get('power_losses', 0)}"
    )


def describe_queued(queued: Optional[Dict[str, Any]]) -> str:
    """The queued bundle in one line."""
    if not queued:
        return "-"
    r = queued.get("release") or {}
    return (
        f"{r.get('name')} {r.get('version')} #{r.get('counter')} [{str(queued.get('slot', ''))[:12]}] from "
        f"{queued.get('source')} at {queued.get('queued_at')}: installs when the probation ends"
    )


def describe_outcome(last: Optional[Dict[str, Any]]) -> str:
    """The last install attempt in one line: ``rejected widget 2.0.0 at …: incompatible: the class list …``."""
    if not last:
        return "-"
    release = last.get("release") or {}
    label = f" {release.get('name')} {release.get('version')}" if release else ""
    reason = f"{last['reason']}: " if last.get("reason") else ""
    detail = f": {reason}{last.get('detail') or ''}" if reason or last.get("detail") else ""
    return f"{last.get('kind')}{label} at {last.get('at', '?')}{detail}"


def _install_queued(inst: Installer) -> int:
    """After a commit or rollback: the bundle queued during the trial installs now (a running daemon would
    take it at its next tick otherwise; the installer's lock lets only one of them do it)."""
    queued = inst.state().queued
    if queued is None:
        return 0
    print(f"installing the queued release {describe_queued(vars(queued))}")
    try:
        inst.install_queued()
    except OtaError as exc:
        print(f"error: queued release: {exc}", file=sys.stderr)
        return _exit_code(exc)
    return 0


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def run(
    args: argparse.Namespace,
    config: OtaConfig,
    installer: Optional[Installer] = None,
    serving: Optional[Callable[[], ServingContext]] = None,
) -> int:
    """Run the parsed ``ota`` command; returns the process exit code (``serving``: see :class:`Installer`)."""
    as_json = bool(getattr(args, "json", False))

    def show(event: OtaEvent) -> None:
        if as_json:
            print(
                json.dumps(
                    {"event": event.kind, "release": event.release, "reason": event.reason, "detail": event.detail}
                ),
                flush=True,
            )
        else:
            label = "" if event.release is None else f" {event.release['name']} {event.release['version']}"
            tail = f" ({event.reason}: {event.detail})" if event.reason else ""
            print(f"{event.kind}{label}{tail}", flush=True)

    inst = installer or Installer(config, on_event=show, serving=serving)
    try:
        if args.ota_command == "install":
            if _is_url(args.source):
                inst.install_url(args.source)  # during probation: refused (the repository can be read again later)
                return 0
            outcome = inst.install_or_queue(Path(args.source))
            if isinstance(outcome, Queued) and not as_json:
                print(f"queued: {describe_queued(vars(outcome))}; the drive can be removed")
            return 0
        if args.ota_command == "verify":
            manifest = (
                inst.install_url(args.source, dry_run=True)
                if _is_url(args.source)
                else inst.install_path(Path(args.source), dry_run=True)
            )
            print(
                f"ok: {getattr(manifest, 'name', '?')} {getattr(manifest, 'version', '?')} "
                f"(#{getattr(manifest, 'counter', '?')}) verifies"
            )
            return 0
        if args.ota_command == "status":
            status = inst.status()
            if as_json:
                print(json.dumps(status, indent=2, sort_keys=True))
            else:
                for key in ("active", "previous", "known_good"):
                    r = status[key]
                    print(
                        f"{key:11s} "
                        + ("-" if r is None else f"{r['name']} {r['version']} #{r['counter']} [{r['slot'][:12]}]")
                    )
                print(f"probation   {describe_probation(status['probation'], config.probation.period_s)}")
                print(f"queued      {describe_queued(status.get('queued'))}")
                print(f"floor       {status['floor']}")
                print(f"last        {describe_outcome(status.get('last'))}")
            return 0
        if args.ota_command == "rollback":
            target = inst.rollback("manual")
            print(f"rolled back to {target.name} {target.version} #{target.counter}")
            return _install_queued(inst)
        if args.ota_command == "commit":
            rec = inst.commit()
            print(f"committed {rec.name} {rec.version} #{rec.counter}")
            return _install_queued(inst)
        if args.ota_command == "dequeue":
            dropped = inst.dequeue()
            print("nothing queued" if dropped is None else f"dropped {describe_queued(vars(dropped))}")
            return 0
    except OtaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    print(f"unknown ota command {args.ota_command!r}", file=sys.stderr)
    return 1
