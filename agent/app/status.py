"""``edge-agent status``: what a person at the box needs, from the status file the daemon writes.

The daemon writes ``<state_dir>/status.json`` atomically (temporary file in the same directory, then
``os.replace``) every ``daemon.status_interval_s``; this command reads it, adds the OTA installer's status
when OTA is configured, and prints a summary (or ``--json``). It never talks to the running daemon, so it
works while the daemon is hung, and says how old the file is.

Exit codes (for scripts and monitoring; each problem is also listed under ``problems:``)::

    0  running and healthy
    1  running but degraded: MQTT disconnected beyond the grace period, a camera reconnecting / stalled /
       in error, or a problem the daemon reports (spool writes failing, a task that failed)
    2  no status to read (never started, unreadable file) or an invalid configuration
    3  not running: the pid in the status file is gone, the daemon says it stopped, or the file is stale
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, TextIO, Tuple

STATUS_FILE = "status.json"
EXIT_HEALTHY, EXIT_DEGRADED, EXIT_NO_STATUS, EXIT_NOT_RUNNING = 0, 1, 2, 3
STALE_AFTER_S = 60.0
MQTT_GRACE_S = 60.0
CAMERA_DOWN_STATES = ("reconnecting", "stalled", "error")


def write_status(path: Path, document: Dict[str, Any]) -> None:
    """Write ``document`` as JSON to ``path`` atomically (readers never see a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(document, indent=1, sort_keys=True, default=str).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_status(path: Path) -> Dict[str, Any]:
    """The daemon's status document. Raises ``OSError`` / ``ValueError`` when missing or unreadable."""
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: not a JSON object")
    return document


def _age_s(document: Dict[str, Any], now: Optional[float] = None) -> Optional[float]:
    try:
        updated = datetime.fromisoformat(str(document["updated"]))
    except (KeyError, ValueError):
        return None
    return max(0.0, (time.time() if now is None else now) - updated.timestamp())


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f} ms"


def pid_alive(pid: Any) -> Optional[bool]:
    """Whether process ``pid`` exists (``None``: no usable pid in the document)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else (the daemon's user)
        return True
    return True


def assess(
    document: Dict[str, Any],
    alive: Optional[bool],
    now: Optional[float] = None,
    mqtt_grace_s: float = MQTT_GRACE_S,
    stale_after_s: float = STALE_AFTER_S,
) -> Tuple[int, List[str]]:
    """The exit code and the problems a person should see (pure; ``alive`` from :func:`pid_alive`)."""
    now = time.time() if now is None else now
    problems: List[str] = []
    age = _age_s(document, now)
    if alive is False:
        problems.append(f"the daemon is not running (pid {document.get('pid')} is gone)")
    elif document.get("state") != "running":
        problems.append(f"the daemon is {document.get('state', 'in an unknown state')}, not running")
    elif age is not None and age > stale_after_s:
        problems.append(f"the status file is {age:.0f} s old: the daemon is hung or stopped")
    if problems:
        return EXIT_NOT_RUNNING, problems
    mqtt = document.get("mqtt") or {}
    if mqtt and not mqtt.get("connected"):
        since = _parse_time(mqtt.get("down_since"))
        down_s = None if since is None else max(0.0, now - since)
        if down_s is None or down_s > mqtt_grace_s:
            problems.append(
                "MQTT disconnected"
                + ("" if down_s is None else f" for {down_s:.0f} s")
                + (f" (last CONNACK: {mqtt['last_connack']})" if mqtt.get("last_connack") else "")
            )
    for name, cam in sorted((document.get("cameras") or {}).items()):
        state = str(cam.get("state", ""))
        if state in CAMERA_DOWN_STATES:
            problems.append(f"camera {name} is {state}" + (f": {cam['reason']}" if cam.get("reason") else ""))
    problems.extend(str(p) for p in document.get("problems") or [])
    return (EXIT_DEGRADED if problems else EXIT_HEALTHY), problems


def _parse_time(value: Any) -> Optional[float]:
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else None
    except ValueError:
        return None


def render_summary(
    document: Dict[str, Any], ota: Optional[Dict[str, Any]] = None, problems: Optional[List[str]] = None
) -> str:
    """A readable multi-line summary (pure)."""
    lines: List[str] = []
    age = _age_s(document)
    stale = age is not None and age > 60
    lines.append(
        f"edge-agent {document.get('agent_version', '?')}"
        f"  device {document.get('site', '?')}/{document.get('device', '?')}"
        f"  state {document.get('state', '?')}  pid {document.get('pid', '?')}"
    )
    if age is not None:
        lines.append(f"status written {age:.0f} s ago" + ("  (STALE: is the daemon running?)" if stale else ""))
    model = document.get("model") or {}
    if model:
        lines.append(f"model    {model.get('name')} {model.get('version')}  sha256 {str(model.get('sha256', ''))[:12]}")
    inference = document.get("inference") or {}
    if inference:
        lines.append(
            f"inference {inference.get('aggregate_fps', 0)} fps  frames {inference.get('frames', 0)}"
            f"  errors {inference.get('inference_errors', 0)}"
            f"  last batch: pre {_fmt_ms(inference.get('preprocess_ms'))}"
            f" inf {_fmt_ms(inference.get('inference_ms'))} post {_fmt_ms(inference.get('postprocess_ms'))}"
        )
    lines.append("cameras:")
    for name, cam in sorted((document.get("cameras") or {}).items()):
        lines.append(
            f"  {name:<20} {cam.get('state', '?'):<12} {cam.get('fps', 0):>6} fps  processed {cam.get('processed', 0)}"
            f"  dropped {cam.get('dropped', 0)}"
            f"  reconnects {cam.get('reconnects', 0)}/{cam.get('reconnect_attempts', cam.get('reconnects', 0))} tried"
            f"  p50 {_fmt_ms(cam.get('latency_p50_ms'))} p99 {_fmt_ms(cam.get('latency_p99_ms'))}"
            + (f"  ({cam['reason']})" if cam.get("reason") else "")
        )
        decode = cam.get("decode") or {}
        if decode:
            lines.append(
                f"  {'':<20} {cam.get('source', '')}  {cam.get('width', 0)}x{cam.get('height', 0)}"
                f" {decode.get('codec', '')}  decoder {decode.get('decoder', '')}"
                f"  decoded {decode.get('decoded', 0)} dropped as undecodable {decode.get('decode_errors', 0)}"
                f"  {_fmt_ms(decode.get('decode_ms'))} CPU/frame"
            )
        main = cam.get("main") or {}
        if main:
            lines.append(
                f"  {'':<20} main stream {main.get('address', '')} {main.get('state', '?')}"
                f"  {main.get('width', 0)}x{main.get('height', 0)}  stills {main.get('stills', 0)}"
                f" ({_fmt_ms(main.get('still_ms'))} each)"
                + ("" if main.get("state") == "streaming" else f"  ({main.get('reason', '')})")
            )
    mqtt = document.get("mqtt") or {}
    if mqtt:
        lines.append(
            f"mqtt     {'connected' if mqtt.get('connected') else 'DISCONNECTED'}  protocol {mqtt.get('protocol')}"
            f"  published {mqtt.get('published', 0)} acked {mqtt.get('acked', 0)}"
            f" quarantined {mqtt.get('quarantined', 0)}"
        )
    spool = document.get("spool") or {}
    if spool:
        counters = spool.get("counters") or {}
        evicted = {k.split(".", 1)[1]: v for k, v in counters.items() if k.startswith("evicted.")}
        lines.append(
            f"spool    {spool.get('items', 0)} items, {spool.get('bytes', 0)} / {spool.get('max_bytes', 0)} bytes"
            + (f"  evicted {evicted}" if evicted else "")
        )
    output = document.get("output") or {}
    if output:
        lines.append(
            f"output   alerts {output.get('alerts_spooled', 0)}  samples {output.get('samples_spooled', 0)}"
            f"  disk {'ok' if output.get('disk_ok', True) else 'FAILING'}"
        )
    if ota:
        active = ota.get("active") or {}
        trial = ota.get("probation")
        lines.append(
            f"ota      active {active.get('name', '-')} {active.get('version', '')}"
            + (f"  IN PROBATION since {trial.get('since')}" if trial else "")
            + f"  floor {ota.get('floor', '-')}"
        )
    if problems is None:
        problems = list(document.get("problems") or [])
    if problems:
        lines.append("problems:")
        lines.extend(f"  - {p}" for p in problems)
    return "\n".join(lines)


def status_main(
    config_path: Path, as_json: bool = False, out: Optional[TextIO] = None, mqtt_grace_s: float = MQTT_GRACE_S
) -> int:
    """The command; exit codes in the module docstring."""
    from agent.config import ConfigError, load_config

    out = out or sys.stdout

    try:
        config = load_config(config_path, credentials="optional")  # reads no secret
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_STATUS
    path = config.daemon.state_dir / STATUS_FILE
    try:
        document = read_status(path)
    except (OSError, ValueError) as exc:
        print(f"no status at {path}: {exc} (has the daemon started?)", file=sys.stderr)
        return EXIT_NO_STATUS
    ota: Optional[Dict[str, Any]] = None
    if config.ota is not None:
        try:
            from agent.ota.installer import Installer

            ota = Installer(config.ota).status()
        except Exception as exc:
            ota = {"error": str(exc)}
    code, problems = assess(document, pid_alive(document.get("pid")), mqtt_grace_s=mqtt_grace_s)
    if as_json:
        verdict = {"exit_code": code, "problems": problems}
        json.dump({"daemon": document, "ota": ota, "verdict": verdict}, out, indent=1, sort_keys=True, default=str)
        out.write("\n")
    else:
        out.write(render_summary(document, ota, problems) + "\n")
    return code


def add_status_parser(subparsers: Any) -> Any:
    """``edge-agent status [--config PATH] [--json]`` (for agent/cli.py)."""
    from agent.config import add_config_argument

    parser = subparsers.add_parser("status", help="Show the running agent's status (reads its status file).")
    add_config_argument(parser, " (for the state directory)")
    parser.add_argument("--json", action="store_true", help="Print the raw status document as JSON.")
    parser.add_argument(
        "--mqtt-grace-s",
        type=float,
        default=MQTT_GRACE_S,
        help=f"MQTT may be down this long before it is a problem (default {MQTT_GRACE_S:.0f} s).",
    )
    parser.set_defaults(handler=lambda args: status_main(args.config, args.json, mqtt_grace_s=args.mqtt_grace_s))
    return parser
