"""Camera faults against a real RTSP server, timed (issue 30's targets; the tests assert the behaviour).

    PYTHONPATH=. .venv/bin/python bench/bench_camera_faults.py [--rounds 5] [--write]

The agent's camera sources (agent.sources, the GStreamer reader, default settings) against GStreamer's RTSP
server (tests/rtsp/) playing H.264 1080p15 with GOP 1 s:

1. reboot: four cameras on one server; the server stops for 10 s and comes back, ``--rounds`` times. Per
   camera and round: seconds from the server listening again to the camera's first new frame (target ≤ 5 s);
2. a hung camera: one camera's server accepts TCP and never answers (SIGSTOP); three other cameras are started
   right after it. Seconds to their first frame, against the same three started alone (a hung camera must
   never delay another);
3. a frozen camera: streaming, then its server frozen for 8 s, ``--rounds`` times: how soon it shows
   ``stalled``, whether it ever shows ``streaming`` again or delivers a frame while frozen, the oldest frame it
   ever delivered (age at delivery, against the stall limit), and how soon it streams after the server thaws.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.sources import CameraConfig, CameraSource, SourceState, SourceStatus, build_source
from bench.common import machine, write_section
from tests.rtsp.clips import ClipSpec, ensure_clip
from tests.rtsp.server import RtspServer

OUTAGE_S = 10.0
TARGET_BACK_S = 5.0


def start_camera(name: str, url: str) -> CameraSource:
    camera = build_source(CameraConfig.model_validate({"name": name, "source": {"type": "rtsp", "url": url}}))
    camera.start()
    return camera


def first_frame_after(camera: CameraSource, frames_before: int, since: float, timeout: float) -> Optional[float]:
    deadline = since + timeout
    while time.monotonic() < deadline:
        if camera.status().frames > frames_before:
            return time.monotonic() - since
        time.sleep(0.01)
    return None


def reboot(clip: Any, tmp: Path, rounds: int) -> Dict[str, Any]:
    mounts = {f"/cam{i}": clip for i in range(4)}
    backs: List[Optional[float]] = []
    attempts = []
    with RtspServer(tmp / "reboot", mounts) as server:
        cameras = [start_camera(f"cam{i}", server.url(f"/cam{i}")) for i in range(4)]
        try:
            for camera in cameras:
                if first_frame_after(camera, 0, time.monotonic(), 30) is None:
                    raise RuntimeError("a camera did not start")
            for _ in range(rounds):
                server.stop()
                time.sleep(OUTAGE_S)
                before = [c.status().frames for c in cameras]
                tried = [c.status().reconnect_attempts for c in cameras]
                server.start()
                back_at = time.monotonic()
                results: List[Optional[float]] = [None] * 4

                def wait(i: int, before: List[int], back_at: float, results: List[Optional[float]]) -> None:
                    results[i] = first_frame_after(cameras[i], before[i], back_at, 30.0)

                waiters = [threading.Thread(target=wait, args=(i, before, back_at, results)) for i in range(4)]
                for w in waiters:
                    w.start()
                for w in waiters:
                    w.join()
                backs += results
                attempts += tried
                time.sleep(3.0)  # streaming again before the next outage
        finally:
            for camera in cameras:
                camera.stop(5.0)
    done = [b for b in backs if b is not None]
    return {
        "outage_s": OUTAGE_S,
        "rounds": rounds,
        "cameras": 4,
        "back_s": backs,
        "back_median_s": statistics.median(done) if done else None,
        "back_max_s": max(done) if done else None,
        "never_back": sum(1 for b in backs if b is None),
        "reconnect_attempts_during_outage": attempts,
    }


def hung(clip: Any, tmp: Path) -> Dict[str, Any]:
    def three_cameras(server: RtspServer) -> List[float]:
        t0 = time.monotonic()
        cams = [start_camera(f"live{i}", server.url(f"/cam{i}")) for i in range(3)]
        try:
            times = [first_frame_after(c, 0, t0, 30.0) for c in cams]
        finally:
            for c in cams:
                c.stop(5.0)
        if any(t is None for t in times):
            raise RuntimeError("a live camera did not stream")
        return [float(t) for t in times if t is not None]

    mounts = {f"/cam{i}": clip for i in range(3)}
    with RtspServer(tmp / "live", mounts) as live:
        alone = three_cameras(live)
        with RtspServer(tmp / "hung", {"/cam": clip}) as frozen:
            frozen.freeze()
            hung_camera = build_source(
                CameraConfig.model_validate(
                    {"name": "hung", "source": {"type": "rtsp", "url": frozen.url("/cam"), "open_timeout_s": 10}}
                )
            )
            hung_camera.start()
            try:
                time.sleep(0.2)  # the hung camera's open is under way
                beside = three_cameras(live)
                hung_state = hung_camera.status()
            finally:
                frozen.thaw()
                hung_camera.stop(5.0)
    return {
        "alone_s": alone,
        "beside_hung_s": beside,
        "hung_state_meanwhile": hung_state.state.value,
        "hung_reason_meanwhile": hung_state.reason,
    }


class Timeline:
    """State changes of one camera, as its listener sees them."""

    def __init__(self) -> None:
        self.events: List[Any] = []
        self._lock = threading.Lock()

    def __call__(self, status: SourceStatus) -> None:
        with self._lock:
            self.events.append((time.monotonic(), status.state))

    def since(self, t0: float) -> List[Any]:
        with self._lock:
            return [(t - t0, s) for t, s in self.events if t >= t0]


def frozen(clip: Any, tmp: Path, rounds: int) -> Dict[str, Any]:
    results = []
    with RtspServer(tmp / "frozen", {"/cam": clip}) as server:
        timeline = Timeline()
        camera = build_source(
            CameraConfig.model_validate({"name": "cam", "source": {"type": "rtsp", "url": server.url("/cam")}})
        )
        camera.add_listener(timeline)
        oldest = [0.0]
        stop = threading.Event()

        def watch_ages() -> None:  # the age of every frame as the model would take it
            last = -1
            while not stop.is_set():
                frame = camera.wait_frame(last, timeout=0.2)
                if frame is not None:
                    last = frame.index
                    oldest[0] = max(oldest[0], time.monotonic() - frame.captured_monotonic)

        watcher = threading.Thread(target=watch_ages, daemon=True)
        camera.start()
        watcher.start()
        try:
            first_frame_after(camera, 0, time.monotonic(), 30)
            for _ in range(rounds):
                time.sleep(2.0)
                t0 = time.monotonic()
                server.freeze()
                time.sleep(0.3)  # frames already sent (or being decoded) when the server froze still arrive
                frames_before = camera.status().frames
                time.sleep(7.7)
                frames_during = camera.status().frames - frames_before
                server.thaw()
                thawed = time.monotonic()
                back = first_frame_after(camera, camera.status().frames, thawed, 20.0)
                events = timeline.since(t0)
                stalled = next((t for t, s in events if s is SourceState.STALLED), None)
                reconnecting = next((t for t, s in events if s is SourceState.RECONNECTING), None)
                streaming_while_frozen = [t for t, s in events if s is SourceState.STREAMING and t < thawed - t0]
                results.append(
                    {
                        "stalled_after_s": stalled,
                        "reconnecting_after_s": reconnecting,
                        "frames_while_frozen": frames_during,
                        "streaming_while_frozen": len(streaming_while_frozen),
                        "back_after_thaw_s": back,
                    }
                )
        finally:
            stop.set()
            camera.stop(5.0)
    return {"rounds": results, "stall_limit_s": camera.stall_timeout_s, "oldest_frame_delivered_s": oldest[0]}


def seconds(values: List[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in values)


def render(report: Dict[str, Any]) -> str:
    r, h, f = report["reboot"], report["hung"], report["frozen"]
    backs = [b for b in r["back_s"] if b is not None]
    frozen_rounds = f["rounds"]
    lines = [
        "## Camera faults against a real RTSP server (issue 30)",
        "",
        f"Machine: {report['machine']}. The agent's camera sources with their default settings (reconnect backoff "
        "0.5 s doubling to 2 s, stall limit 2 s, read timeout 5 s, open timeout 10 s) against gst-rtsp-server on "
        "loopback, H.264 1080p15, GOP 1 s. Reproduce: `PYTHONPATH=. .venv/bin/python bench/bench_camera_faults.py "
        "--write`.",
        "",
        "| fault | measure | result | target |",
        "|---|---|---|---|",
        f"| server gone {r['outage_s']:.0f} s, {r['rounds']} times, 4 cameras | server listening again → every "
        f"camera's first new frame | median {r['back_median_s']:.2f} s, **max {r['back_max_s']:.2f} s** "
        f"({len(backs)} of {len(r['back_s'])} back) | ≤ {TARGET_BACK_S:.0f} s, every run |",
        f"| | reconnect attempts during each outage (counted as they happen) | "
        f"{min(r['reconnect_attempts_during_outage'])}–{max(r['reconnect_attempts_during_outage'])} per camera "
        "(cumulative) | |",
        f"| one camera hung (TCP open, no answer), 3 started beside it | first frame of the 3 | "
        f"{seconds(h['beside_hung_s'])} s (alone: {seconds(h['alone_s'])} s); "
        f'the hung one meanwhile: {h["hung_state_meanwhile"]}, "{h["hung_reason_meanwhile"][:60]}" | no delay |',
        f"| server frozen 8 s, {len(frozen_rounds)} times | shown stalled after | "
        + ", ".join(f"{x['stalled_after_s']:.2f}" for x in frozen_rounds if x["stalled_after_s"] is not None)
        + f" s (stall limit {f['stall_limit_s']:.1f} s) | within the stall limit |",
        "| | frames delivered (from 0.3 s after the freeze: those sent before it may still land) / `streaming` "
        "shown while frozen | "
        + ", ".join(f"{x['frames_while_frozen']} / {x['streaming_while_frozen']}" for x in frozen_rounds)
        + " | 0 / 0 |",
        "| | connection dropped (reconnecting) after | "
        + ", ".join(f"{x['reconnecting_after_s']:.2f}" for x in frozen_rounds if x["reconnecting_after_s"] is not None)
        + " s (read timeout 5 s) | |",
        "| | streaming again after the thaw | "
        + ", ".join(f"{x['back_after_thaw_s']:.2f}" for x in frozen_rounds if x["back_after_thaw_s"] is not None)
        + " s | |",
        f"| | oldest frame ever delivered (age when the model could take it) | {f['oldest_frame_delivered_s']:.3f} s | "
        f"< stall limit {f['stall_limit_s']:.1f} s |",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    clip = ensure_clip(ClipSpec("h264", 1920, 1080, 15, gop_s=1.0))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report = {"machine": machine()}
        print("reboot ...", flush=True)
        report["reboot"] = reboot(clip, tmp, args.rounds)
        print(json.dumps(report["reboot"]), flush=True)
        print("hung ...", flush=True)
        report["hung"] = hung(clip, tmp)
        print(json.dumps(report["hung"]), flush=True)
        print("frozen ...", flush=True)
        report["frozen"] = frozen(clip, tmp, max(1, args.rounds // 2 + 1))
        print(json.dumps(report["frozen"]), flush=True)
    text = render(report)
    print(text)
    (Path(__file__).resolve().parent / "results" / "camera_faults.json").write_text(json.dumps(report, indent=1))
    if args.write:
        write_section("camera-faults", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
