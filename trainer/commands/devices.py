"""``edge-trainer devices init|server|provision|rotate|revoke|crl|list --pki DIR``: the site's device
identities (trainer/devices/store.py says what lives in DIR). Exit codes: 0 done, 2 refused (the message says
why: an existing CA, an unknown or already provisioned device, a reserved id). Importable without torch
(Python 3.8+)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, List, Optional

from trainer.devices import PkiError, SitePki

RELOAD_HINT = "the broker reads the CRL at start: `systemctl reload mosquitto` (SIGHUP) or restart it to apply"


def add_parser(subparsers: Any) -> None:
    devices = subparsers.add_parser(
        "devices", help="device identities: site CA, per-device client certificates, rotation, revocation (CRL)"
    )
    sub = devices.add_subparsers(dest="devices_command", required=True)

    def command(name: str, helptext: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=helptext)
        p.add_argument("--pki", type=Path, required=True, help="the site PKI directory (e.g. /etc/mosquitto/edge)")
        return p

    p = command("init", "create the site CA and an empty CRL (refuses to overwrite a CA)")
    p.add_argument("--days", type=int, default=3650)
    p.set_defaults(handler=lambda a: _run(a, lambda pki: print(pki.init(a.days))))
    p = command("server", "issue the broker's certificate")
    p.add_argument("host")
    p.add_argument("ips", nargs="*", help="IP addresses for the certificate's SAN")
    p.set_defaults(handler=lambda a: _run(a, lambda pki: print(pki.server(a.host, a.ips))))
    for name, helptext in (
        ("provision", "issue a device's first client certificate (CN = device id = its MQTT username)"),
        ("rotate", "issue a new certificate for a device; the previous one stays valid until revoked"),
    ):
        p = command(name, helptext)
        p.add_argument("device")
        p.add_argument("--days", type=int, default=None, help="validity (default 397 days)")
        p.set_defaults(handler=lambda a, n=name: _run(a, lambda pki: _issued(pki, getattr(pki, n)(a.device, a.days))))
    p = command("revoke", "put a device's certificates on the CRL (all valid ones unless narrowed)")
    p.add_argument("device")
    p.add_argument("--superseded", action="store_true", help="only the certificates a rotation replaced")
    p.add_argument("--serial", type=lambda s: int(s, 0), help="only this serial (decimal or 0x...)")
    p.set_defaults(handler=lambda a: _run(a, lambda pki: _revoked(pki, a)))
    p = command("crl", "rewrite the CRL with a fresh validity (run it monthly: a timer, before it expires)")
    p.set_defaults(handler=lambda a: _run(a, lambda pki: print(pki.refresh_crl())))
    p = command("list", "every certificate issued, with its state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=lambda a: _run(a, lambda pki: _list(pki, a.json)))


def _run(args: argparse.Namespace, action: Any) -> int:
    try:
        action(SitePki(args.pki))
    except PkiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _issued(pki: SitePki, record: Any) -> None:
    print(f"{record.device}: serial {record.serial:#x}, valid until {record.not_after}")
    print(f"  certificate {pki.device_cert(record.device)}")
    print(f"  key         {pki.device_key(record.device)}  (install it on the device, then delete it here)")


def _revoked(pki: SitePki, args: argparse.Namespace) -> None:
    for record in pki.revoke(args.device, only_superseded=args.superseded, serial=args.serial):
        print(f"revoked {record.device} serial {record.serial:#x}")
    print(f"CRL written: {pki.crl}; {RELOAD_HINT}")


def _list(pki: SitePki, as_json: bool) -> None:
    records = pki.records()
    if as_json:
        print(json.dumps([asdict(r) for r in records], indent=1))
        return
    for r in records:
        print(f"{r.device:24} {r.serial:#034x} {r.state:10} until {r.not_after}")


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m trainer.commands.devices ...``: the same commands without the rest of the trainer (which needs
    Python 3.10+; this part runs wherever the agent does)."""
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
