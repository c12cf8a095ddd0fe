"""Probation across restarts (issue 31, defects 6 and 8): a power loss is not a crash, a crash still is, and
probation is the release's running time in the daemon, counted from when a daemon serves it.

The boot id is the seam: ``Installer(boot_id=...)`` in process, ``EDGE_AGENT_BOOT_ID_FILE`` in a child.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional

import pytest

from agent.ota import Installer
from agent.ota.installer import BOOT_ID_ENV
from tests.agent.ota.conftest import World
from tests.agent.ota.test_probation import _cli

REPO = Path(__file__).resolve().parents[3]


class Machine:
    """The box's kernel boot (a reboot gives a new id) and its wall clock."""

    def __init__(self) -> None:
        self.boot: Optional[str] = "boot-1"
        self.now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)

    def installer(self, world: World) -> Installer:
        return world.installer(boot_id=lambda: self.boot, now=lambda: self.now)

    def run(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _on_trial(world: World, model_b: Path, machine: Machine) -> Installer:
    world.release("1.1.0", model=model_b)
    inst = machine.installer(world)
    inst.install_path(world.bundle("r2"))
    assert inst.state().trial is not None
    world.events.clear()
    return inst


def test_a_power_loss_is_not_a_crash(committed_world: World, model_b: Path, machine: Machine) -> None:
    inst = _on_trial(committed_world, model_b, machine)
    inst.on_start()  # the daemon serves 1.1.0
    for n, boot in enumerate(("boot-2", "boot-3"), start=1):  # two power cuts: the crash-loop rollback
        machine.boot = boot
        inst.on_start()
        trial = inst.state().trial
        assert trial is not None and (trial.crashes, trial.power_losses) == (0, n)
        assert trial.boot_id == boot and trial.running
    state = inst.state()
    assert state.active is not None and state.active.version == "1.1.0" and state.bad == []
    power = [e for e in committed_world.events if e.reason == "power_loss"]
    assert len(power) == 2 and power[-1].kind == "trial" and "power loss 2 of 5" in (power[-1].detail or "")
    assert power[-1].phase == "probation"  # reported to the fleet as probation goes on


def test_an_unclean_end_on_the_same_boot_is_still_a_crash(
    committed_world: World, model_b: Path, machine: Machine
) -> None:
    """A SIGKILL, an abort or a watchdog kill leaves the machine up: the same boot id."""
    inst = _on_trial(committed_world, model_b, machine)
    inst.on_start()
    inst.on_start()
    assert inst.state().trial.crashes == 1  # type: ignore[union-attr]
    inst.on_start()
    state = inst.state()
    assert state.trial is None and state.active is not None and state.active.version == "1.0.0"
    assert len(state.bad) == 1 and committed_world.events[-1].reason == "crash_loop"


def test_an_unknown_boot_counts_as_a_crash(committed_world: World, model_b: Path, machine: Machine) -> None:
    """Without a boot id (not Linux, /proc unreadable) a power loss cannot be told apart: the old rule."""
    inst = _on_trial(committed_world, model_b, machine)
    machine.boot = None
    inst.on_start()
    machine.boot = "boot-2"
    inst.on_start()
    trial = inst.state().trial
    assert trial is not None and (trial.crashes, trial.power_losses) == (1, 0)


def test_power_losses_in_a_row_end_the_trial_without_marking_the_release_bad(
    committed_world: World, model_b: Path, machine: Machine
) -> None:
    inst = _on_trial(committed_world, model_b, machine)
    inst.on_start()
    for i in range(5):  # max_power_losses
        machine.boot = f"boot-{i + 2}"
        inst.on_start()
    state = inst.state()
    assert state.trial is None and state.active is not None and state.active.version == "1.0.0"
    assert state.bad == []  # not the model's crash: it may be installed again
    assert committed_world.kinds()[-1] == "rolled_back" and committed_world.events[-1].reason == "power_loss"
    assert inst.install_path(committed_world.tmp / "bundles" / "r2").version == "1.1.0"  # type: ignore[union-attr]


def test_probation_is_the_running_time_of_clean_runs_and_the_current_one(
    committed_world: World, model_b: Path, machine: Machine
) -> None:
    inst = _on_trial(committed_world, model_b, machine)
    machine.run(3600)  # installed, but no daemon served it for an hour: no probation served
    inst.on_start()
    machine.run(300)
    inst.mark_clean_shutdown()  # 300 s served
    machine.run(7200)  # switched off for two hours
    inst.on_start()
    machine.run(200)
    assert not inst.maybe_commit()  # 500 of 600 s
    machine.boot = "boot-2"  # the power goes 200 s into this run ...
    inst.on_start()  # ... those 200 s are lost (how long that run lasted is unknown)
    machine.run(299)
    assert not inst.maybe_commit()  # 599 s
    machine.run(2)
    assert inst.maybe_commit()
    assert inst.state().known_good.version == "1.1.0"  # type: ignore[union-attr]


def test_a_trial_begun_while_the_daemon_ran_starts_when_the_daemon_serves_it(
    committed_world: World, model_b: Path, machine: Machine
) -> None:
    """`edge-agent ota install` switches while the daemon runs the old model: the trial's first run is the one
    that swaps the new model in (mark_serving), and a crash after that counts."""
    daemon = machine.installer(committed_world)
    daemon.on_start()  # the daemon runs 1.0.0, nothing on trial
    cli = _on_trial(committed_world, model_b, machine)  # another process installs 1.1.0
    trial = cli.state().trial
    assert trial is not None and (trial.starts, trial.running, trial.serving_since) == (0, False, None)
    machine.run(45)  # the daemon has not swapped yet: no probation served
    assert daemon.mark_serving(trial.slot)
    assert not daemon.mark_serving(trial.slot)  # once per run
    trial = daemon.state().trial
    assert trial is not None and (trial.starts, trial.running, trial.boot_id) == (1, True, "boot-1")
    assert trial.serving_since == machine.now.isoformat()
    machine.run(60)
    daemon.on_start()  # the daemon died (same boot): a crash of the trial it served
    assert daemon.state().trial.crashes == 1  # type: ignore[union-attr]


def test_a_daemon_that_died_before_serving_the_trial_did_not_crash_it(
    committed_world: World, model_b: Path, machine: Machine
) -> None:
    daemon = machine.installer(committed_world)
    daemon.on_start()
    _on_trial(committed_world, model_b, machine)
    daemon.on_start()  # killed before it swapped: the release never ran
    trial = daemon.state().trial
    assert trial is not None and (trial.crashes, trial.starts) == (0, 1)


def test_ota_status_reports_power_losses(
    committed_world: World, model_b: Path, machine: Machine, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = _on_trial(committed_world, model_b, machine)
    inst.on_start()
    machine.boot = "boot-2"
    inst.on_start()
    capsys.readouterr()
    assert _cli(committed_world, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["probation"]["power_losses"] == 1 and status["probation"]["crashes"] == 0
    assert status["last"]["kind"] == "trial"
    assert _cli(committed_world, "status") == 0
    assert "crashes 0, power losses 1" in capsys.readouterr().out


CHILD = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from agent.ota import Installer, OtaConfig
Installer(OtaConfig.model_validate_json({config!r})).on_start()
os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer or systemd's watchdog would
"""


def _killed_start(world: World, boot_file: Path) -> None:
    code = CHILD.format(repo=str(REPO), config=world.config.model_dump_json())
    env = {**os.environ, BOOT_ID_ENV: str(boot_file)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def test_killed_processes_on_one_boot_and_across_a_reboot(
    committed_world: World, model_b: Path, tmp_path: Path
) -> None:
    """Real processes killed with SIGKILL; the boot id read from a file through the environment seam."""
    committed_world.release("1.1.0", model=model_b)
    committed_world.installer().install_path(committed_world.bundle("r2"))
    boot = tmp_path / "boot_id"
    boot.write_text("11111111-aaaa\n")
    _killed_start(committed_world, boot)  # serves the trial, killed
    _killed_start(committed_world, boot)  # the same boot: crash 1
    boot.write_text("22222222-bbbb\n")  # the machine lost power and booted again
    _killed_start(committed_world, boot)
    trial = committed_world.installer().state().trial
    counts: List[Any] = [None if trial is None else (trial.crashes, trial.power_losses, trial.boot_id)]
    assert counts == [(1, 1, "22222222-bbbb")]


@pytest.fixture
def machine() -> Machine:
    return Machine()
