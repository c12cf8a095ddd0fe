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

import cv2
import numpy as np
import pytest

from agent.protocol.framing import decode_frame
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
        samples = {s.name: s for s in daemon.daemon.parts.report.samples()}
        assert "camera_frames_decoded_total" in samples and "camera_reconnect_attempts_total" in samples

        server.start()
        wait_for(lambda: _camera_doc(daemon).get("state") == "streaming", 15, "the camera back")
    everything = (tmp_path / "state" / "status.json").read_text() + "".join(
        payload.decode(errors="replace") for _, _, payload in collector.on("")
    )
    assert "s3cret-pw" not in everything
    collector.close()


def test_alert_snapshots_and_samples_come_from_the_main_stream(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path, rtsp_clips: Dict[str, Clip], rtsp_server: Any
) -> None:

    server: RtspServer = rtsp_server({"/sub": rtsp_clips["h264_sub"], "/main": rtsp_clips["h264"]})
    camera = _camera(server.url("/sub"))
    camera["source"]["main_url"] = server.url("/main")
    camera["rules"]["triage"] = {
        "random": {"probability": 1.0, "rate": {"per_minute": 60, "burst": 2}},
        "uncertainty": {"enabled": False},
        "near_duplicate": {"enabled": False},
    }
    collector = Collector(broker.port, topic="edge/site1/dev1/#")
    cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [camera]))
    with InProcessDaemon(cfg) as daemon:
        wait_for(lambda: collector.on("/alerts") and collector.on("/samples"), 30, "an alert and a sample")
        alert = json.loads(collector.on("/alerts")[0][2])
        snapshot = wait_for(
            lambda: [
                m
                for m in collector.on("/snapshots")
                if json.loads(decode_frame("t", m[2], 1 << 24)[0])["id"] == alert["snapshot"]["id"]
            ],
            10,
            "the alert's snapshot",
        )[0]
        _header, jpeg = decode_frame("t", snapshot[2], 1 << 24)
        picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (1080, 1920, 3)  # the main stream's, not the 640x360 the model saw
        assert alert["snapshot"]["image"]["width"] == 1920
        # the boxes are in the snapshot's pixels: scaled by 3 from the substream's
        assert all(0 <= b["x1"] <= b["x2"] <= 1920 and 0 <= b["y1"] <= b["y2"] <= 1080 for b in alert["boxes"])
        assert max(b["x2"] for b in alert["boxes"]) > 640 or max(b["y2"] for b in alert["boxes"]) > 360
        sample_header, _sample_jpeg = decode_frame("t", collector.on("/samples")[0][2], 1 << 24)
        sample = json.loads(sample_header)
        assert (sample["image"]["width"], sample["image"]["height"]) == (1920, 1080)
        output = daemon.status()["output"]
        assert output["main_stream_stills"] >= 2
        from agent.app.status import render_summary

        line = f"main stream rtsp://127.0.0.1:{server.port}/main streaming  1920x1080"
        summary = wait_for(lambda: [s for s in [render_summary(daemon.status())] if line in s], 5, "the summary")[0]
        assert "decoder cpu (avdec_h264" in summary  # what `edge-agent status` prints
        main = wait_for(
            lambda: _camera_doc(daemon)["main"] if _camera_doc(daemon)["main"]["stills"] >= 2 else None, 5, ""
        )
        assert main["state"] == "streaming" and main["width"] == 1920
    collector.close()
