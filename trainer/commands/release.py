"""``edge-trainer keys|release|usb-bundle|repo``: the release signing keys, signed releases, USB bundles and the
repository's metadata refresh (trainer.release). Importable without torch (Python 3.8+): the agent's tests run it.

Wiring (trainer/cli.py)::

    release.add_parsers(subparsers)     # adds "keys", "release", "usb-bundle", "repo"
    if args.command in release.COMMANDS: return release.run(args)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from trainer.release import (
    ROLE_FILENAMES,
    KeyError_,
    KeyRing,
    ReleaseSpec,
    Repository,
    RepositoryError,
    build_bundle,
    build_release,
    expiries,
    init_keys,
    metrics_text,
    refresh,
    repository_lock,
    rotate_keys,
    write_metrics,
)

COMMANDS = ("keys", "release", "usb-bundle", "repo")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def duration(text: str) -> dt.timedelta:
    """``90``, ``90s``, ``30m``, ``12h``, ``2d``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 45m, 12h, 2d)")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return dt.timedelta(seconds=float(match.group(1)) * scale)


def add_parsers(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="create or rotate the release signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    p = ksub.add_parser("init", help="create keys for every role (and the repository when --repo is given)")
    p.add_argument("dir", type=Path, help="key directory (keep it offline; see docs/OTA.md for HSM/KMS)")
    p.add_argument("--repo", type=Path, help="also create an empty repository here")
    p = ksub.add_parser("rotate", help="replace a role's keys and re-sign the metadata that names them")
    p.add_argument(
        "role",
        choices=["root", "targets", "snapshot", "timestamp", "trainer", "offline", "online"],
        help="online: trainer, snapshot and timestamp at once (the keys of the release host: after it was "
        "compromised, docs/OPERATIONS.md §7)",
    )
    p.add_argument("--keys", type=Path, required=True, help="key directory")
    p.add_argument("--repo", type=Path, required=True, help="repository directory")

    rel = subparsers.add_parser("release", help="sign a model release into a repository")
    rel.add_argument("--model", type=Path, required=True, help="ONNX model file, or a directory with model.onnx etc.")
    rel.add_argument("--name", required=True)
    rel.add_argument("--version", required=True, help="semantic version, e.g. 1.2.0")
    rel.add_argument("--channel", default="stable")
    rel.add_argument("--counter", type=int, help="release counter (default: highest + 1)")
    rel.add_argument("--repo", type=Path, required=True)
    rel.add_argument("--keys", type=Path, required=True)
    rel.add_argument("--golden", type=Path, nargs="*", default=[], help="golden images (default: generated)")
    rel.add_argument("--device-type", action="append", default=[], help="compatible device type (repeatable)")
    rel.add_argument("--min-agent-version")
    rel.add_argument("--tensorrt", default="", help="TensorRT constraint, e.g. '>=8.5,<11'")
    rel.add_argument("--jetpack", default="", help="JetPack constraint")
    rel.add_argument("--conf", type=float, default=0.25)
    rel.add_argument("--max-latency-ms", type=float)
    rel.add_argument(
        "--declare-change",
        action="append",
        default=[],
        choices=["classes", "input_size", "output_layout"],
        help="an interface change against the releases devices run now, made on purpose (repeatable); devices "
        "refuse any undeclared change, and a declared one unless their configuration accepts it",
    )
    rel.add_argument(
        "--health-role",
        default="onnx",
        help="the model file the devices serve (ota.health.model_role: onnx, onnx_int8, ...); the golden "
        "expectations are recorded with it",
    )

    repo = subparsers.add_parser("repo", help="keep a release repository's metadata fresh; check its expiry")
    rsub = repo.add_subparsers(dest="repo_command", required=True)
    p = rsub.add_parser(
        "refresh", help="re-sign snapshot and timestamp (never targets; only with keys root trusts now)"
    )
    p.add_argument("--repo", type=Path, required=True, help="repository directory")
    p.add_argument("--keys", type=Path, required=True, help="key directory (the online snapshot/timestamp keys)")
    p.add_argument("--offline", action="store_true", help="also re-sign the offline (USB) part's")
    p.add_argument("--metrics-file", type=Path, help="write Prometheus text here (node_exporter textfile collector)")
    p.add_argument("--lock-timeout", type=float, default=600.0, help="seconds to wait for a release in progress")
    p = rsub.add_parser("check", help="each role's version and expiry; exit 1 when one expires within --within")
    p.add_argument("--repo", type=Path, required=True, help="repository directory")
    p.add_argument("--within", type=duration, default=dt.timedelta(hours=12), help="threshold (default 12h)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    usb = subparsers.add_parser("usb-bundle", help="write a self-contained offline bundle (dir, or .tar)")
    usb.add_argument("out", type=Path)
    usb.add_argument("--repo", type=Path, required=True)
    usb.add_argument("--keys", type=Path, required=True)
    usb.add_argument("--channel", default="stable")
    usb.add_argument("--online", action="store_true", help="carry the online metadata (for an MQTT push)")


def _model_files(model: Path) -> Dict[str, Path]:
    if model.is_file():
        return {"onnx": model}
    files = {role: model / name for role, name in ROLE_FILENAMES.items() if (model / name).is_file()}
    if "onnx" not in files:
        raise RepositoryError(f"{model}: no model.onnx")
    return files


def run(args: argparse.Namespace) -> int:
    try:
        if args.command == "keys":
            if args.keys_command == "init":
                ring = init_keys(args.dir)
                print(f"keys written to {args.dir} (private keys: {args.dir}/*.pem, mode 0600)")
                if args.repo:
                    Repository(args.repo, ring).init()
                    Repository(args.repo, ring, offline=True).init()
                    print(
                        f"repository initialised in {args.repo}; ship {args.repo}/metadata/1.root.json and "
                        f"{args.repo}/offline/metadata/1.root.json to devices as their pinned roots"
                    )
                return 0
            ring = KeyRing.load(args.keys)
            roles = ["trainer", "snapshot", "timestamp"] if args.role == "online" else [args.role]
            with repository_lock(args.repo):
                for role in roles:
                    rotate_keys(ring, role)
                for offline in (False, True):
                    repo = Repository(args.repo, ring, offline=offline)
                    if {"root", "targets", "snapshot", "timestamp"} & set(roles) or (offline and "offline" in roles):
                        repo.rotate_root()  # one new root names every rotated key
                        repo.bump_timestamp()
                    if {"trainer", "targets"} & set(roles) and not offline:
                        repo.rotate_trainer()
            print(f"rotated {', '.join(roles)}; retired keys are kept in keys.json until you delete them")
            return 0
        if args.command == "repo":
            return _repo(args)
        ring = KeyRing.load(args.keys)
        if args.command == "release":
            repo = Repository(args.repo, ring)
            spec = ReleaseSpec(
                name=args.name,
                version=args.version,
                channel=args.channel,
                files=_model_files(args.model),
                golden=args.golden,
                counter=args.counter,
                device_types=args.device_type,
                min_agent_version=args.min_agent_version,
                tensorrt=args.tensorrt,
                jetpack=args.jetpack,
                conf=args.conf,
                max_latency_ms=args.max_latency_ms,
                health_role=args.health_role,
                interface_changes=tuple(args.declare_change),
            )
            m = build_release(repo, spec)
            print(f"released {m.name} {m.version} #{m.counter} on channel {m.channel}")
            return 0
        if args.command == "usb-bundle":
            out = build_bundle(args.repo, ring, args.out, args.channel, trust="online" if args.online else "offline")
            print(f"bundle written to {out}")
            return 0
    except (KeyError_, RepositoryError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1


def _repo(args: argparse.Namespace) -> int:
    now = dt.datetime.now(dt.timezone.utc)
    if args.repo_command == "refresh":
        ok = False
        try:
            for result in refresh(args.repo, KeyRing.load(args.keys), args.offline, lock_timeout_s=args.lock_timeout):
                print(
                    f"{result.part}: snapshot v{result.snapshot_version}, timestamp v{result.timestamp_version} "
                    f"valid until {result.timestamp_expires.isoformat()}"
                )
            ok = True
            return 0
        finally:
            if args.metrics_file:
                try:
                    found = expiries(args.repo)
                except (RepositoryError, OSError, ValueError):
                    found = []
                write_metrics(args.metrics_file, metrics_text(found, ok, now))
    found = expiries(args.repo)
    soon = [e for e in found if e.remaining(now) <= args.within]
    if args.json:
        rows = [{"part": e.part, "role": e.role, "version": e.version, "expires": e.expires.isoformat()} for e in found]
        print(json.dumps({"roles": rows, "expiring": [f"{e.part}/{e.role}" for e in soon]}, indent=2))
    else:
        for e in found:
            left = e.remaining(now)
            mark = "  EXPIRES SOON" if e in soon else ""
            state = "EXPIRED" if left.total_seconds() <= 0 else f"in {_human(left)}"
            print(f"{e.part:8s} {e.role:10s} v{e.version:<6d} expires {e.expires.isoformat()} ({state}){mark}")
    if soon:
        names = ", ".join(f"{e.part} {e.role}" for e in soon)
        hint = "run `edge-trainer repo refresh`"
        print(f"error: expiring within {_human(args.within)}: {names} ({hint})", file=sys.stderr)
        return 1
    return 0


def _human(delta: dt.timedelta) -> str:
    seconds = abs(delta.total_seconds())
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
