"""The labelling round trip without Label Studio: the oracle stand-in, pseudo-labels from a teacher, YOLO and
COCO sets out and back in, and a Label Studio import file round trip done by hand. Through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.synthetic import CLASS_NAMES
from tests.trainer import helpers as h
from trainer.cli import main
from trainer.labelling.oracle import OracleRefused, oracle_boxes
from trainer.store import get_sample, list_samples, open_reader

CLASSES = list(CLASS_NAMES)


@pytest.fixture
def store(tmp_path):
    """A store with 6 synthetic samples (two domains) and 2 from a real camera."""
    config, path = h.store_config(tmp_path)
    synthetic = [h.synthetic_sample(seed=5, index=i) for i in range(4)] + [
        h.synthetic_sample(seed=9, index=i, domain="drifted") for i in range(2)
    ]
    real = [h.sample() for _ in range(2)]
    h.fill_store(config, [(t, p) for t, p, *_ in synthetic + real])
    return config, path, synthetic, real


def db(config):
    return open_reader(config.store.index_path)


def test_oracle_labels_synthetic_samples_and_refuses_real_ones(store, capsys):
    config, path, synthetic, real = store
    assert main(["label", "oracle", "--config", str(path)]) == 0
    out = capsys.readouterr()
    assert "STAND-IN FOR HUMAN REVIEW" in out.err and "oracle labelled 6 samples" in out.out and "refused 2" in out.out
    for _, _, meta, frame in synthetic:
        row = get_sample(db(config), meta.id)
        truth = row.ground_truth()
        assert row.label_state == "labelled" and truth.source == "oracle" and "stand-in" in truth.author
        got = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in truth.boxes])
        assert (
            np.allclose(got, frame.boxes, atol=0.01)
            and [b["class_id"] for b in truth.boxes] == frame.class_ids.tolist()
        )
    for _, _, meta in real:
        assert get_sample(db(config), meta.id).label_state == "pending"
    assert main(["label", "oracle", "--config", str(path)]) == 0  # idempotent
    assert "oracle labelled 0 samples" in capsys.readouterr().out


def test_oracle_refuses_an_identity_that_does_not_reproduce_the_image(store):
    config, _, synthetic, _ = store
    row = get_sample(db(config), synthetic[0][2].id)
    wrong = type(row)(**{**row.__dict__, "synthetic": {**row.synthetic, "index": row.synthetic["index"] + 40}})
    jpeg = synthetic[0][1][-row.image_size :]
    with pytest.raises(OracleRefused, match="identity is wrong"):
        oracle_boxes(wrong, jpeg, CLASSES)
    assert oracle_boxes(row, jpeg, CLASSES)  # the right one reproduces
    near = type(row)(**{**row.__dict__, "synthetic": {**row.synthetic, "index": row.synthetic["index"] + 1}})
    with pytest.raises(OracleRefused, match="identity is wrong"):
        oracle_boxes(near, jpeg, CLASSES)  # off by one frame


def test_pseudo_labels_are_kept_apart(store, demo_model_path, capsys):
    config, path, _, _ = store
    assert (
        main(["label", "pseudo", "--config", str(path), "--teacher", str(demo_model_path), "--min-confidence", "0.3"])
        == 0
    )
    assert "pseudo-labelled 8 samples" in capsys.readouterr().out
    rows = list_samples(db(config), limit=None)
    assert all(r.label_state == "pending" and r.labels[-1].source == "pseudo" for r in rows)
    assert all(r.ground_truth() is None for r in rows)  # never ground truth by default
    assert all(b["confidence"] >= 0.3 for r in rows for b in r.labels[-1].boxes)
    assert any(r.labels[-1].boxes for r in rows)


def test_yolo_and_coco_sets_out_and_back(store, tmp_path, capsys):
    config, path, synthetic, _ = store
    main(["label", "oracle", "--config", str(path)])
    classes = ",".join(CLASSES)
    assert (
        main(
            [
                "samples",
                "export",
                str(tmp_path / "yolo"),
                "--format",
                "yolo",
                "--config",
                str(path),
                "--classes",
                classes,
                "--val-fraction",
                "0.3",
            ]
        )
        == 0
    )
    assert "exported 6 labelled samples of 8" in capsys.readouterr().out
    labels = sorted((tmp_path / "yolo" / "labels").glob("*/*.txt"))
    assert len(labels) == 6 and (tmp_path / "yolo" / "data.yaml").exists()
    assert (
        main(
            [
                "samples",
                "export",
                str(tmp_path / "coco"),
                "--format",
                "coco",
                "--config",
                str(path),
                "--classes",
                classes,
            ]
        )
        == 0
    )
    coco = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert len(coco["images"]) == 6 and coco["categories"][1]["name"] == CLASSES[1]
    # Ultralytics reads the YOLO set (the trainer consumes exactly this)
    from ultralytics.data.utils import check_det_dataset

    assert check_det_dataset(str(tmp_path / "yolo" / "data.yaml"))["nc"] == len(CLASSES)
    # back in, as a set labelled elsewhere (CVAT, Roboflow): same boxes, source "import"
    for flag, where in (("--yolo", tmp_path / "yolo"), ("--coco", tmp_path / "coco" / "annotations.json")):
        assert (
            main(
                [
                    "label",
                    "import",
                    flag,
                    str(where),
                    "--author",
                    "cvat:anna",
                    "--config",
                    str(path),
                    "--classes",
                    classes,
                ]
            )
            == 0
        )
        assert "imported 6 labels" in capsys.readouterr().out
    for _, _, meta, frame in synthetic:
        row = get_sample(db(config), meta.id)
        imported = [label for label in row.labels if label.source == "import"]
        assert len(imported) == 2 and imported[0].author == "cvat:anna"
        for label in imported:
            got = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in label.boxes])
            assert np.allclose(got, frame.boxes, atol=0.02)


def test_yolo_import_refuses_images_of_another_store(store, tmp_path, capsys):
    config, path, _, _ = store
    (tmp_path / "foreign" / "labels" / "train").mkdir(parents=True)
    (tmp_path / "foreign" / "labels" / "train" / "s1-000000000000.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    assert main(["label", "import", "--yolo", str(tmp_path / "foreign"), "--author", "x", "--config", str(path)]) == 1
    assert "refused s1-000000000000: not an image of this store" in capsys.readouterr().out
    assert all(not r.labels for r in list_samples(db(config), limit=None))


def test_label_studio_file_round_trip_refuses_tasks_it_did_not_export(store, tmp_path, capsys):
    config, path, _, _ = store
    tasks_file = tmp_path / "tasks.json"
    assert main(["label", "export", "--file", str(tasks_file), "--config", str(path)]) == 0
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 8 and all(t["predictions"][0]["result"] for t in tasks)
    assert tasks[0]["data"]["image"].startswith("/data/local-files/?d=blobs/")
    assert (tmp_path / "tasks.label-config.xml").exists()
    assert {r.label_state for r in list_samples(db(config), limit=None)} == {"exported"}
    # what Label Studio's JSON export looks like after review: ids assigned, annotations added
    reviewed = []
    for number, task in enumerate(tasks, 1):
        annotation = {
            "id": 100 + number,
            "completed_by": 1,
            "updated_at": "2026-12-01T10:00:00Z",
            "result": task["predictions"][0]["result"],
            "was_cancelled": number == 8,
        }
        reviewed.append({**task, "id": number, "annotations": [annotation]})
    reviewed.append({"id": 99, "data": {"image": "/x.jpg"}, "annotations": []})  # added by hand in the tool
    forged = json.loads(json.dumps(reviewed[0]))
    forged["id"], forged["data"]["evl_sample"] = 98, 999  # a sample that was never exported
    reviewed.append(forged)
    (tmp_path / "reviewed.json").write_text(json.dumps(reviewed))
    assert main(["label", "import", "--file", str(tmp_path / "reviewed.json"), "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "labelled 7, skipped 1" in out and "refused 2" in out
    assert "task 99: task 99 was not exported by edge-trainer" in out and "sample 999 was not in export" in out
    rows = list_samples(db(config), limit=None)
    assert sorted(r.label_state for r in rows) == ["labelled"] * 7 + ["skipped"]
    human = rows[0].ground_truth()
    assert human.source == "human" and human.ref["annotation"] and human.created_at > 0
    assert main(["label", "import", "--file", str(tmp_path / "reviewed.json"), "--config", str(path)]) == 1
    assert "already imported 8" in capsys.readouterr().out  # nothing doubles on a second import
