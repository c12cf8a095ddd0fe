"""Staged rollout: the pure decisions (table-driven), then the driver over a real store and real signed bundles
with the MQTT seam recorded (RecordedActions, a stand-in for the broker named as such; the real broker and
real agents are in test_rollout_broker.py): stages, promotion, halts on OTA failures and on quality shifts,
what the devices outside a stage see, and a trainer killed at every step."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from agent.protocol import ModelRef, OtaPhase
from tests.trainer import helpers as h
from tests.trainer.helpers import RecordedActions
from trainer.rollout.config import QualityBounds
from trainer.rollout.driver import Rollout, RolloutError, release_of_bundle
from trainer.rollout.plan import Action, DeviceView, Figures, decide_stage, device_problems, ota_failure
from trainer.store import open_reader

BOUNDS = QualityBounds(min_frames=100)
OLD_SHA = "0" * 64  # the running model's digest; the new one's comes from the bundle


def figures(frames=1000, seconds=100.0, detections=3000, conf=0.8, alerts=20, uncertain=50):
    return Figures(frames, seconds, detections, detections * conf, alerts, uncertain)


def view(before=None, after=None, committed=True, failed=None, name="c1"):
    return DeviceView(name, True, committed, failed, before, after)


@pytest.mark.parametrize(
    ("after", "problem"),
    [
        (figures(), None),
        (figures(alerts=30), None),  # x1.5 < x2
        (figures(alerts=60), "alerts per frame"),  # x2.9
        (figures(alerts=2), "alerts per frame"),  # x0.14 < x0.25: alerts vanished
        (figures(uncertain=250), "uncertain frames"),  # 0.05 -> 0.25
        (figures(uncertain=250, conf=0.7), "uncertain frames"),  # ... and less sure on average
        (figures(uncertain=250, conf=0.9), None),  # more borderline frames, but surer: it sees more objects
        (figures(uncertain=250, detections=0), "uncertain frames"),  # nothing to judge confidence by
        (figures(conf=0.6), "mean confidence"),
        (figures(seconds=200.0), "FPS"),  # 10 -> 5 fps
        (figures(frames=50, alerts=60), None),  # too few frames to judge yet
    ],
)
def test_device_judged_against_itself(after, problem):
    problems = device_problems(view(figures(), after), BOUNDS)
    if problem is None:
        assert problems == []
    else:
        assert problems and problem in problems[0], problems


def test_ota_failure_halts_at_once():
    assert device_problems(view(failed="OTA rolled_back on 1.1.0: health check failed"), BOUNDS)


@pytest.mark.parametrize(
    ("views", "ready_since", "now", "action"),
    [
        ([view(figures(), None, committed=False)], None, 0, Action.WAIT),
        ([view(figures(), figures())], None, 0, Action.READY),
        ([view(figures(), figures())], 0.0, 10.0, Action.WAIT),  # watch 60 s
        ([view(figures(), figures())], 0.0, 61.0, Action.PROMOTE),
        ([view(figures(), figures(frames=10))], 0.0, 61.0, Action.WAIT),  # not enough seen under the new model
        ([view(figures(), figures(alerts=90))], 0.0, 61.0, Action.HALT),
        ([view(figures(), figures()), view(figures(), figures(alerts=90), name="w1")], 0.0, 61.0, Action.HALT),
    ],
)
def test_stage_decisions(views, ready_since, now, action):
    assert decide_stage(views, 1, 60.0, ready_since, now, BOUNDS).action is action


# ------------------------------------------------------------------------------------------------ the driver


OLD = ModelRef(name="demo", version="1.0.0", sha256=OLD_SHA)


def quality(sha, frames=1000, alerts=20, since_s=100.0):
    return {
        "model_sha256": sha,
        "since": (h.now().timestamp() - since_s),
        "frames": frames,
        "detections": frames * 3,
        "confidence_sum": frames * 3 * 0.8,
        "alerts": alerts,
        "uncertain_frames": frames // 20,
    }


def status(device, model, groups, q):
    from datetime import datetime, timezone

    q = {**q, "since": datetime.fromtimestamp(q["since"], timezone.utc).isoformat()}
    return h.device_status(device, model=model, groups=groups, quality=q)


@pytest.fixture
def fleet_setup(tmp_path, bundles):
    config, _ = h.store_config(tmp_path)
    devices = {"c1": ["canary"], "w1": ["wide"], "f1": []}
    h.fill_store(config, [status(d, OLD, g, quality(OLD_SHA)) for d, g in devices.items()])
    rollout_config = h.three_stage_rollout(tmp_path / "rollouts")
    fleet_push = b'{"previous": "the 1.0.0 push"}'
    actions = RecordedActions({"edge/plant-1/fleet/models": fleet_push})

    def make():
        return Rollout(rollout_config, lambda: open_reader(config.store.index_path), lambda: actions)

    new = release_of_bundle(bundles["1.1.0"])
    new_ref = ModelRef(name="demo", version="1.1.0", sha256=new["model_sha256s"][-1])
    return SimpleNamespace(config=config, make=make, actions=actions, new=new, new_ref=new_ref, fleet_push=fleet_push)


def updated(config, device, groups, new, new_ref, alerts=20, phase=OtaPhase.COMMITTED):
    release = {"name": "demo", "version": "1.1.0", "counter": new["counter"]}
    model = new_ref if phase == OtaPhase.COMMITTED else OLD
    sha = new_ref.sha256 if phase == OtaPhase.COMMITTED else OLD_SHA
    time.sleep(0.01)  # statuses are ordered by their time
    h.fill_store(
        config,
        [
            h.ota_report(device, phase=phase, release=release),
            status(device, model, groups, quality(sha, alerts=alerts)),
        ],
    )


def test_stages_promote_in_order_and_others_never_see_the_release(fleet_setup, bundles):
    config, make, actions, new, new_ref, fleet_push = (
        fleet_setup.config,
        fleet_setup.make,
        fleet_setup.actions,
        fleet_setup.new,
        fleet_setup.new_ref,
        fleet_setup.fleet_push,
    )
    state = make().start(bundles["1.1.0"])
    canary = "edge/plant-1/groups/canary/models"
    assert state["stage"] == 0 and state["stages"][0]["pushed"]
    assert json.loads(actions.retained_topics[canary])["release"]["counter"] == new["counter"]
    assert any(t.startswith(canary + "/chunks/") for t in actions.retained_topics)
    assert actions.retained_topics["edge/plant-1/fleet/models"] == fleet_push  # everyone else: the old push
    assert "edge/plant-1/groups/wide/models" not in actions.retained_topics
    assert make().tick()["last_decision"]["action"] == "wait"  # the canary has not committed yet
    updated(config, "c1", ["canary"], new, new_ref)
    state = make().tick()
    assert state["stages"][0]["ready_since"] is not None and state["stage"] == 0
    ready = state["stages"][0]["ready_since"]
    assert make().tick(now=ready + 10)["stage"] == 0  # watching
    state = make().tick(now=ready + 31)
    assert state["stage"] == 1 and not state["stages"][1]["pushed"]
    for _ in range(3):  # a restarted trainer resumes the stage; it never promotes twice
        state = make().tick(now=ready + 32)
    assert state["stage"] == 1 and state["stages"][1]["pushed"]
    assert "edge/plant-1/groups/wide/models" in actions.retained_topics
    assert actions.retained_topics["edge/plant-1/fleet/models"] == fleet_push
    assert [e["event"] for e in state["events"]].count("promoted") == 1


def test_a_quality_shift_halts_restores_and_rolls_back_only_the_stages_devices(fleet_setup, bundles):
    config, make, actions, new, new_ref, fleet_push = (
        fleet_setup.config,
        fleet_setup.make,
        fleet_setup.actions,
        fleet_setup.new,
        fleet_setup.new_ref,
        fleet_setup.fleet_push,
    )
    make().start(bundles["1.1.0"])
    updated(config, "c1", ["canary"], new, new_ref)
    ready = make().tick()["stages"][0]["ready_since"]
    make().tick(now=ready + 31)
    make().tick(now=ready + 32)  # wide pushed
    updated(config, "w1", ["wide"], new, new_ref, alerts=200)  # 10x the alerts per frame it had under 1.0.0
    state = make().tick(now=ready + 40)
    assert state["state"] == "halted" and "w1: alerts per frame" in state["halt"]["reasons"][0]
    # the stages' topics hold what they held before the rollout: nothing for the groups, the old fleet push
    assert actions.retained_topics["edge/plant-1/groups/canary/models"] == b""
    assert actions.retained_topics["edge/plant-1/groups/wide/models"] == b""
    assert actions.retained_topics["edge/plant-1/fleet/models"] == fleet_push
    rolled = {t.split("/")[2]: c for t, c in actions.sent}
    assert set(rolled) == {"c1", "w1"}  # f1 never ran it: nothing sent there
    assert all(c["type"] == "rollback" and c["if_active"]["counter"] == new["counter"] for c in rolled.values())
    # a restart keeps the halt; it repeats the rollback only to devices still on the new release
    updated(config, "c1", ["canary"], new, new_ref, phase=OtaPhase.ROLLED_BACK)
    sent_before = len(actions.sent)
    state = make().tick(now=ready + 50)
    assert state["state"] == "halted"
    assert [t.split("/")[2] for t, _ in actions.sent[sent_before:]] == ["w1"]
    with pytest.raises(RolloutError):
        make().promote(force=True)  # never after a halt


def test_a_canary_that_rolls_back_halts_at_once(fleet_setup, bundles):
    config, make, actions, new, new_ref = (
        fleet_setup.config,
        fleet_setup.make,
        fleet_setup.actions,
        fleet_setup.new,
        fleet_setup.new_ref,
    )
    make().start(bundles["1.1.0"])
    updated(config, "c1", ["canary"], new, new_ref, phase=OtaPhase.ROLLED_BACK)
    state = make().tick()
    assert state["state"] == "halted" and "OTA rolled_back on 1.1.0" in state["halt"]["reasons"][0]
    assert "edge/plant-1/groups/wide/models" not in actions.retained_topics  # the next stage was never pushed


def test_kill_between_decision_and_push_pushes_on_restart(fleet_setup, bundles, monkeypatch):
    make, actions = fleet_setup.make, fleet_setup.actions
    rollout = make()

    def die(*a, **k):
        raise KeyboardInterrupt("killed while pushing")

    monkeypatch.setattr(rollout, "_push", die)
    with pytest.raises(KeyboardInterrupt):
        rollout.start(bundles["1.1.0"])
    state = make().tick()  # the restarted trainer
    assert state["stages"][0]["pushed"] and "edge/plant-1/groups/canary/models" in actions.retained_topics


def test_operator_halt_and_promote_force(fleet_setup, bundles):
    make = fleet_setup.make
    make().start(bundles["1.1.0"])
    with pytest.raises(RolloutError, match="not ready"):
        make().promote()
    assert make().promote(force=True)["stage"] == 1
    state = make().halt("the line supervisor saw false alarms")
    assert state["state"] == "halted" and state["halt"]["reasons"] == ["operator: the line supervisor saw false alarms"]
    assert make().halt("again")["halt"]["reasons"][0].startswith("operator: the line")  # idempotent


def test_start_refuses_while_one_runs_and_another_channel(fleet_setup, bundles):
    make = fleet_setup.make
    make().start(bundles["1.1.0"])
    with pytest.raises(RolloutError, match="is running"):
        make().start(bundles["1.1.0"])


@pytest.mark.parametrize(
    ("phase", "detail", "halts"),
    [
        ("rolled_back", "crash_loop 2 unclean starts in probation", True),
        ("failed", "health_check_failed golden 0: 3 boxes expected, 1 found", True),
        ("failed", "hash_mismatch target models/demo/2/model.onnx: SHA-256 differs", True),
        ("failed", "transport metadata timestamp.json (timestamp role): connection refused", False),
        ("failed", "too_slow: pushed bundle of demo 1.1.0: 3.0 bytes/s on average", False),
        ("failed", "interrupted install attempt abandoned (superseded) at downloading", False),
        ("failed", "state another OTA operation is running", False),
        ("committed", None, False),
        ("downloading", "12 %", False),
    ],
)
def test_only_failures_that_speak_against_the_release_halt(phase, detail, halts):
    """A slow link or a busy installer retries by itself: it must not look like a bad model to the rollout."""
    assert (ota_failure(phase, detail, "1.1.0") is not None) is halts
