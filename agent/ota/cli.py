"""``edge-agent ota ...``: install, status, rollback, verify (handlers for the lead's agent/cli.py).

Wiring::

    from agent.ota import cli as ota_cli
    ota_cli.add_parser(subparsers)          # adds "ota" with its sub-commands
    ...
    if args.command == "ota": return ota_cli.run(args, ota_config)

Exit codes: 0 done; 2 rejected (verification, compatibility, floor, health); 3 transport failed; 4 state
(another operation running, nothing to roll back to); 1 anything else. Errors print ``reason: detail``.
"""

from __future__ import annotations

import argparse
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


def add_parser(
    subparsers: Any, shared: Optional[Callable[[argparse.ArgumentParser], None]] = None
) -> argparse.ArgumentParser:
    """Add ``ota`` and its sub-commands to an ``argparse`` sub-parser collection; ``shared`` adds options every
    sub-command takes too (``--config`` after the sub-command)."""
    parser: argparse.ArgumentParser = subparsers.add_parser("ota", help="signed model updates")
    sub = parser.add_subparsers(dest="ota_command", required=True)
    commands = []
    p = sub.add_parser("install", help="verify, health-check and switch to a release (PATH or URL)")
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


def describe_outcome(last: Optional[Dict[str, Any]]) -> str:
    """The last install attempt in one line: ``rejected widget 2.0.0 at …: incompatible: the class list …``."""
    if not last:
        return "-"
    release = last.get("release") or {}
    label = f" {release.get('name')} {release.get('version')}" if release else ""
    reason = f"{last['reason']}: " if last.get("reason") else ""
    detail = f": {reason}{last.get('detail') or ''}" if reason or last.get("detail") else ""
    return f"{last.get('kind')}{label} at {last.get('at', '?')}{detail}"


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
                inst.install_url(args.source)
            else:
                inst.install_path(Path(args.source))
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
                print(f"probation   {status['probation'] or '-'}")
                print(f"floor       {status['floor']}")
                print(f"last        {describe_outcome(status.get('last'))}")
            return 0
        if args.ota_command == "rollback":
            target = inst.rollback("manual")
            print(f"rolled back to {target.name} {target.version} #{target.counter}")
            return 0
        if args.ota_command == "commit":
            rec = inst.commit()
            print(f"committed {rec.name} {rec.version} #{rec.counter}")
            return 0
    except OtaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    print(f"unknown ota command {args.ota_command!r}", file=sys.stderr)
    return 1
