"""Real RTSP cameras through the real daemon, next to synthetic ones, in one run (issue 30, "decode inside the
budget").

    PYTHONPATH=. .venv/bin/python bench/bench_rtsp_cameras.py [--seconds 60] [--write]

Everything is the product as it runs: ``edge-agent run`` in a process of its own (the demo INT8 model, ONNX
Runtime with one intra-op thread as the example configuration sets for a 2-core box), a real mosquitto, a real
RTSP server (GStreamer's gst-rtsp-server, tests/rtsp/, in its own process) playing x264 loops of the synthetic
renderer, each camera a different scene, each frame carrying its index as a barcode. Scenarios, one after the
other, each ``--seconds`` after a warm-up:

1. ``synthetic``: four synthetic 1080p cameras at 15 fps replaying prerendered frames (no decode: the figure
   docs/BENCHMARKS.md had before wave 3);
2. ``rtsp 1080p``: four RTSP H.264 1080p15 cameras (main profile, GOP 1 s, 4 Mbit/s), decoded on the CPU;
3. ``rtsp substreams``: eight cameras whose detect stream is a 640x360 H.264 substream at 15 fps and whose
   1080p main stream is received for stills (alert snapshots) without being decoded.

Per scenario: frames the model processed per second against what the cameras sent; frames lost anywhere
(dropped in the camera's slot, refused as stale, dropped by the decoder, never delivered); the decode CPU share
(decode + colour conversion CPU seconds over the window, against the box's two cores); the daemon's CPU by
thread; and frame-to-alert latency: an alert rule fires about once a second per camera, the bench reads the
barcode in the alert's snapshot (the main stream's where there is one), the server's schedule says when that
frame left the "camera", and the alert's arrival at the broker (a subscriber on loopback) ends it. The engine
limit (``Detector.detect`` back to back on 1080p frames, in this process while nothing else runs) is measured
before the scenarios.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import yaml

from agent.core.decode import DecodeParams
from agent.engine import Detector, OnnxRuntimeConfig
from agent.protocol.framing import decode_frame
from agent.synthetic.render import render_stream_frames
from bench.common import machine, write_section
from tests.agent.broker import MosquittoBroker
from tests.rtsp.clips import ClipSpec, ensure_clip, read_barcode
from tests.rtsp.server import RtspServer

REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
_CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_P95_MS = 150.0


# ------------------------------------------------------------------------------------------------ alerts


class AlertCollector:
    """Alerts and snapshots as they reach the broker (receive times on this clock)."""

    def __init__(self, port: int) -> None:
        self.alerts: List[Tuple[float, Dict[str, Any]]] = []
        self.snapshots: Dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-collector")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, r, p: (
            c.subscribe("edge/+/+/alerts", qos=1),
            c.subscribe("edge/+/+/snapshots", qos=1),
        )
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        now = time.time()
        payload = bytes(message.payload)
        with self._lock:
            if message.topic.endswith("/alerts"):
                self.alerts.append((now, json.loads(payload)))
            else:
                header, jpeg = decode_frame(message.topic, payload, 1 << 26)
                self.snapshots[json.loads(header)["id"]] = jpeg

    def take(self) -> Tuple[List[Tuple[float, Dict[str, Any]]], Dict[str, bytes]]:
        with self._lock:
            alerts, snapshots = self.alerts, self.snapshots
            self.alerts, self.snapshots = [], {}
        return alerts, snapshots

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# ---------------------------------------------------------------------------------------------- process


def thread_cpu(pid: int) -> Dict[str, float]:
    """CPU seconds by thread name (threads of one name summed) of process ``pid``."""
    out: Dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[comm] = out.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def thread_group(name: str, cameras: List[str]) -> str:
    """The group of a thread by its kernel name (agent.threads names its workers there; 15 bytes at most)."""
    if name == "inference":
        return "inference"
    if name == "rules":
        return "rules"
    if name == "output-writer":
        return "output writer (JPEG, spool)"
    for camera in cameras:
        if name == f"camera-{camera}-main"[:15]:
            return "main-stream receivers"
        if name == f"camera-{camera}-watchdog"[:15]:
            return "camera watchdogs"
        if name == f"camera-{camera}"[:15]:
            return "camera readers (colour conversion)"
    if name in ("mqtt-link", "status", "metrics-http", "native-stderr") or name.startswith(("python", "ota")):
        return "main loop, MQTT, status"
    return "GStreamer streaming threads (RTP, depayload, decode)"


def status_doc(state_dir: Path) -> Dict[str, Any]:
    try:
        return dict(json.loads((state_dir / "status.json").read_text()))
    except (OSError, ValueError):
        return {}


def wait_streaming(state_dir: Path, names: List[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cams = status_doc(state_dir).get("cameras", {})
        if all(cams.get(n, {}).get("state") == "streaming" for n in names):
            return
        time.sleep(0.2)
    raise RuntimeError(f"cameras not streaming after {timeout} s: {status_doc(state_dir).get('cameras')}")


# --------------------------------------------------------------------------------------------- scenarios


def camera(name: str, source: Dict[str, Any], cooldown_s: float = 1.0) -> Dict[str, Any]:
    return {
        "name": name,
        "source": source,
        "rules": {
            # cooldown 1 s: about one alert a second per camera, so frame-to-alert has a few hundred samples
            "alerts": [
                {"name": "any-part", "min_confidence": 0.3, "min_consecutive_frames": 1, "cooldown_s": cooldown_s}
            ],
            "triage": {
                "random": {"probability": 0.0},
                "uncertainty": {"enabled": False},
                "inconsistency": {"enabled": False},
            },
        },
    }


def daemon_config(tmp: Path, port: int, model: Path, cameras: List[Dict[str, Any]]) -> Path:
    data = {
        "mqtt": {"host": "127.0.0.1", "port": port, "site": "bench", "device": "box1"},
        "model": {"path": str(model), "backend": {"type": "onnxruntime", "intra_op_threads": 1}},
        "spool": {"path": str(tmp / "state" / "spool.sqlite3")},
        "daemon": {"state_dir": str(tmp / "state"), "status_interval_s": 1.0},
        "logging": {"level": "warning"},
        "cameras": cameras,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_scenario(
    name: str,
    cameras: List[Dict[str, Any]],
    offered_fps: float,
    schedule: Dict[str, Tuple[RtspServer, str]],
    model: Path,
    broker: MosquittoBroker,
    server: Optional[RtspServer],
    seconds: float,
    warmup_s: float,
) -> Dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = daemon_config(tmp, broker.port, model, cameras)
        state_dir = tmp / "state"
        collector = AlertCollector(broker.port)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(tmp / "daemon.log", "wb") as log:  # the child keeps its own descriptor
            daemon = subprocess.Popen(
                [sys.executable, "-m", "agent.daemon", "--config", str(config)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
            )
        names = [c["name"] for c in cameras]
        try:
            wait_streaming(state_dir, names, 120)
            time.sleep(warmup_s)
            collector.take()
            before, t0 = status_doc(state_dir), time.monotonic()
            cpu0, threads0 = process_cpu(daemon.pid), thread_cpu(daemon.pid)
            server_cpu0 = process_cpu(server.process.pid) if server and server.process else 0.0
            time.sleep(seconds)
            after, t1 = status_doc(state_dir), time.monotonic()
            cpu1, threads1 = process_cpu(daemon.pid), thread_cpu(daemon.pid)
            server_cpu1 = process_cpu(server.process.pid) if server and server.process else 0.0
            time.sleep(1.5)  # alerts of the window still on their way
            alerts, snapshots = collector.take()
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)
            collector.close()
    window = t1 - t0
    per_camera = {}
    lost_total = sent_total = processed_total = 0
    decode_cpu = 0.0
    for cam in names:
        b, a = before["cameras"][cam], after["cameras"][cam]
        processed = a["processed"] - b["processed"]
        delivered = a["frames"] - b["frames"]
        dropped = a["dropped"] - b["dropped"]
        stale = a.get("stale", 0) - b.get("stale", 0)
        decode_b, decode_a = b.get("decode") or {}, a.get("decode") or {}
        errors = decode_a.get("decode_errors", 0) - decode_b.get("decode_errors", 0)
        decoded = decode_a.get("decoded", 0) - decode_b.get("decoded", 0)
        decode_cpu += decode_a.get("decode_cpu_s", 0.0) - decode_b.get("decode_cpu_s", 0.0)
        sent = int(round(offered_fps * window))
        # frames that reached the box and were not processed: replaced in the slot, refused as stale, dropped by
        # the decoder, decoded but never delivered (GStreamer's sink keeps only the newest)
        lost = dropped + stale + errors + (max(0, decoded - delivered) if decode_a else 0)
        per_camera[cam] = {
            "fps": processed / window,
            "sent": sent,
            "processed": processed,
            "delivered": delivered,
            "decoded": decoded if decode_a else None,
            "dropped": dropped,
            "stale": stale,
            "decode_errors": errors,
            "lost": lost,
        }
        lost_total += lost
        sent_total += sent
        processed_total += processed
    latencies = []
    for received, alert in alerts:
        cam = alert["camera"]
        snapshot = (alert.get("snapshot") or {}).get("id")
        if cam in schedule and snapshot in snapshots:
            image = cv2.imdecode(np.frombuffer(snapshots[snapshot], np.uint8), cv2.IMREAD_COLOR)
            index = read_barcode(image) if image is not None else None
            if index is not None:
                rtsp, mount = schedule[cam]
                latencies.append((received - rtsp.due_time(mount, index, received)) * 1000.0)
        elif cam not in schedule:  # synthetic: stamped when the frame entered the camera's slot
            frame_ts = alert["frame_ts"].replace("Z", "+00:00")
            from datetime import datetime

            latencies.append((received - datetime.fromisoformat(frame_ts).timestamp()) * 1000.0)
    latencies.sort()
    stills = sum(((after["cameras"][c].get("main") or {}).get("stills") or 0) for c in names) - sum(
        ((before["cameras"][c].get("main") or {}).get("stills") or 0) for c in names
    )
    still_ms = [m["still_ms"] for m in ((after["cameras"][c].get("main") or {}) for c in names) if m.get("still_ms")]
    groups: Dict[str, float] = {}
    for thread, cpu in threads1.items():
        group = thread_group(thread, names)
        groups[group] = groups.get(group, 0.0) + cpu - threads0.get(thread, 0.0)
    return {
        "scenario": name,
        "cameras": len(names),
        "seconds": window,
        "offered_fps": offered_fps * len(names),
        "aggregate_fps": processed_total / window,
        "sent": sent_total,
        "processed": processed_total,
        "lost": lost_total,
        "per_camera": per_camera,
        "decode_cpu_share": decode_cpu / window / CORES,
        "daemon_cpu_share": (cpu1 - cpu0) / window / CORES,
        "server_cpu_share": (server_cpu1 - server_cpu0) / window / CORES,
        "cpu_by_group_share": {k: v / window / CORES for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "alerts": len(alerts),
        "stills": stills,
        "still_ms_mean": statistics.mean(still_ms) if still_ms else None,
        "latency_samples": len(latencies),
        "latency_p50_ms": statistics.median(latencies) if latencies else None,
        "latency_p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None,
    }


def engine_limit(model: Path, seconds: float) -> Dict[str, float]:
    detector = Detector.open(model, OnnxRuntimeConfig(intra_op_threads=1))
    frames = [f.image for f in render_stream_frames("factory", 3, range(4), (1080, 1920))]
    params = DecodeParams()
    detector.detect([frames[0]], params)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        detector.detect([frames[n % len(frames)]], params)
        n += 1
    fps = n / (time.perf_counter() - t0)
    detector.close()
    return {"fps": fps, "ms_per_frame": 1000.0 / fps}


# ------------------------------------------------------------------------------------------------ report


def render(report: Dict[str, Any]) -> str:
    lines = [
        "## Real RTSP cameras through the daemon (issue 30)",
        "",
        f"Machine: {report['machine']}. Model `{report['model']}`, ONNX Runtime one intra-op thread; the daemon as "
        "`edge-agent run` in its own process, a real mosquitto, a real RTSP server (gst-rtsp-server, its own "
        f"process) on loopback over TCP; {report['seconds']:.0f} s per scenario after {report['warmup_s']:.0f} s of "
        "warm-up. Engine limit (`Detector.detect` back to back on 1080p frames, nothing else running): "
        f"**{report['engine']['fps']:.1f} fps** ({report['engine']['ms_per_frame']:.1f} ms a frame). Reproduce: "
        "`PYTHONPATH=. .venv/bin/python bench/bench_rtsp_cameras.py --write`.",
        "",
        "| scenario | cameras | sent fps | processed fps | frames lost | decode CPU (of 2 cores) | daemon CPU | "
        "RTSP server CPU | alerts | frame→alert p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["scenarios"]:
        p50 = "-" if s["latency_p50_ms"] is None else f"{s['latency_p50_ms']:.0f} ms"
        p95 = "-" if s["latency_p95_ms"] is None else f"**{s['latency_p95_ms']:.0f} ms**"
        lines.append(
            f"| {s['scenario']} | {s['cameras']} | {s['offered_fps']:.0f} | **{s['aggregate_fps']:.1f}** | "
            f"{s['lost']} of {s['sent']} | {100 * s['decode_cpu_share']:.1f} % | {100 * s['daemon_cpu_share']:.0f} % | "
            f"{100 * s['server_cpu_share']:.1f} % | {s['alerts']} | {p50} | {p95} |"
        )
    stills = [s for s in report["scenarios"] if s.get("stills")]
    if stills:
        lines += [
            "",
            "Main-stream stills (decoded from the last keyframe up to the alerting frame, in the output writer, for "
            "each alert snapshot): "
            + "; ".join(f"{s['scenario']}: {s['stills']} stills, {s['still_ms_mean']:.0f} ms each" for s in stills)
            + ".",
        ]
    lines += ["", "Where the daemon's CPU goes (share of the box's two cores, by thread):", ""]
    lines += ["| scenario | " + " | ".join(["threads"]) + " |", "|---|---|"]
    for s in report["scenarios"]:
        groups = ", ".join(f"{k} {100 * v:.1f} %" for k, v in s["cpu_by_group_share"].items() if v >= 0.001)
        lines.append(f"| {s['scenario']} | {groups} |")
    lines += [
        "",
        "Frames lost: frames that reached the box in the window and were not processed, from the daemon's own "
        "counters: replaced in the camera's slot before the model took them, refused as older than the stall "
        "limit, dropped by the decoder, decoded but not delivered (JSON below; a loopback TCP stream loses none "
        "on the way). Frame-to-alert: from the moment the RTSP "
        "server sent the frame (the barcode in the alert's snapshot and the server's schedule) to the alert's "
        "arrival at the broker; for the synthetic cameras, from the moment the frame entered the camera's slot.",
        "",
        "<details><summary>per camera</summary>",
        "",
        "```json",
        json.dumps({s["scenario"]: s["per_camera"] for s in report["scenarios"]}, indent=1),
        "```",
        "</details>",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "demo" / "demo-int8.onnx")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup-s", type=float, default=10.0)
    parser.add_argument("--scenarios", default="synthetic,rtsp-1080p,rtsp-substreams")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    wanted = args.scenarios.split(",")
    print("engine limit ...", flush=True)
    engine = engine_limit(args.model, 8.0)
    print(engine, flush=True)
    main_clips = [ensure_clip(ClipSpec("h264", 1920, 1080, 15, seed=11 + i)) for i in range(8)]
    sub_clips = [ensure_clip(ClipSpec("h264", 640, 360, 15, seed=11 + i)) for i in range(8)]
    scenarios = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = MosquittoBroker(tmp / "broker")
        broker.start()

        def run(name: str, cams: List[Dict[str, Any]], schedule: Any, server: Optional[RtspServer]) -> None:
            scenarios.append(
                run_scenario(name, cams, 15.0, schedule, args.model, broker, server, args.seconds, args.warmup_s)
            )
            print(json.dumps(scenarios[-1]), flush=True)

        try:
            if "synthetic" in wanted:
                cams = [
                    camera(
                        f"syn{i}",
                        {"type": "synthetic", "seed": 11 + i, "width": 1920, "height": 1080, "fps": 15, "prerender": 8},
                    )
                    for i in range(4)
                ]
                run("synthetic 1080p", cams, {}, None)
            if "rtsp-1080p" in wanted:
                mounts = {f"/cam{i}": main_clips[i] for i in range(4)}
                with RtspServer(tmp / "rtsp-a", mounts) as server:
                    cams = [camera(f"cam{i}", {"type": "rtsp", "url": server.url(f"/cam{i}")}) for i in range(4)]
                    schedule = {f"cam{i}": (server, f"/cam{i}") for i in range(4)}
                    run("RTSP H.264 1080p15", cams, schedule, server)
            if "rtsp-substreams" in wanted:
                mounts = {
                    **{f"/cam{i}/sub": sub_clips[i] for i in range(8)},
                    **{f"/cam{i}/main": main_clips[i] for i in range(8)},
                }
                with RtspServer(tmp / "rtsp-b", mounts) as server:
                    # the snapshot is the main stream's still: its barcode and the main mount's schedule
                    schedule = {f"cam{i}": (server, f"/cam{i}/main") for i in range(8)}
                    # alerts at a plant's pace (a cooldown of 30 s), then at the stress pace of the other
                    # scenarios (every second: each alert decodes a main-stream still)
                    for cooldown, label in ((30.0, "alerts every 30 s"), (1.0, "alerts every second")):
                        cams = [
                            camera(
                                f"cam{i}",
                                {
                                    "type": "rtsp",
                                    "url": server.url(f"/cam{i}/sub"),
                                    "main_url": server.url(f"/cam{i}/main"),
                                },
                                cooldown,
                            )
                            for i in range(8)
                        ]
                        run(f"RTSP 640x360 substreams + 1080p main, {label}", cams, schedule, server)
        finally:
            broker.close()
    report = {
        "machine": machine(),
        "model": str(args.model.relative_to(REPO)) if args.model.is_relative_to(REPO) else str(args.model),
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "engine": engine,
        "scenarios": scenarios,
    }
    text = render(report)
    print(text)
    out = REPO / "bench" / "results" / "rtsp_cameras.json"
    out.write_text(json.dumps(report, indent=1))
    if args.write:
        write_section("rtsp-cameras", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
