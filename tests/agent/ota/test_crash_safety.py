"""SIGKILL the installer at every persisted state, restart, and check the box runs a healthy model.

The installer process is real (a subprocess); ``EDGE_AGENT_OTA_FAULT=<point>`` makes it SIGKILL itself
right after persisting ``<point>``. The restart is what the daemon does: ``on_start()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.release import parse_manifest
from agent.ota import FAULT_POINTS
from agent.ota.health import run_health_check
from tests.agent.ota.conftest import World

REPO_ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import sys, warnings
warnings.filterwarnings("ignore")
from pathlib import Path
from agent.ota import Installer, OtaConfig
inst = Installer(OtaConfig.model_validate_json(Path(sys.argv[1]).read_text()))
inst.install_path(Path(sys.argv[3]))
if sys.argv[2] == "commit":
    inst.commit()
else:
    inst.on_start()
    inst.report_unhealthy("test")
"""

# point -> (scenario, version active after the restart)
EXPECTED = {
    "downloading": ("commit", "1.0.0"),
    "downloaded_one": ("commit", "1.0.0"),
    "verified": ("commit", "1.0.0"),
    "installed": ("commit", "1.0.0"),
    "health_checked": ("commit", "1.1.0"),  # passed its check: the restart completes the switch
    "trial": ("commit", "1.1.0"),
    "committed": ("commit", "1.1.0"),
    "rolled_back": ("unhealthy", "1.0.0"),
}


def run_installer(world: World, scenario: str, bundle: Path, fault: str = "") -> int:
    cfg = world.tmp / "ota-config.json"
    cfg.write_text(world.config.model_dump_json())
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), EDGE_AGENT_OTA_FAULT=fault)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cfg), scenario, str(bundle)],
        check=False,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
    )
    return proc.returncode


def assert_healthy_active(world: World) -> str:
    inst = world.installer()
    model = inst.on_start()
    state = inst.state()
    assert model is not None and state.active is not None and state.active.health_passed
    slot = inst.slot_dir(state.active.slot)
    assert model == slot / state.active.model
    run_health_check(slot, parse_manifest((slot / "release.json").read_bytes()))  # raises if not healthy
    assert state.pending is None
    return state.active.version


def test_every_point_is_covered() -> None:
    assert set(EXPECTED) == set(FAULT_POINTS)


@pytest.mark.parametrize("point", list(EXPECTED))
def test_sigkill_at_every_state(committed_world: World, model_b: Path, point: str) -> None:
    scenario, expected_version = EXPECTED[point]
    committed_world.release("1.1.0", model=model_b)
    bundle = committed_world.bundle("r2")
    rc = run_installer(committed_world, scenario, bundle, fault=point)
    assert rc == -signal.SIGKILL, f"installer did not reach {point}"
    assert assert_healthy_active(committed_world) == expected_version
    # and the box can carry on: finishing the update (again) ends on the new release, healthy
    inst = committed_world.installer()
    state = inst.state()
    if state.trial is not None:
        inst.commit()
    elif state.active.version == "1.0.0" and point != "rolled_back":
        assert run_installer(committed_world, "commit", bundle) == 0
        assert assert_healthy_active(committed_world) == "1.1.0"
