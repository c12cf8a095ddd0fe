"""Both pages in a real browser (headless Chromium from Debian, Selenium): the box page over a running daemon
(real mosquitto, ONNX Runtime, synthetic cameras) and the fleet pages over a real store, round reports and
rollout driver. Screenshots go to the test's folder (and to $EVL_SCREENSHOTS: docs/img for the README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent.broker_fixtures import broker  # noqa: F401 - fixture
from tests.agent.daemon.helpers import (
    Collector,
    InProcessDaemon,
    config_dict,
    sampling_rules,
    synthetic_camera,
    write_config,
)
from tests.browser import Screenshots, browser, wait
from tests.trainer.fleet_pages import world as console_world
from trainer.fleet_pages.config import CloudConsoleConfig
from trainer.fleet_pages.data import FleetData
from trainer.fleet_pages.server import FleetPagesServer


@pytest.fixture
def driver(tmp_path):
    yield from browser(tmp_path)


@pytest.fixture
def shots(tmp_path):
    return Screenshots(tmp_path / "screenshots")


def confirm(driver):
    wait(lambda: driver.switch_to.alert, 5, "the confirmation").accept()


def test_box_page_and_a_fleet_command_to_the_box(tmp_path: Path, broker, demo_int8_model_path, driver, shots):  # noqa: F811
    from selenium.webdriver.common.by import By

    zone = {"name": "loading-bay", "points": [[20, 60], [400, 60], [400, 330], [20, 330]]}
    dock_rules = {
        "alerts": [{"name": "part-in-bay", "min_confidence": 0.3, "cooldown_s": 0.5, "zones": [zone]}],
        "triage": {
            "random": {"probability": 0.0},
            "uncertainty": {"enabled": False},
            "inconsistency": {"enabled": False},
        },
    }
    cameras = [
        synthetic_camera("dock", seed=1, fps=6.0, width=640, height=384, **dock_rules),
        synthetic_camera("press", seed=2, fps=6.0, width=640, height=384, **sampling_rules(per_minute=60, burst=4)),
    ]
    data = config_dict(tmp_path, broker.port, demo_int8_model_path, cameras, console={"enabled": True, "port": 0})
    collector = Collector(broker.port)
    try:
        with InProcessDaemon(write_config(tmp_path / "agent.yaml", data)) as running:
            url = f"http://127.0.0.1:{running.daemon.parts.pages.port}/"
            driver.get(url)
            rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#cameras tbody tr")  # noqa: E731
            wait(lambda: len(rows()) == 2 and all("streaming" in r.text for r in rows()), 30, "two streaming cameras")
            assert "dev1" in driver.find_element(By.ID, "title").text
            preview = driver.find_element(By.CSS_SELECTOR, ".preview[data-camera=dock]")
            first = int(wait(lambda: preview.get_attribute("data-frame"), 20, "a first preview"))
            wait(lambda: int(preview.get_attribute("data-frame")) > first, 20, "the preview updates")
            image = preview.find_element(By.TAG_NAME, "img")
            assert driver.execute_script("return arguments[0].naturalWidth", image) == 640
            # a command button: confirmation, the daemon's reply on the page, the same reply on the broker
            driver.find_element(By.ID, "btn-snapshot").click()
            confirm(driver)
            log = driver.find_element(By.ID, "replies")
            line = wait(lambda: "request_snapshot ->" in log.text and log.text, 15, "the reply on the page")
            request_id = line.split("-> ", 1)[1].split(":", 1)[0]
            assert ": ok" in line, line
            wait(
                lambda: any(json.loads(p)["request_id"] == request_id for _, _, p in collector.on("cmd/reply")),
                15,
                "the reply over MQTT",
            )
            wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#alerts figure img"), 20, "an alert with its snapshot")
            wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#samples figure img"), 20, "a sample with its reason")
            shots.take(driver, "console-box")
            # the fleet page sends a command to this box over the broker and shows the box's reply
            fleet_command(tmp_path, broker.port, driver, shots)
            driver.get(url)
            preview = wait(
                lambda: driver.find_element(By.CSS_SELECTOR, ".preview[data-camera=dock]"), 10, "the box page"
            )
            # with the broker gone the page still shows the box: the link's state, new frames
            broker.stop()
            mqtt = driver.find_element(By.ID, "mqtt")
            wait(lambda: "connected\nno" in mqtt.text or "connected no" in mqtt.text, 20, "the link shown down")
            now = int(preview.get_attribute("data-frame"))
            wait(lambda: int(preview.get_attribute("data-frame")) > now, 20, "frames with the broker down")
    finally:
        collector.close()


def test_fleet_pages(tmp_path: Path, bundles, driver, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    world = console_world.build(tmp_path / "world", bundles)
    server = FleetPagesServer(CloudConsoleConfig(port=0), FleetData(world.config, world.make_rollout))
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/"
        driver.get(url + "#fleet")
        table_rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#page tbody tr")  # noqa: E731
        wait(lambda: len(table_rows()) == 4, 15, "four devices")
        shots.take(driver, "console-fleet")
        Select(driver.find_element(By.ID, "filter-site")).select_by_value("plant-2")
        wait(lambda: len(table_rows()) == 1 and "d7" in table_rows()[0].text, 10, "the site filter")

        driver.get(url + "#rounds")
        plots = lambda: driver.find_elements(By.CSS_SELECTOR, "img.plot")  # noqa: E731
        wait(lambda: len(plots()) >= 4, 15, "the rounds' plots")
        wait(
            lambda: all(driver.execute_script("return arguments[0].naturalWidth", p) > 0 for p in plots()),
            15,
            "plots loaded",
        )
        shots.take(driver, "console-rounds")

        driver.get(url + "#samples")
        figures = lambda: driver.find_elements(By.CSS_SELECTOR, "#sample-grid figure")  # noqa: E731
        wait(lambda: len(figures()) == 8, 15, "eight samples")
        wait(
            lambda: all(
                driver.execute_script("return arguments[0].width", f.find_element(By.TAG_NAME, "canvas")) == 320
                for f in figures()
            ),
            15,
            "images with their boxes drawn",
        )
        links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#sample-grid a")]
        assert sorted(links)[0] == "http://label-studio.example:8080/projects/7/data?task=101"
        shots.take(driver, "console-samples")

        driver.get(url + "#rollouts")
        wait(lambda: driver.find_elements(By.ID, "btn-halt"), 15, "the running rollout")
        shots.take(driver, "console-rollouts")
        driver.find_element(By.ID, "halt-reason").send_keys("glare on line 3")
        driver.find_element(By.ID, "btn-halt").click()
        confirm(driver)
        shown = wait(lambda: driver.find_element(By.ID, "halt-reason-shown").text, 15, "the halt and its reason")
        assert "operator: glare on line 3" in shown and "canary" in shown
        assert any(t == "edge/plant-1/c1/cmd" for t, _ in world.actions.sent)  # the canary was told to roll back
        shots.take(driver, "console-rollout-halted")
    finally:
        server.stop()


def fleet_command(tmp_path: Path, port: int, driver, shots) -> None:
    from selenium.webdriver.common.by import By

    from agent.link.config import BrokerConnection
    from tests.trainer import helpers as h

    config, _ = h.store_config(tmp_path / "cloud")
    h.fill_store(
        config,
        [
            h.device_status("dev1", site="site1"),
            h.camera_status("dev1", site="site1", camera="dock"),
            h.camera_status("dev1", site="site1", camera="press"),
        ],
    )
    console = CloudConsoleConfig(port=0, broker=BrokerConnection(host="127.0.0.1", port=port))
    server = FleetPagesServer(console, FleetData(config.model_copy(update={"console": console})))
    server.start()
    try:
        driver.get(f"http://127.0.0.1:{server.port}/#fleet")
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "button.cmd-open"), 15, "the device row")[0].click()
        wait(lambda: driver.find_element(By.ID, "cmd-snapshot"), 5, "the command panel").click()
        confirm(driver)
        log = driver.find_element(By.ID, "device-replies")
        line = wait(lambda: "request_snapshot -> fleet-" in log.text and log.text, 20, "the box's reply")
        assert ": ok" in line.splitlines()[0], line
        shots.take(driver, "console-fleet-command")
    finally:
        server.stop()
