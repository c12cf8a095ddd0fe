"""agent/app/reload.py plan_reload: what a SIGHUP changes, decided from the two configurations alone (pure).

The daemon-level reload (signals, cameras really restarted) is in tests/agent/daemon/test_daemon_broker.py;
these are the decisions, table-driven.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest

from agent.app.reload import plan_reload
from agent.config import AgentConfig, load_config
from tests.agent.daemon.helpers import config_dict, synthetic_camera, write_config

Change = Callable[[Dict[str, Any]], None]


def base(tmp_path: Path) -> Dict[str, Any]:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read by the plan")
    return config_dict(tmp_path, 1883, model, [synthetic_camera("a"), synthetic_camera("b", seed=2)])


def load(tmp_path: Path, data: Dict[str, Any], name: str) -> AgentConfig:
    return load_config(write_config(tmp_path / name, data), environ={})


def set_in(path: Tuple[Any, ...], value: Any) -> Change:
    def change(data: Dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        node[path[-1]] = value

    return change


def other_model(data: Dict[str, Any]) -> None:
    new = Path(data["model"]["path"]).with_name("other.onnx")
    new.write_bytes(b"x")
    data["model"]["path"] = str(new)


def add_camera(data: Dict[str, Any]) -> None:
    data["cameras"].append(synthetic_camera("c", seed=3))


def drop_camera(data: Dict[str, Any]) -> None:
    data["cameras"] = [c for c in data["cameras"] if c["name"] != "b"]


def disable_camera(data: Dict[str, Any]) -> None:
    data["cameras"][1]["enabled"] = False


# (id, change, needs_restart, removed, added, replaced, rules_changed)
CASES = [
    ("nothing", lambda d: None, (), (), (), (), ()),
    ("log level only", set_in(("logging", "level"), "debug"), (), (), (), (), ()),
    ("thresholds only", set_in(("model", "conf_threshold"), 0.6), (), (), (), (), ()),
    ("mqtt host", set_in(("mqtt", "host"), "broker.example"), ("mqtt",), (), (), (), ()),
    ("spool", set_in(("spool", "synchronous"), "FULL"), ("spool",), (), (), (), ()),
    ("model path", other_model, ("model",), (), (), (), ()),
    ("state dir", set_in(("daemon", "state_dir"), "/tmp/elsewhere"), ("daemon.state_dir",), (), (), (), ()),
    ("camera added", add_camera, (), (), ("c",), (), ()),
    ("camera removed", drop_camera, (), ("b",), (), (), ()),
    ("camera disabled", disable_camera, (), ("b",), (), (), ()),
    ("camera source changed", set_in(("cameras", 0, "source", "seed"), 9), (), (), (), ("a",), ()),
    ("camera fps changed", set_in(("cameras", 1, "fps_limit"), 2.0), (), (), (), ("b",), ()),
    (
        "camera rules only",
        set_in(("cameras", 0, "rules", "alerts", 0, "min_confidence"), 0.8),
        (),
        (),
        (),
        (),
        ("a",),
    ),
]


@pytest.mark.parametrize(
    "change, needs_restart, removed, added, replaced, rules_changed",
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_plan_reload(
    tmp_path: Path,
    change: Change,
    needs_restart: Tuple[str, ...],
    removed: Tuple[str, ...],
    added: Tuple[str, ...],
    replaced: Tuple[str, ...],
    rules_changed: Tuple[str, ...],
) -> None:
    data = base(tmp_path)
    old = load(tmp_path, data, "old.yaml")
    changed = copy.deepcopy(data)
    change(changed)
    new = load(tmp_path, changed, "new.yaml")

    plan = plan_reload(old, new)

    assert plan.needs_restart == needs_restart
    assert plan.removed == removed
    assert tuple(c.name for c in plan.added) == added
    assert tuple(c.name for c in plan.replaced) == replaced
    assert tuple(c.name for c in plan.rules_changed) == rules_changed


def test_restart_only_sections_keep_their_running_values_and_the_rest_takes_the_new_ones(tmp_path: Path) -> None:
    data = base(tmp_path)
    old = load(tmp_path, data, "old.yaml")
    changed = copy.deepcopy(data)
    for change in (
        set_in(("mqtt", "host"), "broker.example"),
        other_model,
        set_in(("model", "conf_threshold"), 0.6),
        set_in(("daemon", "state_dir"), str(tmp_path / "elsewhere")),
        set_in(("daemon", "status_interval_s"), 3.0),
        set_in(("logging", "level"), "debug"),
    ):
        change(changed)
    new = load(tmp_path, changed, "new.yaml")

    plan = plan_reload(old, new)

    assert set(plan.needs_restart) == {"mqtt", "model", "daemon.state_dir"}
    in_force = plan.config
    assert in_force.mqtt == old.mqtt  # needs a restart: the running value stays
    assert in_force.model.path == old.model.path and in_force.model.backend == old.model.backend
    assert in_force.daemon.state_dir == old.daemon.state_dir
    assert in_force.model.conf_threshold == 0.6  # applied at once
    assert in_force.daemon.status_interval_s == 3.0
    assert in_force.logging.level == "debug"
    assert old.mqtt.host == "127.0.0.1"  # the plan changed neither input
