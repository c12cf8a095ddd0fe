"""RTSP readers side by side on the same streams from a real RTSP server (issue 30, "the reader choice").

    PYTHONPATH=. .venv/bin/python bench/bench_rtsp_readers.py [--seconds 10] [--write]

The server is GStreamer's gst-rtsp-server (tests/rtsp/) playing x264 / x265 loops of the synthetic renderer with
a barcode per frame. Each reader reads each stream for ``--seconds`` after a 1 s warm-up, alone, in a process of
its own (bench/rtsp_reader_probe.py), one after the other, so the CPU figures are its own:

- ``opencv``: OpenCV's FFmpeg backend (the pip wheel), the agent's RTSP reader before wave 3;
- ``pyav``: PyAV (FFmpeg from PyPI), one slice-threaded decoder thread, a small probe;
- ``opencv-gstreamer``: a GStreamer pipeline inside OpenCV (Debian's python3-opencv, as on a Jetson);
- ``agent``: the agent's reader now (agent/sources/gst.py: the same GStreamer pipeline through PyGObject);
- ``agent-main``: what a camera's main stream costs the agent: received, never decoded (stills aside).

Per reader and stream: time from open to the first frame, CPU milliseconds per frame of the whole process
(every decoder thread counts), frames with an unreadable barcode (grey or smeared), frames missed, and the
latency from the moment the server sent a frame to the moment the reader handed it over (p50 / p95).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_section
from tests.rtsp.clips import ClipSpec, ensure_clip
from tests.rtsp.server import SYSTEM_PYTHON, RtspServer

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "bench" / "rtsp_reader_probe.py"
STREAMS = {
    "H.264 1080p15": ClipSpec("h264", 1920, 1080, 15),
    "H.265 1080p15": ClipSpec("h265", 1920, 1080, 15),
    "H.264 1080p30": ClipSpec("h264", 1920, 1080, 30),
    "H.264 640x360 15": ClipSpec("h264", 640, 360, 15),
}
READERS = ("opencv", "pyav", "opencv-gstreamer", "agent", "agent-main")


def run_probe(reader: str, server: RtspServer, mount: str, spec: ClipSpec, seconds: float) -> Dict[str, Any]:
    python = SYSTEM_PYTHON if reader == "opencv-gstreamer" else sys.executable
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [
            python,
            str(PROBE),
            "--reader",
            reader,
            "--url",
            server.url(mount),
            "--codec",
            spec.codec,
            "--epoch",
            str(server.epoch),
            "--fps",
            str(spec.fps),
            "--frames",
            str(spec.frames),
            "--seconds",
            str(seconds),
            "--out",
            out.name,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, cwd=REPO, check=False)
        try:
            return dict(json.loads(Path(out.name).read_text()))
        except ValueError:
            return {"reader": reader, "error": (result.stderr or result.stdout)[-300:]}


def render(rows: List[Dict[str, Any]], seconds: float) -> str:
    lines = [
        "## RTSP readers side by side (issue 30)",
        "",
        f"Machine: {machine()}. Reproduce: `PYTHONPATH=. .venv/bin/python bench/bench_rtsp_readers.py --write` "
        f"(each reader alone, {seconds:.0f} s per stream after 1 s of warm-up, a real gst-rtsp-server on loopback "
        "over TCP).",
        "",
        "| stream | reader | open → 1st frame s | CPU ms / frame | share of a core | unreadable | missed | "
        "latency p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['stream']} | {row['reader']} | error: {row['error'][:80]} | | | | | | |")
            continue
        if row["reader"] == "agent-main":
            lines.append(
                f"| {row['stream']} | agent, main stream (received, not decoded) | {row['open_to_first_frame_s']} | "
                f"{row['cpu_ms_per_frame']} | {row['cpu_share_of_one_core']} | – | – | – | – |"
            )
            continue
        lines.append(
            f"| {row['stream']} | {row['reader']} | {row['open_to_first_frame_s']} | {row['cpu_ms_per_frame']} | "
            f"{row['cpu_share_of_one_core']} | {row['unreadable']} | {row['missed']} | {row['latency_p50_ms']} | "
            f"{row['latency_p95_ms']} |"
        )
    lines += [
        "",
        "Latency: from the moment the server sent the frame (its barcode and the server's schedule) to the moment "
        "the reader returned it, decoded, as BGR. FFmpeg's RTSP demuxer (OpenCV, PyAV) returns a frame only once "
        "the next one begins (its parser finds the end of an access unit there): one frame interval (67 ms at "
        "15 fps) that GStreamer's depayloader, which ends a frame on the RTP marker bit, does not add; OpenCV "
        "adds frame threading (one more frame per extra thread) and probes 5 MB before its first frame. The "
        "agent reads RTSP through GStreamer (agent/sources/gst.py), which is also how the hardware decoders are "
        "reached: one way for every decoder.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--write", action="store_true", help="write the section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    clips = {name: ensure_clip(spec) for name, spec in STREAMS.items()}
    mounts = {f"/s{i}": clip for i, clip in enumerate(clips.values())}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RtspServer(Path(tmp), mounts) as server:
        for (mount, clip), stream in zip(mounts.items(), clips):
            for reader in READERS:
                row = run_probe(reader, server, mount, clip.spec, args.seconds)
                row["stream"] = stream
                rows.append(row)
                print(json.dumps(row), flush=True)
    text = render(rows, args.seconds)
    print(text)
    if args.write:
        write_section("rtsp-readers", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
