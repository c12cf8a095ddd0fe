"""The fleet pages' JSON endpoints over a real store, real round reports and the real rollout driver (its MQTT
seam recorded: RecordedActions), served by the real server over loopback HTTP."""

from __future__ import annotations

import json

import pytest

from tests.agent.box_page.helpers import request
from tests.trainer.fleet_pages import world as console_world
from trainer.fleet_pages.config import CloudConsoleConfig
from trainer.fleet_pages.data import FleetData
from trainer.fleet_pages.server import FleetPagesServer


def serve(world, **config):
    server = FleetPagesServer(CloudConsoleConfig(port=0, **config), FleetData(world.config, world.make_rollout))
    server.start()
    return server, f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, bundles):
    return console_world.build(tmp_path_factory.mktemp("console"), bundles)


@pytest.fixture(scope="module")
def url(world):
    server, base = serve(world)
    yield base
    server.stop()


def get(url):
    status, _, body = request(url)
    assert status == 200, body[:300]
    return json.loads(body)


@pytest.mark.parametrize(
    ("query", "devices"),
    [
        ("", ["c1", "f1", "w1", "d7"]),
        ("site=plant-2", ["d7"]),
        ("group=canary", ["c1"]),
        ("version=1.1.0", ["c1"]),  # the canary runs the new release
        ("version=1.0.0&site=plant-1", ["f1", "w1"]),
    ],
)
def test_fleet_filters(url, query, devices):
    doc = get(f"{url}/api/fleet?{query}")
    assert [d["device"] for d in doc["devices"]] == devices
    assert doc["sites"] == ["plant-1", "plant-2"] and doc["groups"] == ["canary", "dock", "wide"]
    assert doc["versions"] == ["1.0.0", "1.1.0"]


def test_fleet_rows_carry_what_the_team_looks_at(url):
    d7 = get(f"{url}/api/fleet?site=plant-2")["devices"][0]
    assert d7["ota_phase"] == "committed" and d7["alerts_per_hour"] == pytest.approx(3.0)
    assert d7["cameras"][0]["camera"] == "line-1" and d7["last_seen_s"] < 120


def test_rollout_shows_stages_devices_and_signals(url):
    doc = get(f"{url}/api/rollouts")
    current = doc["current"]
    assert current["state"] == "running" and current["release"]["version"] == "1.1.0"
    canary = current["stage_rows"][0]
    assert canary["here"] and canary["devices"] == ["c1"] and canary["committed"] == 1
    assert current["stage_rows"][1]["devices"] is None  # not reached: its devices are not judged yet
    c1 = next(d for d in current["devices"] if d["device"] == "c1")
    names = [s["name"] for s in c1["signals"]]
    assert names == ["alerts per frame", "uncertain frames", "mean confidence", "FPS"]
    assert all(s["ok"] for s in c1["signals"]) and doc["bounds"]["min_frames"] == 100
    assert doc["history"][0]["id"] == current["id"]


def test_rounds_with_their_report_and_plots(url):
    doc = get(f"{url}/api/rounds")
    assert [r["id"] for r in doc["rounds"]] == ["round-0002", "round-0001"]  # newest first
    first = doc["rounds"][1]
    assert first["map50_95"]["new_before"] == pytest.approx(0.31) and first["map50_95"]["new_after"] == 0.52
    assert set(first["per_class"]["bracket"]) == {"base_before", "base_after", "new_before", "new_after"}
    assert doc["rounds"][0]["reasons"] == ["base holdout fell by 0.02 (bound 0.01)"]
    assert [p["id"] for p in doc["learning_curve"]] == ["round-0001", "round-0002"]
    for plot in ("per_class", "learning_curve", "samples"):
        status, headers, body = request(url + first["plots"][plot])
        assert status == 200 and body.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"
    assert request(f"{url}/api/rounds/round-0001/secret.png")[0] == 404  # only the plots the record names
    assert request(f"{url}/api/rounds/round-0001/..%2Fround.json")[0] == 404


def test_samples_with_images_boxes_and_label_studio_links(url):
    doc = get(f"{url}/api/samples")
    samples = doc["samples"]
    assert len(samples) == 8 and doc["stats"]["samples"] == 8 and doc["stats"]["cameras"] == ["line-1"]
    linked = {s["sid"]: s["label_studio"] for s in samples if s["label_studio"]}
    assert sorted(linked.values()) == [
        "http://label-studio.example:8080/projects/7/data?task=101",
        "http://label-studio.example:8080/projects/7/data?task=102",
    ]
    status, headers, body = request(url + samples[0]["image"])
    assert status == 200 and body.startswith(b"\xff\xd8") and headers["Content-Type"] == "image/jpeg"
    assert samples[0]["predictions"] and samples[0]["predictions"][0]["class_name"]
    assert [s["device"] for s in get(f"{url}/api/samples?device=c1")["samples"]] == ["c1"] * 4
    older = get(f"{url}/api/samples?before={samples[3]['sid']}")["samples"]
    assert [s["sid"] for s in older] == [s["sid"] for s in samples[4:]]
    assert request(f"{url}/api/samples/999999.jpg")[0] == 404
    assert request(f"{url}/api/samples?before=x")[0] == 400


def test_promote_and_halt_with_their_refusals(tmp_path, bundles):
    world = console_world.build(tmp_path, bundles)
    server, url = serve(world)
    try:
        status, _, body = request(f"{url}/api/rollouts/promote", {"force": False})
        assert status == 409 and "not ready" in json.loads(body)["error"]  # the watch window has not passed
        assert request(f"{url}/api/rollouts/promote", {"force": "yes"})[0] == 400
        assert request(f"{url}/api/rollouts/halt", {"reason": "  "})[0] == 400
        assert (
            request(
                f"{url}/api/rollouts/halt",
                raw=b"reason=x",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )[0]
            == 415
        )
        status, _, body = request(f"{url}/api/rollouts/halt", {"reason": "glare on line 3"})
        assert status == 200 and json.loads(body)["state"] == "halted"
        current = get(f"{url}/api/rollouts")["current"]
        assert current["halt"]["reasons"] == ["operator: glare on line 3"]
        rollbacks = [p for t, p in world.actions.sent if t == "edge/plant-1/c1/cmd"]
        assert rollbacks and rollbacks[0]["type"] == "rollback" and "glare on line 3" in rollbacks[0]["reason"]
        assert request(f"{url}/api/rollouts/promote", {"force": True})[0] == 409  # never after a halt
    finally:
        server.stop()


def test_password_and_missing_parts(tmp_path, world):
    server, url = serve(world, password="correct horse battery")
    try:
        assert request(f"{url}/api/fleet")[0] == 401
        assert request(f"{url}/api/fleet", auth=("fleet", "correct horse battery"))[0] == 200
    finally:
        server.stop()
    bare = world.config.model_copy(update={"rollout": None, "rounds": None})
    bare = bare.model_copy(update={"store": bare.store.model_copy(update={"path": tmp_path / "none"})})
    server = FleetPagesServer(CloudConsoleConfig(port=0), FleetData(bare))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        status, _, body = request(f"{url}/api/fleet")
        assert status == 503 and "no sample store" in json.loads(body)["error"]  # said, not a stack trace
        assert get(f"{url}/api/rollouts")["configured"] is False
        assert get(f"{url}/api/rounds")["configured"] is False
        assert request(f"{url}/")[0] == 200
    finally:
        server.stop()


def test_the_pages_read_with_the_broker_down(tmp_path, bundles):
    """The real MQTT seam (MqttActions) towards a port where no broker listens: every view still answers; a
    halt says the broker cannot be reached."""
    from tests.agent.broker import free_port

    world = console_world.build(tmp_path, bundles)
    rollout = world.config.rollout.model_copy(
        update={"broker": world.config.rollout.broker.model_copy(update={"port": free_port()})}
    )
    config = world.config.model_copy(update={"rollout": rollout})
    server = FleetPagesServer(CloudConsoleConfig(port=0), FleetData(config))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        for view in ("fleet", "rollouts", "rounds", "samples"):
            assert request(f"{url}/api/{view}")[0] == 200, view
        assert get(f"{url}/api/rollouts")["current"]["state"] == "running"
        status, _, body = request(f"{url}/api/rollouts/halt", {"reason": "test"})
        assert status == 503 and "broker" in json.loads(body)["error"], body
    finally:
        server.stop()


def test_device_commands_are_checked_before_anything_is_sent(url):
    status, _, body = request(f"{url}/api/devices/c1/commands", {"type": "set_thresholds", "thresholds": {"x": 0.1}})
    assert status == 400 and "type must be one of" in json.loads(body)["error"]
    status, _, body = request(f"{url}/api/devices/c1/commands", {"type": "request_snapshot", "camera": "nope"})
    assert status == 400 and "camera: one of line-1" in json.loads(body)["error"]
    assert request(f"{url}/api/devices/ghost/commands", {"type": "rollback"})[0] == 404
    # valid, but no broker listens where rollout.broker points in this world: said, not hung
    status, _, body = request(f"{url}/api/devices/c1/commands", {"type": "request_snapshot", "camera": "line-1"})
    assert status == 503 and "broker" in json.loads(body)["error"]
