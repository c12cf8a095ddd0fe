"""Health check, probation, commit, rollback, garbage collection, resume, status and the CLI handlers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.core.release import parse_manifest
from agent.ota import HealthCheckFailed, StateError
from agent.ota.cli import add_parser, run
from agent.ota.health import run_health_check
from tests.agent.ota.conftest import World, target_files


def test_wrong_expected_box_fails_health_check(committed_world: World, model_b: Path) -> None:
    committed_world.release(
        "1.1.0",
        model=model_b,
        expected_override={0: [{"xyxy": [5.0, 5.0, 40.0, 40.0], "class_id": 1, "confidence": 0.9}]},
    )
    inst = committed_world.installer()
    before = inst.state().active
    with pytest.raises(HealthCheckFailed) as info:
        inst.install_path(committed_world.bundle("bad-health"))
    assert any("golden image 0" in p for p in info.value.problems)
    state = inst.state()
    assert state.active == before and state.trial is None and len(state.bad) == 1
    assert committed_world.kinds()[-1] == "rejected"
    assert committed_world.events[-1].reason == "health_check_failed"
    # the same release is not retried automatically
    committed_world.events.clear()
    with pytest.raises(Exception) as again:
        inst.install_path(committed_world.tmp / "bundles" / "bad-health")
    assert getattr(again.value, "reason", "") == "known_bad"


def test_latency_limit(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b, max_latency_ms=0.0001)
    with pytest.raises(HealthCheckFailed, match="latency"):
        committed_world.installer().install_path(committed_world.bundle("slow"))


def test_health_check_of_installed_slot_passes(committed_world: World) -> None:
    inst = committed_world.installer()
    active = inst.state().active
    assert active is not None
    slot = inst.slot_dir(active.slot)
    report = run_health_check(slot, parse_manifest((slot / "release.json").read_bytes()))
    assert report.passed and report.latency_ms is not None


def test_crashes_during_probation_roll_back(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    inst = committed_world.installer()
    old = inst.state().active
    inst.install_path(committed_world.bundle("r2"))
    assert inst.on_start() is not None  # start 1 of the new model: fine
    assert inst.state().trial is not None and inst.state().active.version == "1.1.0"
    inst.on_start()  # previous run never shut down cleanly: crash 1
    assert inst.state().trial.crashes == 1
    path = inst.on_start()  # crash 2 = max_crashes: back to the known-good release
    state = inst.state()
    assert state.active == old and state.trial is None and state.floor == 1
    assert path == inst.slot_dir(old.slot) / old.model
    assert committed_world.kinds()[-1] == "rolled_back" and committed_world.events[-1].reason == "crash_loop"


def test_clean_restarts_do_not_count(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    inst = committed_world.installer()
    inst.install_path(committed_world.bundle("r2"))
    for _ in range(4):
        inst.on_start()
        inst.mark_clean_shutdown()
    assert inst.state().trial.crashes == 0


def test_unhealthy_metrics_roll_back(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    inst = committed_world.installer()
    inst.install_path(committed_world.bundle("r2"))
    inst.on_start()
    assert inst.report_unhealthy("fps below 1")
    assert inst.state().active.version == "1.0.0"
    assert not inst.report_unhealthy("again")  # nothing in probation any more


def test_commit_after_period_raises_floor_and_gc(committed_world: World, model_b: Path) -> None:
    import datetime as dt

    clock = [dt.datetime.now(dt.timezone.utc)]
    inst = committed_world.installer(now=lambda: clock[0])
    for i, version in enumerate(["1.1.0", "1.2.0", "1.3.0"]):
        committed_world.release(version, model=model_b)
        bundle = committed_world.bundle(f"v{i}")
        inst.install_path(bundle)
        with pytest.raises(StateError):  # one release in probation at a time
            inst.install_path(bundle)
        assert not inst.maybe_commit()
        clock[0] += dt.timedelta(seconds=601)
        assert inst.maybe_commit()
    state = inst.state()
    assert state.floor == 4 and state.known_good.version == "1.3.0" and state.previous.version == "1.2.0"
    assert len(list(inst.slots_dir.iterdir())) == 2  # active (= known good) and previous; older ones deleted
    # manual rollback goes to the previous release
    assert inst.rollback().version == "1.2.0"


def test_conditional_rollback_acts_once(committed_world: World, model_b: Path) -> None:
    """A rollout's halt names the release to leave: repeating it must not flip the device back to it."""
    committed_world.release("1.1.0", model=model_b)
    inst = committed_world.installer()
    inst.install_path(committed_world.bundle("r2"))
    assert inst.state().active.version == "1.1.0"
    assert inst.rollback_if_active("widget", 1, "halt") is None  # 1.0.0 (#1) is not the active one: nothing
    assert inst.state().active.version == "1.1.0"
    back = inst.rollback_if_active("widget", 2, "rollout halted")
    assert back is not None and back.version == "1.0.0" and inst.state().active.version == "1.0.0"
    assert inst.rollback_if_active("widget", 2, "rollout halted") is None  # repeated: still on 1.0.0
    assert inst.state().active.version == "1.0.0"


def test_interrupted_download_resumes(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    bundle = committed_world.bundle("r2")
    inst = committed_world.installer()
    # simulate a download cut after 1000 bytes: the .part file in staging is picked up again
    model = target_files(bundle, ".model.onnx")[0]
    staging = inst.staging_dir / "files"
    staging.mkdir(parents=True)
    sha = model.name.split(".")[0]
    (staging / f"{sha}.model.onnx.part").write_bytes(model.read_bytes()[:1000])
    assert inst.install_path(bundle).version == "1.1.0"
    # a corrupt partial download is caught by the hash check and the attempt rejected, not installed
    committed_world.release("1.2.0", model=model_b)
    b3 = committed_world.bundle("r3")
    inst.commit()
    sha3 = target_files(b3, ".model.onnx")[0].name.split(".")[0]
    staging.mkdir(parents=True, exist_ok=True)
    (staging / f"{sha3}.model.onnx.part").write_bytes(b"\0" * 1000)
    with pytest.raises(Exception) as info:
        inst.install_path(b3)
    assert getattr(info.value, "reason", "") == "hash_mismatch"
    assert inst.install_path(b3).version == "1.2.0"  # the retry downloads afresh


def _cli(world: World, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    return run(parser.parse_args(["ota", *argv]), world.config)


def test_cli(committed_world: World, model_b: Path, capsys: pytest.CaptureFixture[str]) -> None:
    committed_world.release("1.1.0", model=model_b)
    bundle = committed_world.bundle("r2", tar=True)
    assert _cli(committed_world, "verify", str(bundle)) == 0
    assert "1.1.0" in capsys.readouterr().out
    assert committed_world.installer().state().active.version == "1.0.0"  # verify installs nothing
    assert _cli(committed_world, "install", "--json", str(bundle)) == 0
    events = [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()]
    assert events[-1] == "trial"
    assert _cli(committed_world, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["active"]["version"] == "1.1.0" and status["known_good"]["version"] == "1.0.0"
    assert status["probation"]["starts"] == 0 and status["floor"] == 1
    assert _cli(committed_world, "rollback") == 0
    assert _cli(committed_world, "verify", str(committed_world.tmp / "nope")) == 1
    tampered = committed_world.tmp / "bundles" / "r1"
    (tampered / "bundle.json").write_text("{}")
    assert _cli(committed_world, "verify", str(tampered)) == 2
    assert "bundle_invalid" in capsys.readouterr().err
