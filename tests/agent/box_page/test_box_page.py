"""The box page against a running daemon: real mosquitto, real ONNX Runtime on the demo model, synthetic cameras.

What the page shows comes from the daemon, not the broker (it keeps working with the broker down); its preview
shows new frames; a button's command is answered by the daemon's command handler and the same reply goes out
on the MQTT reply topic; a rollback without OTA is refused as the MQTT command would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agent.imaging import opencv
from tests.agent.box_page.helpers import get_json, request
from tests.agent.daemon.helpers import Collector, InProcessDaemon, config_dict, synthetic_camera, wait_for, write_config


@pytest.fixture
def box(tmp_path: Path, broker, daemon_model):
    cameras = [synthetic_camera("dock", seed=1, fps=8.0), synthetic_camera("press", seed=2, fps=8.0)]
    data = config_dict(
        tmp_path, broker.port, daemon_model, cameras, console={"enabled": True, "port": 0, "preview_fps": 5}
    )
    collector = Collector(broker.port)
    with InProcessDaemon(write_config(tmp_path / "agent.yaml", data)) as running:
        assert running.daemon.parts.pages is not None
        running.url = f"http://127.0.0.1:{running.daemon.parts.pages.port}"  # type: ignore[attr-defined]
        yield running, collector, broker
    collector.close()


def test_state_shows_the_cameras_model_spool_and_link(box):
    running, _, _ = box
    url = running.url

    def streaming():
        state = get_json(f"{url}/api/state")
        cams = state["status"]["cameras"]
        return (
            state if all(c.get("state") == "streaming" and c.get("processed", 0) > 3 for c in cams.values()) else None
        )

    state = wait_for(streaming, 30, "both cameras streaming on the page")
    assert sorted(state["status"]["cameras"]) == ["dock", "press"]
    assert state["source"] == "live" and state["health"]["verdict"] == "healthy", state["health"]
    assert state["status"]["model"]["sha256"] and state["status"]["mqtt"]["connected"] is True
    assert "by_kind" in state["status"]["spool"] and state["commands"] == [
        "flag_window",
        "request_snapshot",
        "rollback",
    ]
    status, headers, body = request(f"{url}/")
    assert status == 200 and b"/box.js" in body and "default-src 'self'" in headers["Content-Security-Policy"]


def test_preview_shows_new_annotated_frames(box):
    running, _, _ = box
    url = running.url
    wait_for(lambda: request(f"{url}/api/preview/dock.jpg")[0] == 200, 30, "a first preview")
    _status, headers, body = request(f"{url}/api/preview/dock.jpg")
    image = opencv().imdecode(np.frombuffer(body, np.uint8), 1)
    assert image is not None and image.shape[1] == 320  # narrower than preview_width: not scaled
    first = int(headers["X-Frame-Index"])
    wait_for(lambda: int(request(f"{url}/api/preview/dock.jpg")[1]["X-Frame-Index"]) > first, 10, "a newer frame")
    assert request(f"{url}/api/preview/nope.jpg")[0] == 404


def test_a_button_is_answered_by_the_daemon_and_the_reply_goes_out_over_mqtt(box):
    running, collector, _ = box
    url = running.url
    wait_for(lambda: request(f"{url}/api/preview/dock.jpg")[0] == 200, 30, "frames")
    status, _, body = request(f"{url}/api/commands", {"type": "request_snapshot", "camera": "dock"})
    reply = json.loads(body)
    assert status == 200 and reply["status"] == "ok" and reply["request_id"].startswith("console-"), reply

    def published():
        return [
            m
            for m in (json.loads(p) for _, _, p in collector.on("cmd/reply"))
            if m["request_id"] == reply["request_id"]
        ]

    assert wait_for(published, 10, "the reply on the broker")[0]["status"] == "ok"
    # the snapshot itself went out on the snapshots topic, as for an MQTT request
    wait_for(lambda: collector.on("snapshots"), 10, "the snapshot")
    # flag the next 20 s: the flagged frames become samples the page lists with their reason
    status, _, body = request(
        f"{url}/api/commands", {"type": "flag_window", "camera": "press", "seconds": 20, "note": "x"}
    )
    assert json.loads(body)["status"] == "ok"
    state = wait_for(
        lambda: (s := get_json(f"{url}/api/state"))["samples"] and s, 20, "flagged frames listed as samples"
    )
    sample = state["samples"][0]
    assert sample["what"] == "flagged" and sample["camera"] == "press" and "console: x" in sample["detail"]
    assert request(f"http://127.0.0.1:{running.daemon.parts.pages.port}{sample['image']}")[0] == 200
    # no OTA on this box: the page's rollback is refused exactly as the MQTT command is
    status, _, body = request(f"{url}/api/commands", {"type": "rollback", "reason": "test"})
    assert status == 200 and json.loads(body)["error"]["code"] == "unsupported"


def test_the_page_keeps_working_with_the_broker_down(box):
    running, _, broker = box
    url = running.url
    wait_for(lambda: request(f"{url}/api/preview/dock.jpg")[0] == 200, 30, "frames")
    broker.stop()
    state = wait_for(
        lambda: (s := get_json(f"{url}/api/state"))["status"]["mqtt"]["connected"] is False and s, 20, "link down"
    )
    assert state["source"] == "live"
    first = int(request(f"{url}/api/preview/dock.jpg")[1]["X-Frame-Index"])
    wait_for(lambda: int(request(f"{url}/api/preview/dock.jpg")[1]["X-Frame-Index"]) > first, 10, "frames go on")
    status, _, body = request(f"{url}/api/commands", {"type": "request_snapshot", "camera": "dock"})
    assert status == 200 and json.loads(body)["status"] == "ok"  # the reply waits in the spool
    wait_for(lambda: get_json(f"{url}/api/state")["status"]["spool"]["by_kind"].get("reply"), 10, "reply spooled")


def test_the_page_is_off_unless_enabled(tmp_path: Path, broker, daemon_model):
    from agent.config import AgentConfig

    assert AgentConfig.model_fields["console"].default_factory().enabled is False
    data = config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("dock")])
    with InProcessDaemon(write_config(tmp_path / "agent.yaml", data)) as running:
        assert running.daemon.parts.pages is None
        assert not any(t.name == "console-http" for t in running.daemon.supervisor.states())
        pipeline = running.daemon.live.pipeline
        # a camera joins the pipeline at the inference thread's next step (between batches), maybe after ready
        wait_for(
            lambda: "dock" in pipeline.cameras and pipeline.cameras["dock"].stats.snapshot.processed > 2, 20, "frames"
        )
        assert pipeline.cameras["dock"].preview is None  # no frame kept alive for a page nobody serves
