"""`edge-agent ota ...` through the real command line: `--config` before or after the sub-command, and a
configuration without an `mqtt` section (a box updated only by hand or from USB sticks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from agent.cli import main
from tests.agent.ota.conftest import World


def write_config(world: World, path: Path, **extra: object) -> Path:
    document = {"ota": world.config.model_dump(mode="json"), **extra}
    path.write_text(yaml.safe_dump(document))
    return path


def test_ota_config_without_mqtt_before_or_after_the_sub_command(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(world, tmp_path / "config.yaml")
    world.release("1.0.0")
    bundle = world.bundle("r1")
    assert main(["ota", "install", "--config", str(config), str(bundle)]) == 0
    capsys.readouterr()
    assert main(["ota", "status", "--json", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["active"]["version"] == "1.0.0"
    assert main(["ota", "--config", str(config), "status", "--json"]) == 0  # before it, as ever
    assert json.loads(capsys.readouterr().out)["active"]["version"] == "1.0.0"


def test_the_rest_of_the_file_is_still_checked(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(world, tmp_path / "config.yaml", spool={"max_bytez": 1})
    assert main(["ota", "status", "--config", str(config)]) == 2
    assert "max_bytez" in capsys.readouterr().err
    config = tmp_path / "no-ota.yaml"
    config.write_text("logging: {level: info}\n")
    assert main(["ota", "status", "--config", str(config)]) == 2
    assert "no 'ota' section" in capsys.readouterr().err
