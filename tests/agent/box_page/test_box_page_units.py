"""The box page's pure parts (access rule, command forms, page document), its preview cache, and its server
over an in-memory source (the seam to the daemon; the real daemon is in test_box_page.py)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError

from agent.app.pipeline import PreviewFrame
from agent.app.pipeline.recent import RecentOutput, RecentOutputs
from agent.app.status import assess
from agent.box_page.config import ConsoleConfig
from agent.box_page.preview import PreviewImage, PreviewRenderer
from agent.box_page.server import BoxPageServer
from agent.box_page.views import page_state
from agent.core.detections import Detections
from agent.protocol.models import CommandReply
from agent.sources.frame import Frame
from agent.web.access import decide
from agent.web.forms import CommandFormError, command_payload
from agent.web.server import MAX_BODY
from tests.agent.box_page.helpers import request, status_document

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)
GOOD = "correct horse battery"


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("peer", "header", "password", "status"),
    [
        ("127.0.0.1", None, None, 200),
        ("::1", None, None, 200),
        ("127.0.0.5", None, None, 200),
        ("192.168.1.20", None, None, 403),  # never open to the network without a password
        ("10.0.0.7", basic("operator", GOOD), None, 403),  # credentials do not help when none is configured
        ("192.168.1.20", None, GOOD, 401),
        ("192.168.1.20", basic("operator", GOOD), GOOD, 200),
        ("192.168.1.20", basic("operator", GOOD + "x"), GOOD, 401),
        ("192.168.1.20", basic("admin", GOOD), GOOD, 401),
        ("192.168.1.20", "Basic !!!not-base64", GOOD, 401),
        ("192.168.1.20", "Bearer " + GOOD, GOOD, 401),
        ("127.0.0.1", None, GOOD, 401),  # a password, once set, is asked of everyone
    ],
)
def test_access_rule(peer, header, password, status):
    assert decide(peer, header, "operator", password, "127.0.0.1:8090").status == status


@pytest.mark.parametrize(
    ("host", "password", "status"),
    [
        ("127.0.0.1:8090", None, 200),
        ("localhost:8090", None, 200),
        ("[::1]:8090", None, 200),
        ("localhost", None, 200),
        ("evil.example:8090", None, 403),  # a rebound name: refused without a password
        (None, None, 403),
        ("evil.example:8090", GOOD, 200),  # with a password the credentials decide
    ],
)
def test_without_a_password_the_host_must_name_loopback(host, password, status):
    header = basic("operator", GOOD) if password else None
    assert decide("127.0.0.1", header, "operator", password, host).status == status


def test_server_refuses_a_rebound_host_name(served):
    url, _ = served()
    assert request(f"{url}/api/state", headers={"Host": "evil.example:8090"})[0] == 403
    assert request(f"{url}/api/state")[0] == 200


def test_an_exposed_console_needs_a_password():
    with pytest.raises(ValidationError, match="not loopback"):
        ConsoleConfig(enabled=True, host="0.0.0.0")
    ConsoleConfig(enabled=True, host="0.0.0.0", password=GOOD)
    ConsoleConfig(enabled=False, host="0.0.0.0")  # off: nothing is exposed
    ConsoleConfig(enabled=True, host="::1")


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"type": "set_thresholds", "thresholds": {"x": 0.1}}, "type must be one of"),  # MQTT-only
        ({"type": "ping"}, "type must be one of"),
        ({"type": "request_snapshot", "camera": "other"}, "camera: one of"),
        ({"type": "flag_window", "camera": "dock"}, "seconds"),
        ({"type": "flag_window", "camera": "dock", "seconds": 0}, "seconds"),
        ({"type": "flag_window", "camera": "dock", "seconds": 7200}, "seconds"),
        ({"type": "flag_window", "camera": "dock", "seconds": True}, "seconds"),
        ({"type": "flag_window", "camera": "dock", "seconds": "30"}, "seconds"),
        ({"type": "rollback", "reason": 5}, "reason: a string"),
    ],
)
def test_forms_that_are_not_commands(form, error):
    with pytest.raises(CommandFormError, match=error):
        command_payload(form, ["dock"], NOW, "console-1")


def test_a_form_carries_nothing_beyond_the_command_it_names():
    form = {
        "type": "rollback",
        "reason": "x",
        "if_active": {"name": "demo", "version": "1.0.0", "counter": 1},
        "thresholds": {"conf": 0.01},
        "request_id": "forged",
    }
    payload = command_payload(form, ["dock"], NOW, "console-1")
    assert set(payload) == {"type", "request_id", "sent_at", "reason"} and payload["request_id"] == "console-1"


def test_forms_become_mqtt_commands():
    flag = command_payload(
        {"type": "flag_window", "camera": "dock", "seconds": 30, "note": "glare"}, ["dock"], NOW, "r1"
    )
    assert flag["start"] == NOW.isoformat() and flag["end"] == "2026-12-03T12:00:30+00:00"
    assert flag["note"] == "console: glare" and flag["request_id"] == "r1"
    assert command_payload({"type": "rollback"}, [], NOW, "r2")["reason"] == "console"
    assert command_payload({"type": "request_snapshot", "camera": "dock"}, ["dock"], NOW, "r3")["camera"] == "dock"


def test_page_state_lists_recent_outputs_newest_first():
    recent = RecentOutputs(keep=2)
    for i in range(3):
        recent.add(RecentOutput("alert", f"{i:032x}", "dock", 1000.0 + i, "intrusion", "person 0.91", b"jpeg"))
    recent.add(RecentOutput("sample", "f" * 32, "dock", 999.0, "uncertain", "", None))
    status = status_document(updated=datetime.now(timezone.utc).isoformat())
    doc = page_state(status, assess(status, True), recent.snapshot, "live", 2.0)
    assert [a["id"][-1] for a in doc["alerts"]] == ["2", "1"]  # kept 2, newest first
    assert doc["alerts"][0]["image"] == f"/api/outputs/{2:032x}.jpg" and doc["samples"][0]["image"] is None
    assert doc["health"]["verdict"] == "healthy" and recent.find("f" * 32).what == "uncertain"


def preview_frame(index, dets=1):
    image = np.full((720, 1280, 3), 40, np.uint8)
    frame = Frame("dock", index, 0.0, 1700000000.0 + index, image)
    detections = Detections.from_arrays([[100, 100, 400, 300]] * dets, [0.9] * dets, [0] * dets)
    return PreviewFrame(frame, detections, {0: "person"}, (("press", ((0.0, 0.0), (640.0, 0.0), (640.0, 360.0))),))


def test_preview_is_rendered_at_most_at_the_configured_rate_for_any_number_of_viewers():
    clock = SimpleNamespace(t=0.0)
    newest = {"frame": preview_frame(1)}
    renderer = PreviewRenderer(lambda cam: newest["frame"], fps=2.0, width=640, quality=70, clock=lambda: clock.t)
    first = renderer.image("dock")
    assert first is not None and first.frame_index == 1 and first.detections == 1
    newest["frame"] = preview_frame(2)
    for _ in range(10):  # ten viewers within the same half second: one render
        assert renderer.image("dock") is first
    clock.t = 0.6
    second = renderer.image("dock")
    assert second.frame_index == 2 and renderer.renders == 2
    clock.t = 1.2  # no new frame: the image is kept, not rendered again
    assert renderer.image("dock") is second and renderer.renders == 2
    from agent.imaging import opencv

    decoded = opencv().imdecode(np.frombuffer(second.jpeg, np.uint8), 1)
    assert decoded.shape == (360, 640, 3)  # scaled to the preview width
    off = np.abs(decoded.astype(int) - 40).mean(axis=2)
    assert off[70:140, 49:51].mean() > 30  # the box's left edge (x = 100 scaled by 0.5) is drawn
    assert off[100:140, 100:190].mean() < 5  # inside the box: the frame itself


class MemorySource:
    """An in-memory BoxPageSource: what the server is given, and the commands it passes on."""

    def __init__(self):
        self.commands = []

    def state(self):
        return {"status": {"device": "dev1"}, "health": {"code": 0}}

    def cameras(self):
        return ["dock"]

    def preview(self, camera):
        return PreviewImage(b"\xff\xd8jpeg", 7, 1700000000.0, 2)

    def output_jpeg(self, output_id):
        return b"\xff\xd8out" if output_id == "a" * 32 else None

    def command(self, command):
        self.commands.append(command)
        return CommandReply.ok(command.request_id, "dev1", NOW, {"camera": getattr(command, "camera", None)})


@pytest.fixture
def served(request_config=None):
    def make(**config):
        source = MemorySource()
        server = BoxPageServer(ConsoleConfig(enabled=True, port=0, **config), source, "edge/s/dev1/cmd")
        server.start()
        made.append(server)
        return f"http://127.0.0.1:{server.port}", source

    made = []
    yield make
    for server in made:
        server.stop()


def test_server_routes(served):
    url, _source = served()
    status, headers, body = request(f"{url}/api/preview/dock.jpg")
    assert status == 200 and headers["X-Frame-Index"] == "7" and body.startswith(b"\xff\xd8")
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    assert request(f"{url}/api/preview/../../etc/passwd.jpg")[0] == 404
    assert request(f"{url}/api/outputs/{'a' * 32}.jpg")[2] == b"\xff\xd8out"
    assert request(f"{url}/api/outputs/{'b' * 32}.jpg")[0] == 404
    assert json.loads(request(f"{url}/api/state")[2])["status"]["device"] == "dev1"
    assert request(f"{url}/box.js")[0] == 200 and request(f"{url}/pages.css")[0] == 200
    assert request(f"{url}/etc/passwd")[0] == 404


def test_server_asks_for_the_password_once_one_is_set(served):
    url, _ = served(password=GOOD)
    status, headers, _ = request(f"{url}/api/state")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert request(f"{url}/api/state", auth=("operator", "nope-nope-nope"))[0] == 401
    assert request(f"{url}/api/state", auth=("operator", GOOD))[0] == 200


@pytest.mark.parametrize(
    ("raw", "headers", "status", "error"),
    [
        (b'{"type": "request_snapshot", "camera": "dock"}', {"Content-Type": "text/plain"}, 415, "application/json"),
        (b'{"type": "request_snapshot", "camera": "dock"}', {"Origin": "http://evil.example"}, 403, "cross-origin"),
        (b"not json", {}, 400, "not JSON"),
        (b"[1]", {}, 400, "JSON object"),
        (b'{"type": "set_thresholds", "thresholds": {"conf": 0.1}}', {}, 400, "type must be one of"),
        (b'{"type": "flag_window", "camera": "dock", "seconds": 30, "note": "' + b"x" * 2000 + b'"}', {}, 200, None),
        (b'{"pad": "' + b"x" * MAX_BODY + b'"}', {}, 413, "at most"),
    ],
)
def test_bad_commands_are_refused_and_reach_nothing(served, raw, headers, status, error):
    url, source = served()
    got, _, body = request(f"{url}/api/commands", raw=raw, headers=headers)
    assert got == status, body
    if error:
        assert error in json.loads(body)["error"] and source.commands == []
    else:
        assert source.commands[0].note.startswith("console: x")  # the note was cut to fit the command


def test_a_command_from_the_same_origin_goes_through(served):
    url, source = served()
    host = url.split("//")[1]
    got, _, body = request(
        f"{url}/api/commands", {"type": "request_snapshot", "camera": "dock"}, headers={"Origin": f"http://{host}"}
    )
    assert got == 200 and json.loads(body)["status"] == "ok"
    assert source.commands[0].type == "request_snapshot" and source.commands[0].request_id.startswith("console-")


def test_the_page_falls_back_to_status_json_when_the_event_loop_does_not_answer(tmp_path):
    import asyncio

    from agent.app.box_page import BoxPageBackend
    from agent.app.status import write_status

    path = tmp_path / "status.json"
    write_status(path, status_document(pid=2**22 + 12345, updated=NOW.isoformat()))
    loop = asyncio.new_event_loop()
    loop.close()  # stands for a loop that is gone: run_coroutine_threadsafe refuses
    live = SimpleNamespace(status_path=path, config=SimpleNamespace(ota=None, cameras=[]))
    writer = SimpleNamespace(recent=RecentOutputs())

    def never(*_: object) -> None:
        raise AssertionError("not called: the loop is gone")

    side = BoxPageBackend(live, ConsoleConfig(), loop, document=never, writer=writer, command=never)  # type: ignore[arg-type]
    state = side.state()
    assert state["source"] == "file" and state["health"]["verdict"] == "not running"  # that pid is gone
