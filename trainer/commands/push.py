"""``edge-trainer push``: announce a signed release to a site's devices over MQTT (trainer.release.push says
what is published and in which order). Importable without torch (Python 3.8+), like the release package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

from trainer.release import DEFAULT_CHUNK, Publisher, PushError, build_push, publish, push_topic


def _broker(value: str) -> Tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected HOST:PORT")
    return host, int(port)


def add_parser(subparsers: Any) -> Any:
    p = subparsers.add_parser("push", help="push a release to a site's devices over MQTT (retained)")
    p.add_argument("--broker", type=_broker, required=True, help="HOST:PORT of the site broker")
    p.add_argument("--site", required=True, help="site id (topic level)")
    p.add_argument("--prefix", default="edge", help="topic prefix (default: edge)")
    p.add_argument("--group", help="push to this device group only (default: the whole fleet)")
    p.add_argument("--channel", default="stable", help="release channel the devices follow")
    p.add_argument("--bundle", type=Path, help="online bundle tar (usb-bundle --online) sent as MQTT chunks")
    p.add_argument("--url", action="append", default=[], help="HTTP(S) repository URL (repeatable)")
    p.add_argument("--repo", type=Path, help="the repository --url serves (to read the release from)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="bytes per chunk (default 256 KiB)")
    p.add_argument("--tls-ca", type=Path, help="CA of the broker certificate (enables TLS)")
    p.add_argument("--tls-cert", type=Path, help="client certificate (PEM)")
    p.add_argument("--tls-key", type=Path, help="client key (PEM)")
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path)
    p.set_defaults(handler=run)
    return p


def run(args: argparse.Namespace) -> int:
    try:
        if not 4096 <= args.chunk_size <= 4 * 1024 * 1024 - 64 * 1024:
            raise PushError("--chunk-size must be between 4 KiB and 4 MiB - 64 KiB (the devices' frame limit)")
        if (args.tls_cert is None) != (args.tls_key is None):
            raise PushError("--tls-cert and --tls-key go together")
        topic = push_topic(args.prefix, args.site, args.group)
        publication = build_push(topic, args.channel, args.bundle, args.url, args.repo, args.chunk_size)
        password = None
        if args.password_file is not None:
            password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        host, port = args.broker
        publisher = Publisher(host, port, args.tls_ca, args.tls_cert, args.tls_key, args.username, password)
        try:
            count = publish(publisher, publication)
        finally:
            publisher.close()
    except (PushError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    r = publication.push.release
    print(f"pushed {r.name} {r.version} #{r.counter} on {topic} ({count} messages, {len(publication.chunks)} chunks)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
