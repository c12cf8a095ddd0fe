"""A staged rollout for real: a real mosquitto, two agent daemons (one in the canary group, one not) on a
signed release 1.0.0, the ingest service filling the registry from their statuses and OTA reports, and
`edge-trainer rollout` pushing 1.1.0 to the canary in chunks over the agent's group topic.

A canary whose install fails halts the rollout; an operator's halt after the canary committed sends it the
conditional rollback and it returns to 1.0.0; the device outside the canary never installs 1.1.0."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.ota.config import ModelUpdatesConfig
from tests.agent.daemon.helpers import InProcessDaemon, config_dict, wait_for, write_config
from tests.agent.ota import conftest as ota_fixtures
from tests.agent.ota.conftest import TINY_MODEL, World
from tests.trainer import helpers as h
from trainer.cli import main
from trainer.rollout.state import RolloutStore

pytestmark = [pytest.mark.trainer, pytest.mark.broker]

_keys_template = ota_fixtures._keys_template
world = ota_fixtures.world
committed_world = ota_fixtures.committed_world
model_b = ota_fixtures.model_b
FAST = ModelUpdatesConfig(tick_s=0.1, retry_initial_s=0.5, chunk_stall_s=1.0, health_grace_s=0.5)


def device_config(w: World, broker, name: str, groups, period_s: float = 1.0) -> Path:
    state = w.tmp / name
    if not (state / "ota").exists():  # each device starts from the committed 1.0.0 install
        shutil.copytree(w.config.state_dir, state / "ota")
    ota = json.loads(w.config.model_dump_json())
    ota["state_dir"] = str(state / "ota")
    ota["probation"]["period_s"] = period_s
    data = config_dict(state, broker.port, TINY_MODEL, [], ota=ota, daemon={"health_min_fps": 0.0})
    data["mqtt"].update({"site": "plant-1", "device": name, "groups": groups})
    return write_config(state / "config.yaml", data)


def trainer_yaml(tmp_path: Path, broker) -> Path:
    config = h.trainer_config(tmp_path, broker.port)
    data = config.model_dump(mode="json", exclude_none=True)
    data["rollout"] = {
        "state_dir": str(tmp_path / "rollouts"),
        "site": "plant-1",
        "broker": {"host": "127.0.0.1", "port": broker.port},
        "chunk_size": 64 * 1024,
        "stages": [
            {"name": "canary", "group": "canary", "min_committed": 1, "watch_s": 0},
            {"name": "fleet", "group": None, "min_committed": 2, "watch_s": 0},
        ],
        "tick_s": 0.2,
    }
    path = tmp_path / "trainer.yaml"
    path.write_text(__import__("yaml").safe_dump(data))
    return path


def active(d: InProcessDaemon):
    return d.daemon.parts.installer.state().active.version


def registry_phase(config, device):
    from trainer.store import fleet, open_reader

    rows = {r.device: r for r in fleet(open_reader(config.store.index_path), now=0)}
    row = rows.get(device)
    return (row.ota_phase, (row.ota_release or {}).get("version")) if row else (None, None)


def registered(config):
    from trainer.store import fleet, open_reader

    return {r.device: r.groups for r in fleet(open_reader(config.store.index_path), now=0) if r.model_version}


def run_rollout(tmp_path, broker, w, bundle, scenario):
    path = trainer_yaml(tmp_path, broker)
    config = h.trainer_config(tmp_path, broker.port)
    with h.running_service(config), InProcessDaemon(
        device_config(w, broker, "canary1", ["canary"]), model_updates=FAST
    ) as canary, InProcessDaemon(device_config(w, broker, "other1", []), model_updates=FAST) as other:
        wait_for(lambda: registered(config) == {"canary1": ("canary",), "other1": ()}, 30, "both devices registered")
        assert main(["rollout", "start", "--bundle", str(bundle), "--config", str(path)]) == 0
        scenario(path, config, canary, other)
        assert active(other) == "1.0.0" and other.daemon.parts.updates.installs == 0  # never saw 1.1.0


def test_a_canary_whose_install_fails_halts_the_rollout(committed_world, broker, model_b, tmp_path, capsys):
    w = committed_world
    w.release("1.1.0", model=model_b, expected_override={0: [{"xyxy": [0, 0, 5, 5], "class_id": 0, "confidence": 0.9}]})
    bundle = w.bundle("bad", trust="online", tar=True)

    def scenario(path, config, canary, other):
        wait_for(lambda: registry_phase(config, "canary1")[0] in ("failed", "rolled_back"), 90, "canary's failure")
        assert main(["rollout", "watch", "--config", str(path), "--max-minutes", "1"]) == 1  # halted
        state = RolloutStore(tmp_path / "rollouts").current()
        assert state["state"] == "halted" and "canary1: OTA" in state["halt"]["reasons"][0]
        assert active(canary) == "1.0.0"

    run_rollout(tmp_path, broker, w, bundle, scenario)


def test_halt_after_the_canary_committed_rolls_it_back(committed_world, broker, model_b, tmp_path, capsys):
    w = committed_world
    w.release("1.1.0", model=model_b)
    bundle = w.bundle("good", trust="online", tar=True)

    def scenario(path, config, canary, other):
        wait_for(
            lambda: active(canary) == "1.1.0" and canary.daemon.parts.installer.state().trial is None,
            90,
            "the canary committed 1.1.0",
        )
        wait_for(lambda: registry_phase(config, "canary1") == ("committed", "1.1.0"), 30, "registry: committed")
        wait_for(lambda: canary.daemon.live.pipeline.model.version == "1.1.0", 30, "canary serving 1.1.0")
        assert main(["rollout", "status", "--config", str(path)]) == 0
        assert main(["rollout", "halt", "--reason", "test: false alarms", "--config", str(path)]) == 0
        wait_for(lambda: active(canary) == "1.0.0", 60, "the canary rolled back by the halt")
        # the halt is repeated on every tick, and the conditional rollback keeps the canary where it is now
        assert main(["rollout", "watch", "--config", str(path), "--max-minutes", "1"]) == 1
        wait_for(lambda: canary.daemon.live.pipeline.model.version == "1.0.0", 30, "canary serving 1.0.0 again")
        assert active(canary) == "1.0.0"

    run_rollout(tmp_path, broker, w, bundle, scenario)
