"""The daemon with an RTSP camera (a real gst-rtsp-server, tests/rtsp/) and a real broker: what the status says
about the camera must be what the camera is doing now, at every status interval, in status.json, on MQTT and in
the metrics alike (they used to change only when the camera changed state: 0 dropped while frames were lost, an
old reason while every retry failed for another), the address without credentials, and alerts that carry the
moment the frame arrived."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from tests.agent.broker import MosquittoBroker
from tests.agent.daemon.helpers import Collector, InProcessDaemon, config_dict, wait_for, write_config
from tests.rtsp.clips import Clip
from tests.rtsp.server import RtspServer

pytestmark = pytest.mark.broker
CAMERA_TOPIC = "edge/site1/dev1/cameras/door/status"


@pytest.fixture(autouse=True)
def _gstreamer() -> None:
    from agent.sources.gst import gst_available

    if not gst_available():
        if os.environ.get("EVL_REQUIRE_GSTREAMER") == "1":
            pytest.fail("GStreamer's Python bindings are required here (EVL_REQUIRE_GSTREAMER=1)")
        pytest.skip("SKIPPED LOUDLY: GStreamer's Python bindings (PyGObject) are missing")


def _camera(url: str) -> Dict[str, Any]:
    return {
        "name": "door",
        "source": {"type": "rtsp", "url": url, "open_timeout_s": 3},
        "rules": {
            "alerts": [{"name": "any-part", "min_confidence": 0.3, "cooldown_s": 1.0}],
            "triage": {"random": {"probability": 0.0}, "uncertainty": {"enabled": False}},
        },
    }


def _camera_doc(daemon: InProcessDaemon) -> Dict[str, Any]:
    status = json.loads((Path(daemon.config.daemon.state_dir) / "status.json").read_text())
    doc: Dict[str, Any] = status["cameras"]["door"]
    return doc


def _retained(collector: Collector) -> List[Dict[str, Any]]:
    return [json.loads(payload) for _, _, payload in collector.on(CAMERA_TOPIC)]


def test_the_camera_status_follows_the_camera_at_every_interval(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path, rtsp_clips: Dict[str, Clip], rtsp_server: Any
) -> None:
    server: RtspServer = rtsp_server({"/door": rtsp_clips["h264_sub"]}, user="op", password="s3cret-pw")
    collector = Collector(broker.port, topic="edge/site1/dev1/#")
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [_camera(server.url("/door"))])
    )
    with InProcessDaemon(cfg) as daemon:
        wait_for(lambda: _camera_doc(daemon).get("state") == "streaming", 20, "the camera streams")
        first = _camera_doc(daemon)
        assert first["source"] == first["address"] == f"rtsp://127.0.0.1:{server.port}/door"
        # no state change from here on: the counters must still move, interval after interval
        frames = [first["frames"]]
        for _ in range(3):
            time.sleep(0.6)
            frames.append(_camera_doc(daemon)["frames"])
        assert frames == sorted(frames) and frames[-1] >= frames[0] + 15, frames
        doc = _camera_doc(daemon)
        assert doc["decode"]["codec"] == "h264" and doc["decode"]["decoded"] >= doc["frames"] - 2
        retained = wait_for(lambda: [m for m in _retained(collector) if m["frames"] >= frames[-1]], 5, "MQTT")
        assert retained[-1]["source"] == doc["source"] and retained[-1]["decode"]["decoder"].startswith("cpu")
        assert retained[-1]["width"] == 640 and retained[-1]["height"] == 360

        server.stop()  # the camera goes away and stays away: every retry fails
        wait_for(lambda: "connection refused" in (_camera_doc(daemon).get("reason") or ""), 10, "the reason")
        attempts = [_camera_doc(daemon)["reconnect_attempts"]]
        time.sleep(2.5)
        attempts.append(_camera_doc(daemon)["reconnect_attempts"])
        assert _camera_doc(daemon)["state"] == "reconnecting"
        assert attempts[1] > attempts[0], attempts  # counted as they happen, not at the next state change
        latest = wait_for(
            lambda: [m for m in _retained(collector) if m["reconnect_attempts"] >= attempts[1]], 5, "MQTT"
        )[-1]
        assert latest["state"] == "reconnecting" and "connection refused" in latest["error"]
        samples = {s.name: s for s in daemon.daemon.report.samples()}
        assert "camera_frames_decoded_total" in samples and "camera_reconnect_attempts_total" in samples

        server.start()
        wait_for(lambda: _camera_doc(daemon).get("state") == "streaming", 15, "the camera back")
    everything = (tmp_path / "state" / "status.json").read_text() + "".join(
        payload.decode(errors="replace") for _, _, payload in collector.on("")
    )
    assert "s3cret-pw" not in everything
    collector.close()
