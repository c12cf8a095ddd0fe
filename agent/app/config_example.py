"""``edge-agent config example``: the configuration a fresh install starts from.

deploy/install-x86.sh and install-jetson.sh write it to ``/etc/edge-agent/config.yaml`` when no file is there
(an existing file is never replaced). It is commented and valid as written: with the factory model the install
scripts put in ``/opt/edge-agent/models`` and the synthetic demo camera, a freshly installed box starts,
detects, and spools for a broker it cannot reach yet. The operator then names the broker, the box and the
cameras; every secret stays out of the file (``!credential NAME``, docs/OPERATIONS.md §2).

``examples/config.yaml`` is the reference with every section; this one is what a box runs first.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from typing import Any

FACTORY_MODEL = "/opt/edge-agent/models/demo-int8.onnx"

TEMPLATE = """\
# edge-agent configuration, written by `edge-agent config example` at install time (never over an existing file).
# Every key is described in docs/DAEMON.md; examples/config.yaml shows every section.
#
#   check an edit:  sudo /opt/edge-agent/venv/bin/edge-agent run --check --config /etc/edge-agent/config.yaml
#   apply it:       sudo systemctl reload edge-agent     (cameras, rules, thresholds, log level)
#                   sudo systemctl restart edge-agent    (mqtt, model, spool, ota, console)
#   watch it:       journalctl -u edge-agent -f ; /opt/edge-agent/venv/bin/edge-agent status
#
# Secrets never go in this file. Put each in /etc/edge-agent/credentials/NAME (root, mode 0600); the unit hands
# it to the agent as a systemd credential, and the file names it: `password_file: mqtt-password` (a relative
# path), or `!credential NAME` anywhere a value is expected. The unit loads mqtt-password and mqtt-client.key;
# for any other name add `LoadCredential=NAME:/etc/edge-agent/credentials/NAME` with `systemctl edit edge-agent`.
# A credential the file names but that is missing or empty stops the agent with that reason in the journal.

mqtt:
  # the site broker (deploy/mosquitto), name or address; port 8883 with TLS (below), 1883 plain
  host: {host}
  port: {port}
  # topic levels edge/<site>/<device>/...; the device id is also the MQTT client id and the certificate's CN
  site: {site}
  device: {device}
  # groups: [line3]                  # model pushes to edge/<site>/groups/line3/models apply here too
  # username: box-017                # with a password (not with a client certificate):
  # password_file: mqtt-password     #   /etc/edge-agent/credentials/mqtt-password
  # tls:
  #   ca_file: /etc/edge-agent/tls/ca.pem
  #   cert_file: /etc/edge-agent/tls/device.pem
  #   key_file: mqtt-client.key      # /etc/edge-agent/credentials/mqtt-client.key

model:
  # the factory model; an installed OTA release takes precedence
  path: {model}
  backend:
    type: onnxruntime                # Jetson: {{type: tensorrt, precision: int8}} (docs/TENSORRT.md)
    providers: [CPUExecutionProvider]
    intra_op_threads: 1              # 2-core boxes: 1 leaves a core to cameras and rules; 0 = all cores
  conf_threshold: 0.25

cameras:
  # A synthetic conveyor scene, so that a fresh box shows detections before a camera is wired. Replace it:
  # - name: press-1
  #   fps_limit: 10
  #   source: {{type: rtsp, url: !credential press-1-sub-url, main_url: !credential press-1-url}}
  #   # url: the substream the model sees; main_url: full resolution, decoded only for snapshots and samples
  #   rules:
  #     alerts: [{{name: cracked-washer, classes: [cracked_washer], min_confidence: 0.6}}]
  # - name: line-usb
  #   source: {{type: usb, device: /dev/video0, width: 1280, height: 720, fps: 30}}
  - name: demo
    fps_limit: 5
    source: {{type: synthetic, domain: factory, seed: 1, width: 1280, height: 720, fps: 5, prerender: 8}}

spool:
  path: /var/lib/edge-agent/spool.sqlite3
  max_bytes: 536870912               # 512 MiB; alerts outrank samples; every eviction counted

ota:
  state_dir: /var/lib/edge-agent/ota
  # The release keys' pinned roots (docs/OPERATIONS.md §4); until they are there every update is refused.
  trusted_root: /etc/edge-agent/trust/root.json
  offline_root: /etc/edge-agent/trust/offline-root.json   # USB bundles
  repository_url: null               # or https://updates.example.com/repo
  channel: stable

logging:
  level: info
  format: json                       # journald keeps one JSON object per line

daemon:
  state_dir: /var/lib/edge-agent     # status.json (read by `edge-agent status`)
"""


def _yaml_scalar(value: str) -> str:
    """``value`` as a plain YAML scalar when that is safe, else double-quoted."""
    if re.fullmatch(r"[A-Za-z0-9/][A-Za-z0-9/._-]*", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _topic_segment(value: str) -> str:
    """A host name made into a valid device id (one topic level: no '/', '+', '#', spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-.")
    return cleaned or "box"


def render(
    device: str = "", site: str = "plant1", host: str = "localhost", port: int = 1883, model: str = FACTORY_MODEL
) -> str:
    """The example with its values filled in (``device`` defaults to this machine's host name)."""
    return TEMPLATE.format(
        device=_yaml_scalar(_topic_segment(device or socket.gethostname())),
        site=_yaml_scalar(_topic_segment(site)),
        host=_yaml_scalar(host),
        port=int(port),
        model=_yaml_scalar(model),
    )


def add_config_parser(subparsers: Any) -> Any:
    """``edge-agent config example [--device ID] [--site ID] [--broker HOST[:PORT]] [--model PATH]``."""
    parser = subparsers.add_parser("config", help="Configuration helpers (a commented example to start from).")
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    example = sub.add_parser("example", help="Print a commented, valid configuration for a fresh box.")
    example.add_argument("--device", default="", help="Device id (default: this machine's host name).")
    example.add_argument("--site", default="plant1", help="Site id (default: plant1).")
    example.add_argument(
        "--broker", default="localhost:1883", help="Site broker HOST[:PORT] (default: localhost:1883)."
    )
    example.add_argument("--model", default=FACTORY_MODEL, help=f"Factory model (default: {FACTORY_MODEL}).")

    def handler(args: argparse.Namespace) -> int:
        host, _, port = str(args.broker).rpartition(":") if ":" in args.broker else (args.broker, "", "1883")
        if not port.isdigit() or not host:
            print(f"error: --broker {args.broker!r}: expected HOST[:PORT]", file=sys.stderr)
            return 2
        sys.stdout.write(render(args.device, args.site, host, int(port), args.model))
        return 0

    parser.set_defaults(handler=handler)
    return parser


__all__ = ["FACTORY_MODEL", "TEMPLATE", "add_config_parser", "render"]
