"""A drive plugged in while a release is on probation (issue 31, defect 9): its bundle is verified, copied
to the box and queued; it installs when the trial commits or rolls back, verified again then.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any, Dict

import pytest

from agent.ota import InProbation, Installer
from agent.ota.push import Decision, decide_push
from agent.ota.state import Queued
from agent.protocol import ModelPush, ReleaseRef
from tests.agent.ota.conftest import TINY_MODEL, World, flip_byte, serve_directory, target_files
from tests.agent.ota.test_probation import _cli


def _trial_and_drive(w: World, model_b: Path, model_c: Path, tar: bool = False) -> Path:
    """1.1.0 (#2) on probation; 1.2.0 (#3) as a bundle on a 'drive' (a directory the test can unplug)."""
    w.release("1.1.0", model=model_b)
    w.installer().install_path(w.bundle("r2"))
    w.release("1.2.0", model=model_c)
    bundle = w.bundle("r3", tar=tar)
    drive = w.tmp / "drive" / bundle.name
    drive.parent.mkdir()
    if tar:
        shutil.copyfile(bundle, drive)
    else:
        shutil.copytree(bundle, drive)
    return drive


def _status(w: World, capsys: pytest.CaptureFixture[str]) -> Dict[str, Any]:
    capsys.readouterr()
    assert _cli(w, "status", "--json") == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("tar", [False, True], ids=["directory", "tar"])
def test_a_drive_plugged_in_during_probation_is_queued_then_installed_after_the_commit(
    committed_world: World, model_b: Path, model_c: Path, capsys: pytest.CaptureFixture[str], tar: bool
) -> None:
    w = committed_world
    drive = _trial_and_drive(w, model_b, model_c, tar)
    capsys.readouterr()
    assert _cli(w, "install", str(drive)) == 0  # was: exit 4, "commit or roll back first"
    out = capsys.readouterr().out
    assert "queued: widget 1.2.0 #3" in out and "the drive can be removed" in out
    inst = w.installer()
    state = inst.state()
    assert state.active is not None and state.active.version == "1.1.0" and state.trial is not None
    assert state.queued is not None and state.queued.release["version"] == "1.2.0"
    assert state.last is not None and state.last["kind"] == "queued"
    shutil.rmtree(drive.parent)  # the drive is unplugged
    status = _status(w, capsys)
    assert status["queued"]["release"] == {"name": "widget", "version": "1.2.0", "counter": 3}
    assert _cli(w, "status") == 0
    assert "queued      widget 1.2.0 #3" in capsys.readouterr().out
    assert _cli(w, "commit") == 0
    out = capsys.readouterr().out
    assert "committed widget 1.1.0 #2" in out and "installing the queued release widget 1.2.0 #3" in out
    state = inst.state()
    assert state.active is not None and state.active.version == "1.2.0" and state.trial is not None
    assert state.known_good is not None and state.known_good.version == "1.1.0" and state.floor == 2
    assert state.queued is None and list(inst.queue_dir.iterdir()) == []


def test_queued_events_in_json(committed_world: World, model_b: Path, model_c: Path, capsys: Any) -> None:
    drive = _trial_and_drive(committed_world, model_b, model_c)
    capsys.readouterr()
    assert _cli(committed_world, "install", "--json", str(drive)) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "queued" and events[-1]["release"]["version"] == "1.2.0"
    assert "the drive can be removed" in events[-1]["detail"]


def test_a_bundle_is_verified_before_it_is_queued(
    committed_world: World, model_b: Path, model_c: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drive = _trial_and_drive(committed_world, model_b, model_c)
    flip_byte(target_files(drive, ".model.onnx")[0])
    capsys.readouterr()
    assert _cli(committed_world, "install", str(drive)) == 2
    assert "hash_mismatch" in capsys.readouterr().err
    inst = committed_world.installer()
    assert inst.state().queued is None and list(inst.queue_dir.iterdir()) == []


def test_a_queued_bundle_is_verified_again_before_it_is_installed(
    committed_world: World, model_b: Path, model_c: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy on the box could be changed while it waits: what installs is verified then, not trusted."""
    w = committed_world
    drive = _trial_and_drive(w, model_b, model_c)
    inst = w.installer()
    assert isinstance(inst.install_or_queue(drive), Queued)
    queued = inst.state().queued
    assert queued is not None
    flip_byte(target_files(inst.queue_dir / queued.bundle, ".model.onnx")[0])
    capsys.readouterr()
    assert _cli(w, "commit") == 2  # committed, then the queued release refused
    err = capsys.readouterr().err
    assert "queued release" in err and "hash_mismatch" in err
    state = inst.state()
    assert state.active is not None and state.active.version == "1.1.0" and state.trial is None
    assert state.queued is None and state.last is not None and state.last["reason"] == "hash_mismatch"


def test_a_queued_release_is_held_to_the_floor_of_its_install_time(committed_world: World, model_b: Path) -> None:
    """Queued at floor 1 (fine then); the trial commits #3 and raises the floor: #2 is stale by then."""
    w = committed_world
    w.release("1.1.0", counter=3, model=model_b)
    inst = w.installer()
    inst.install_path(w.bundle("r3"))
    w.release("1.0.5", counter=2, model=TINY_MODEL)
    queued = inst.install_or_queue(w.bundle("r2"))
    assert isinstance(queued, Queued) and queued.release["counter"] == 2
    inst.commit()
    with pytest.raises(Exception) as info:
        inst.install_queued()
    assert getattr(info.value, "reason", "") == "below_floor"
    state = inst.state()
    assert state.active is not None and state.active.counter == 3 and state.floor == 3 and state.queued is None


def test_one_bundle_is_queued_at_a_time_the_newest_release(
    committed_world: World, model_b: Path, model_c: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = committed_world
    drive = _trial_and_drive(w, model_b, model_c)  # 1.2.0 (#3)
    inst = w.installer()
    inst.install_or_queue(drive)
    w.release("1.3.0", counter=5, model=model_b)
    inst.install_or_queue(w.bundle("r5"))  # #5, signed later, replaces #3, whose copy goes
    queued = inst.state().queued
    assert queued is not None and queued.release["counter"] == 5
    assert [p.name for p in inst.queue_dir.iterdir()] == [queued.bundle]
    w.release("1.2.5", counter=4, model=model_c)  # signed after #5, but an older release
    capsys.readouterr()
    assert _cli(w, "install", str(w.bundle("r4"))) == 4  # refused, and said why
    assert "widget 1.2.5 (#4) is not queued: widget 1.3.0 (#5) is queued already" in capsys.readouterr().err
    assert _cli(w, "dequeue") == 0
    assert "dropped widget 1.3.0 #5" in capsys.readouterr().out
    assert inst.state().queued is None and list(inst.queue_dir.iterdir()) == []


def test_the_release_on_probation_itself_is_not_queued(
    committed_world: World, model_b: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = committed_world
    w.release("1.1.0", model=model_b)
    bundle = w.bundle("r2")
    inst = w.installer()
    inst.install_path(bundle)
    active = inst.install_or_queue(bundle)  # the same stick again
    assert active == inst.state().active and inst.state().queued is None
    assert w.kinds()[-1] == "already_active"


def test_a_url_install_during_probation_is_refused(
    committed_world: World, model_b: Path, model_c: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An online repository can be read again after the trial: nothing to keep, so no queue."""
    w = committed_world
    w.release("1.1.0", model=model_b)
    w.installer().install_path(w.bundle("r2"))
    w.release("1.2.0", model=model_c)
    with serve_directory(w.repo_path) as url:
        capsys.readouterr()
        assert _cli(w, "install", url + "/") == 4
    assert "is in probation" in capsys.readouterr().err
    with pytest.raises(InProbation), serve_directory(w.repo_path) as url:
        w.installer().install_url(url)


def test_a_queued_install_interrupted_twice_is_dropped(committed_world: World, model_b: Path, model_c: Path) -> None:
    """A bundle whose install kills the daemon every time must not do so for ever."""
    w = committed_world
    inst = w.installer()
    inst.install_or_queue(_trial_and_drive(w, model_b, model_c))
    inst.commit()
    state = inst.state()
    assert state.queued is not None
    state.queued.attempts = 2  # two attempts began and never finished (killed)
    inst.state_file.store(state)
    assert inst.install_queued() is None
    state = inst.state()
    assert state.queued is None and state.active is not None and state.active.version == "1.1.0"
    assert state.last is not None and state.last["reason"] == "interrupted"
    assert list(inst.queue_dir.iterdir()) == []


def test_a_copy_interrupted_while_queueing_is_cleaned_at_start(committed_world: World) -> None:
    inst = committed_world.installer()
    leftover = inst.queue_dir / ".incoming-x1" / "bundle"
    leftover.mkdir(parents=True)
    (leftover / "bundle.json").write_text("{}")
    inst.on_start()
    assert list(inst.queue_dir.iterdir()) == []


def test_pushes_wait_for_the_queued_bundle(committed_world: World, model_b: Path, model_c: Path) -> None:
    """MQTT pushes during probation were already deferred; the queued bundle goes first after it."""
    w = committed_world
    inst = w.installer()
    inst.install_or_queue(_trial_and_drive(w, model_b, model_c))
    push = ModelPush(
        release=ReleaseRef(name="widget", version="2.0.0", counter=9),
        channel="stable",
        bundle_sha256="0" * 64,
        bundle_size=1,
        urls=["https://updates.example/repo/"],
        published_at=dt.datetime.now(dt.timezone.utc),
    )
    assert decide_push(push, inst.state(), "stable", {}) == Decision.DEFER
    inst.commit()
    state = inst.state()
    assert state.trial is None and state.queued is not None
    assert decide_push(push, state, "stable", {}) == Decision.DEFER  # the queued bundle first
    inst.install_queued()
    assert decide_push(push, inst.state(), "stable", {}) == Decision.DEFER  # now its trial


def test_install_or_queue_installs_when_nothing_is_on_probation(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    inst: Installer = committed_world.installer()
    record = inst.install_or_queue(committed_world.bundle("r2"))
    assert inst.state().active == record and inst.state().queued is None
    assert inst.dequeue() is None  # nothing queued: nothing to drop
