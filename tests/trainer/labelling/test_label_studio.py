"""The labelling round trip against a real Label Studio server (installed by `make setup` in its own
virtualenv; see label_studio_server.py): a project created with the classes, tasks exported with the model's
boxes as pre-annotations, annotations submitted through the API as a reviewer would, imported back as ground
truth with who and when; tasks it did not export refused. The reviewer's boxes come from the oracle (the
renderer's truth), so the test also knows what the right answer is."""

from __future__ import annotations

import os
import urllib.request

import numpy as np
import pytest

from agent.synthetic import CLASS_NAMES
from tests.trainer import helpers as h
from tests.trainer.labelling.label_studio_server import EMAIL, label_studio_bin, start_label_studio
from trainer.cli import main
from trainer.labelling.label_studio import LabelStudio, LabelStudioAuthError
from trainer.labelling.oracle import oracle_boxes
from trainer.labelling.tasks import to_region
from trainer.store import get_sample, list_samples, open_reader
from trainer.store.labels import list_exports

pytestmark = [pytest.mark.trainer]
CLASSES = list(CLASS_NAMES)


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    if label_studio_bin() is None:
        if os.environ.get("EVL_REQUIRE_LABEL_STUDIO"):
            pytest.fail("Label Studio is required (EVL_REQUIRE_LABEL_STUDIO) but .venv-labelstudio is missing")
        pytest.skip("Label Studio is not installed (make setup installs it into .venv-labelstudio)")
    root = tmp_path_factory.mktemp("ls-root")
    server = start_label_studio(tmp_path_factory.mktemp("ls"), root)
    yield server
    server.stop()


def configured(tmp_path, server):
    config, path = h.store_config(
        tmp_path,
        label_studio={"url": server.url, "token": server.token},
        image_urls={"document_root": str(server.document_root)},
    )
    return config, path


def test_round_trip_through_label_studio(label_studio, tmp_path, capsys):
    base = label_studio.document_root / tmp_path.name
    config, path = configured(base, label_studio)
    synthetic = [h.synthetic_sample(seed=11, index=i) for i in range(6)]
    real = [h.sample(), h.sample()]
    h.fill_store(config, [(t, p) for t, p, *_ in synthetic + real])

    assert main(["label", "export", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "8 tasks in Label Studio project" in out
    (record, states) = list_exports(open_reader(config.store.index_path))[0]
    project = int(record.project)
    assert states == {"exported": 8}

    with LabelStudio(label_studio.url, label_studio.token) as client:
        assert client.token_kind == "personal"
        tasks = {t["data"]["evl_sample"]: t for t in client.export_tasks(project)}
        assert len(tasks) == 8
        for task in tasks.values():  # the model's boxes are there as pre-annotations
            predictions = client.task(task["id"])["predictions"]
            assert predictions and predictions[0]["result"] and predictions[0]["model_version"] == "demo 1.0.0"
        # Label Studio serves the image from the store itself (local files storage made at export)
        some = next(iter(tasks.values()))
        request = urllib.request.Request(
            label_studio.url + some["data"]["image"], headers={"Authorization": f"Bearer {client._access}"}
        )
        with urllib.request.urlopen(request) as response:
            image = response.read()
        row = get_sample(open_reader(config.store.index_path), str(some["data"]["evl_sample"]))
        assert image[:3] == b"\xff\xd8\xff" and len(image) == row.image_size

        # the reviewer: corrects the synthetic ones to the truth, skips one real one, leaves the other
        store = __import__("trainer.store.store", fromlist=["open_blobs"]).open_blobs(config.store)
        reader = open_reader(config.store.index_path)
        for _, _, meta, _ in synthetic:
            sample_row = get_sample(reader, meta.id)
            boxes = oracle_boxes(sample_row, store.get(sample_row.image_sha256), CLASSES)
            result = [to_region(b, sample_row.width, sample_row.height, CLASSES) for b in boxes]
            client.submit_annotation(tasks[sample_row.sid]["id"], result, lead_time_s=7.5)
        skipped = get_sample(reader, real[0][2].id)
        client._send(
            "POST", f"/api/tasks/{tasks[skipped.sid]['id']}/annotations/", json={"result": [], "was_cancelled": True}
        )
        store.close()
        # someone adds a task by hand to the project: not ours
        client.import_tasks(project, [{"data": {"image": "/data/local-files/?d=other.jpg"}}])

    assert main(["label", "import", "--config", str(path)]) == 1  # 1: something was refused
    out = capsys.readouterr().out
    assert "labelled 6, skipped 1, still waiting for review 1" in out and "refused 1" in out
    assert "was not exported by edge-trainer" in out
    reader = open_reader(config.store.index_path)
    for _, _, meta, frame in synthetic:
        row = get_sample(reader, meta.id)
        truth = row.ground_truth()
        assert row.label_state == "labelled" and truth.source == "human" and truth.author == EMAIL
        assert truth.ref["project"] == project and truth.ref["lead_time_s"] == 7.5 and truth.created_at > 0
        got = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in truth.boxes])
        assert np.allclose(got, frame.boxes, atol=0.05)  # percent and back
    assert get_sample(reader, real[0][2].id).label_state == "skipped"
    assert get_sample(reader, real[1][2].id).label_state == "exported"
    assert main(["label", "import", "--config", str(path)]) == 1
    assert "already imported 7" in capsys.readouterr().out


def test_oracle_reviews_inside_label_studio(label_studio, tmp_path, capsys):
    base = label_studio.document_root / tmp_path.name
    config, path = configured(base, label_studio)
    synthetic = [h.synthetic_sample(seed=12, index=i, domain="drifted") for i in range(3)]
    h.fill_store(config, [(t, p) for t, p, *_ in synthetic] + [h.sample()[:2]])
    assert main(["label", "export", "--config", str(path)]) == 0
    export_id = list_exports(open_reader(config.store.index_path))[0][0].export_id
    capsys.readouterr()
    assert main(["label", "oracle", "--review-in-label-studio", export_id, "--config", str(path)]) == 0
    assert "oracle submitted 3 annotations" in capsys.readouterr().out
    assert main(["label", "import", "--config", str(path)]) == 0
    assert "labelled 3" in capsys.readouterr().out
    rows = list_samples(open_reader(config.store.index_path), limit=None)
    assert sorted(r.label_state for r in rows) == ["exported", "labelled", "labelled", "labelled"]


def test_a_wrong_token_is_an_auth_error(label_studio):
    with LabelStudio(label_studio.url, "0123456789abcdef", token_kind="legacy") as client, pytest.raises(
        LabelStudioAuthError
    ):
        client.whoami()
