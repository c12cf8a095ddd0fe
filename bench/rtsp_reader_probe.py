"""One RTSP reader reading one stream for a while, in a process of its own (bench/bench_rtsp_readers.py runs it).

    python bench/rtsp_reader_probe.py --reader pyav|opencv|gstreamer --url URL --epoch E --fps F --frames N \
        --seconds S --out result.json [--transport tcp|udp] [--codec h264|h265]

Readers, each delivering BGR ``ndarray`` frames as the engine takes them:

- ``opencv``: ``cv2.VideoCapture(url, CAP_FFMPEG)`` (the pip wheel's FFmpeg), options through
  ``OPENCV_FFMPEG_CAPTURE_OPTIONS``;
- ``pyav``: PyAV's FFmpeg (``av.open``), the decoder on one slice-threaded thread, small probe;
- ``opencv-gstreamer``: ``rtspsrc ! depay ! parse ! avdec_h26x ! videoconvert ! appsink`` through
  ``cv2.VideoCapture(pipeline, CAP_GSTREAMER)`` (Debian's OpenCV, built with GStreamer: run this script with
  Debian's /usr/bin/python3, as a Jetson runs JetPack's OpenCV);
- ``agent``: the agent's own reader (``agent.sources.gst.open_rtsp``: the same GStreamer pipeline through
  PyGObject, with its probes), in the agent's environment;
- ``agent-main``: a camera's main stream as the agent keeps it (``open_rtsp_units``): received and parsed into
  access units, not decoded (no barcode to read: only the CPU figures mean something).

Measured after a warm-up of 1 s: frames delivered, CPU seconds of the whole process (every decoder thread
counts) per frame, frames whose barcode does not read (grey or smeared), gaps in the frame sequence, and the
latency from the moment the server sent a frame (its barcode and the server's schedule) to the moment the
reader handed it over. Needs numpy and cv2 only (plus av for ``pyav``), so Debian's Python can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.rtsp.clips import read_barcode

Reader = Callable[[], Optional[Any]]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_opencv(url: str, transport: str, codec: str) -> Tuple[Reader, Callable[[], None]]:
    import cv2

    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000])
    if not capture.isOpened():
        raise RuntimeError("cv2.VideoCapture did not open")

    def read() -> Optional[Any]:
        ok, image = capture.read()
        return image if ok else None

    return read, capture.release


def open_pyav(url: str, transport: str, codec: str) -> Tuple[Reader, Callable[[], None]]:
    import av

    container = av.open(
        url,
        options={"rtsp_transport": transport, "probesize": "32768", "analyzeduration": "0"},
        timeout=(10.0, 5.0),
    )
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    stream.thread_count = 1
    packets = container.demux(stream)
    pending: List[Any] = []

    def read() -> Optional[Any]:
        while not pending:
            packet = next(packets)
            try:
                pending.extend(packet.decode())
            except av.error.InvalidDataError:
                continue  # a packet before the first keyframe (a mid-GOP join): FFmpeg refuses it, skip it
        return pending.pop(0).to_ndarray(format="bgr24")

    return read, container.close


def gstreamer_pipeline(url: str, transport: str, codec: str) -> str:
    depay, parse, decoder = {
        "h264": ("rtph264depay", "h264parse", "avdec_h264"),
        "h265": ("rtph265depay", "h265parse", "avdec_h265"),
    }[codec]
    return (
        f"rtspsrc location={url} protocols={transport} latency=0 ! {depay} ! {parse} ! "
        f"{decoder} max-threads=1 ! videoconvert ! video/x-raw,format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


def open_gstreamer(url: str, transport: str, codec: str) -> Tuple[Reader, Callable[[], None]]:
    import cv2

    capture = cv2.VideoCapture(gstreamer_pipeline(url, transport, codec), cv2.CAP_GSTREAMER)
    if not capture.isOpened():
        raise RuntimeError("the GStreamer pipeline did not start (is this OpenCV built with GStreamer?)")

    def read() -> Optional[Any]:
        ok, image = capture.read()
        return image if ok else None

    return read, capture.release


def open_agent(url: str, transport: str, codec: str) -> Tuple[Reader, Callable[[], None]]:
    from agent.sources.gst import open_rtsp

    reader = open_rtsp(url, transport=transport, decoder="cpu", open_timeout_s=10.0)
    return reader.read, reader.close


def open_agent_main(url: str, transport: str, codec: str) -> Tuple[Reader, Callable[[], None]]:
    """A camera's main stream as the agent keeps it: access units received, none decoded."""
    from agent.sources.gst import open_rtsp_units

    reader = open_rtsp_units(url, transport=transport, open_timeout_s=10.0)
    return reader.read_unit, reader.close


READERS = {
    "opencv": open_opencv,
    "pyav": open_pyav,
    "opencv-gstreamer": open_gstreamer,
    "agent": open_agent,
    "agent-main": open_agent_main,
}


def due(epoch: float, fps: float, frames: int, index: int, near: float) -> float:
    cycle = round(((near - epoch) * fps - index) / frames)
    return epoch + (cycle * frames + index) / fps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reader", choices=sorted(READERS), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", default="tcp")
    parser.add_argument("--codec", default="h264")
    parser.add_argument("--epoch", type=float, required=True)
    parser.add_argument("--fps", type=float, required=True)
    parser.add_argument("--frames", type=int, required=True, help="frames in the server's loop")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    result: Dict[str, Any] = {"reader": args.reader, "python": sys.version.split()[0]}
    started = time.monotonic()
    try:
        read, close = READERS[args.reader](args.url, args.transport, args.codec)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        Path(args.out).write_text(json.dumps(result))
        return 1
    first: Optional[float] = None
    latencies: List[float] = []
    delivered = unreadable = gaps = 0
    last_index: Optional[int] = None
    cpu0 = wall0 = 0.0
    measuring = False
    try:
        while True:
            image = read()
            now_wall, now = time.time(), time.monotonic()
            if image is None:
                result["error"] = "the stream ended"
                break
            if first is None:
                first = now - started
            if not measuring and now - started - first >= args.warmup_s:
                measuring, cpu0, wall0 = True, cpu_s(), now
            if not measuring:
                continue
            delivered += 1
            if args.reader == "agent-main":  # access units: nothing decoded, no barcode to read
                if now - wall0 >= args.seconds:
                    break
                continue
            index = read_barcode(image)
            if index is None:
                unreadable += 1
                continue
            if last_index is not None:
                gaps += max(0, (index - last_index - 1) % args.frames)
            last_index = index
            latencies.append((now_wall - due(args.epoch, args.fps, args.frames, index, now_wall)) * 1000.0)
            if now - wall0 >= args.seconds:
                break
    finally:
        close()
    span = time.monotonic() - wall0 if measuring else 0.0
    cpu = cpu_s() - cpu0 if measuring else 0.0
    latencies.sort()

    def pct(p: float) -> Optional[float]:
        return round(latencies[min(len(latencies) - 1, int(p / 100.0 * len(latencies)))], 1) if latencies else None

    result.update(
        open_to_first_frame_s=round(first, 3) if first is not None else None,
        frames=delivered,
        fps=round(delivered / span, 2) if span else 0.0,
        unreadable=unreadable,
        missed=gaps,
        cpu_ms_per_frame=round(1000.0 * cpu / delivered, 2) if delivered else None,
        cpu_share_of_one_core=round(cpu / span, 3) if span else None,
        latency_p50_ms=pct(50),
        latency_p95_ms=pct(95),
    )
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
