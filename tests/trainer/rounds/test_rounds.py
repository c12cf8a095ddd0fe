"""Learning rounds end to end at a small size: the store's oracle-labelled drifted samples, a tiny base set,
real fine-tuning (1 epoch, 128 px), the real export (FP32 + INT8), the gate on the INT8 models through the
agent's engine, a signed release with an online bundle, the report; and the refusals."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from agent.synthetic import CLASS_NAMES, write_yolo_dataset
from tests.trainer import helpers as h
from trainer.cli import main
from trainer.rounds.dataset import RoundRefused, check_split, in_holdout, split_field_samples
from trainer.rounds.gate import HoldoutScores, decide
from trainer.rounds.history import list_rounds, next_version, running_model
from trainer.store import open_reader

pytestmark = [pytest.mark.trainer]


@pytest.fixture(scope="module")
def base_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    train = write_yolo_dataset(root / "train", "factory", 11, 40, size=(128, 128), val_fraction=0.2)
    holdout = write_yolo_dataset(root / "holdout", "factory", 1000, 24, size=(128, 128))
    return train, holdout


@pytest.fixture(scope="module")
def release_target(tmp_path_factory):
    from trainer.release.keys import init_keys
    from trainer.release.repo import Repository

    root = tmp_path_factory.mktemp("release")
    ring = init_keys(root / "keys")
    Repository(root / "repo", ring).init()
    return root / "keys", root / "repo"


def round_config(tmp_path, base_sets, release_target=None, **rounds):
    train, holdout = base_sets
    section = {
        "workdir": str(tmp_path / "rounds"),
        "base_data": str(train),
        "base_holdout": str(holdout),
        "min_train_samples": 10,
        "min_holdout_samples": 4,
        "calib_count": 16,
        "training": {"epochs": 1, "imgsz": 128, "batch": 8, "workers": 0},
    }
    if release_target is not None:
        section["release"] = {"repo": str(release_target[1]), "keys": str(release_target[0])}
    for key, value in rounds.items():
        section[key] = value if not isinstance(value, dict) else {**section.get(key, {}), **value}
    config, path = h.store_config(tmp_path)
    data = config.model_dump(mode="json", exclude_none=True)
    data["rounds"] = section
    path.write_text(__import__("yaml").safe_dump(data))
    return config, path


def fill_drifted(config, count=40, seed=31, shuffle_labels=False):
    messages = [
        h.synthetic_sample(seed=seed, index=i, domain="drifted", width=160, height=128)[:2] for i in range(count)
    ]
    h.fill_store(config, messages)
    assert main(["label", "oracle", "--config", str(config_path(config))]) == 0
    if shuffle_labels:  # a deliberately bad labeller: every box moved somewhere else, classes mixed up
        import sqlite3

        db = sqlite3.connect(config.store.index_path)
        rng = random.Random(0)
        for lid, boxes in db.execute("SELECT lid, boxes FROM labels").fetchall():
            shuffled = []
            for box in json.loads(boxes):
                x, y = rng.uniform(0, 120), rng.uniform(0, 90)
                cls = rng.randrange(len(CLASS_NAMES))
                shuffled.append(
                    {
                        **box,
                        "x1": x,
                        "y1": y,
                        "x2": x + 30,
                        "y2": y + 30,
                        "class_id": cls,
                        "class_name": CLASS_NAMES[cls],
                    }
                )
            db.execute("UPDATE labels SET boxes = ? WHERE lid = ?", (json.dumps(shuffled), lid))
        db.commit()
        db.close()


def config_path(config):
    return Path(config.state_dir).parent / "trainer.yaml"


def test_gate_decisions():
    ok = decide(HoldoutScores(0.88, 0.875), HoldoutScores(0.0, 0.5), 0.01, 0.01, 0.88, 0.02)
    assert ok.passed and ok.reasons == []
    both = decide(HoldoutScores(0.88, 0.80), HoldoutScores(0.3, 0.3), 0.01, 0.01)
    assert not both.passed and len(both.reasons) == 2
    assert "needs a gain of at least +0.0100" in both.reasons[0] and "may lose at most 0.0100" in both.reasons[1]
    int8 = decide(HoldoutScores(0.88, 0.86), HoldoutScores(0.0, 0.5), 0.01, 0.05, 0.90, 0.02)
    assert not int8.passed and "INT8 costs 0.0400" in int8.reasons[0]
    assert next_version("1.0.0") == "1.1.0" and next_version("2.7.3") == "2.8.0"


def test_the_holdout_is_stable_and_never_trained_on():
    digests = [f"{i:064x}" for i in range(2000)]
    held = [d for d in digests if in_holdout(d, 0.25)]
    assert 0.2 < len(held) / len(digests) < 0.3
    assert held == [d for d in digests if in_holdout(d, 0.25)]  # the same side every time


def test_a_round_with_too_little_refuses_with_a_clear_message(tmp_path, base_sets, capsys):
    config, path = round_config(tmp_path, base_sets)
    fill_drifted(config, count=6)
    assert main(["round", "--config", str(path)]) == 2
    assert "round refused" in capsys.readouterr().err
    reader = open_reader(config.store.index_path)
    split = split_field_samples(reader, ["oracle"], 0.25)
    with pytest.raises(RoundRefused, match="training samples"):
        check_split(split, 10, 1, True)
    with pytest.raises(RoundRefused, match="new-domain holdout"):
        check_split(split_field_samples(reader, ["oracle"], 1e-9), 1, 1, True)
    assert list_rounds(config.rounds.workdir if config.rounds else tmp_path / "rounds") == []


def test_round_publishes_a_signed_release_with_its_report(tmp_path, base_sets, release_target, capsys):
    # the gate is opened wide: one epoch at 128 px proves the plumbing, not the learning (bench/loop_experiment.py)
    config, path = round_config(
        tmp_path,
        base_sets,
        release_target,
        gate={"min_new_domain_gain": -1.0, "max_base_regression": 1.0, "max_int8_loss": 1.0},
    )
    fill_drifted(config)
    capsys.readouterr()
    assert main(["round", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "published" in out and "released 1.1.0" in out
    (record,) = list_rounds(tmp_path / "rounds")
    assert [s["state"] for s in record["steps"]] == ["training", "exporting", "gating", "releasing", "published"]
    assert record["split"]["train"] + record["split"]["holdout"] == 40 and record["split"]["holdout"] >= 4
    assert record["calibration"]["field"] > 0 and record["calibration"]["base"] > 0
    scores = record["scores"]
    assert set(scores) == {"base_before", "base_after", "new_before", "new_after", "base_after_fp32"}
    assert scores["base_before"]["model"].endswith("demo-int8.onnx")  # the running model's INT8
    assert scores["base_after"]["model"].endswith("model-int8.onnx")  # the candidate's INT8: what ships
    release = record["release"]
    assert release["version"] == "1.1.0" and Path(release["bundle"]).is_file()
    channel = json.loads(
        (Path(release["repo"]) / "targets" / "models" / "channels").glob("*stable.json").__next__().read_text()
    )
    assert channel["version"] == "1.1.0" and "onnx_int8" in channel["files"]
    report = Path(record["report"]["markdown"])
    assert report.is_file() and "Gate: **passed**" in report.read_text()
    assert set(record["report"]["plots"]) == {"per_class.png", "pr_curves.png", "learning_curve.png", "samples.png"}
    assert Path(record["report"]["kept_with_release"], "report.md").is_file()
    assert running_model(tmp_path / "rounds", config.rounds.baseline if config.rounds else None).version == "1.1.0"
    assert main(["rounds", "--config", str(path)]) == 0
    assert "running: demo 1.1.0" in capsys.readouterr().out


def test_a_bad_candidate_is_never_released_and_the_round_says_why(tmp_path, base_sets, release_target, capsys):
    config, path = round_config(tmp_path, base_sets, release_target, training={"lr0": 0.02, "epochs": 2})
    fill_drifted(config, seed=33, shuffle_labels=True)
    from trainer.release.repo import Repository  # noqa: F401  (the repository is shared with the test above)

    before = sorted(p.name for p in (release_target[1] / "targets" / "models").rglob("release.json"))
    capsys.readouterr()
    assert main(["round", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "rejected" in out and "needs a gain" in out
    (record,) = list_rounds(tmp_path / "rounds")
    assert record["state"] == "rejected" and record["reasons"] and "release" not in record
    after = sorted(p.name for p in (release_target[1] / "targets" / "models").rglob("release.json"))
    assert after == before  # nothing new was signed


@pytest.mark.parametrize(
    ("new", "last", "now", "policy", "starts"),
    [
        (0, 0, 10**6, {"enabled": True, "min_new_labelled": 1}, False),
        (5, 0, 0, {"enabled": True, "min_new_labelled": 5}, True),
        (4, 0, 0, {"enabled": True, "min_new_labelled": 5}, False),
        (4, 0, 7200, {"enabled": True, "min_new_labelled": 5, "every_hours": 1}, True),
        (4, 0, 1800, {"enabled": True, "min_new_labelled": 5, "every_hours": 1}, False),
        (500, 0, 0, {"enabled": False}, False),
    ],
)
def test_policy_decides_when_a_round_is_due(new, last, now, policy, starts):
    from trainer.rounds.config import PolicyConfig
    from trainer.rounds.policy import due

    assert (due(new, last, now, PolicyConfig(**policy)) is not None) is starts


def test_serve_starts_a_round_when_enough_is_labelled_and_not_again_for_the_same_labels(tmp_path, base_sets):
    import threading

    from trainer.rounds.policy import RoundPolicy

    config, path = round_config(tmp_path, base_sets, policy={"enabled": True, "min_new_labelled": 3})
    fill_drifted(config, count=6)  # too few for a round: the child refuses (exit 2) quickly
    from trainer.settings import load_trainer_config

    loaded = load_trainer_config(path)
    policy = RoundPolicy(loaded.rounds, loaded.store.index_path, path, threading.Event())
    assert policy.check(time.time()) is not None and policy.child is not None
    assert policy.child.wait(120) == 2  # `edge-trainer round` ran and refused
    assert policy.check(time.time()) is None  # nothing labelled since that attempt: no new round
    assert policy.child is None
