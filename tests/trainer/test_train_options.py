"""Training options that need no training run: device strings, replay of the base data set."""

from __future__ import annotations

import pytest
import yaml

from trainer.train import TrainError, build_replay_dataset, parse_devices

pytestmark = pytest.mark.trainer


@pytest.mark.parametrize(
    ("text", "expected"),
    [("cpu", "cpu"), ("", "cpu"), ("0", 0), ("3", 3), ("0,1,2,3", "0,1,2,3"), (" 0, 1 ", "0,1")],
)
def test_parse_devices(text, expected):
    assert parse_devices(text) == expected


@pytest.mark.parametrize("text", ["gpu", "0;1", "cuda:0", "-1"])
def test_parse_devices_rejects(text):
    with pytest.raises(TrainError, match="--devices"):
        parse_devices(text)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from agent.synthetic import write_yolo_dataset

    root = tmp_path_factory.mktemp("replay")
    new = write_yolo_dataset(root / "new", "drifted", 1, 20, size=(64, 64), val_fraction=0.25)
    base = write_yolo_dataset(root / "base", "factory", 2, 40, size=(64, 64), val_fraction=0.25)
    return root, new, base


@pytest.mark.parametrize(("fraction", "replayed"), [(0.0, 0), (0.25, 5), (0.5, 15)])
def test_replay_mixes_a_share_of_the_base(datasets, fraction, replayed, tmp_path):
    _, new, base = datasets
    merged = build_replay_dataset(new, base, fraction, tmp_path / "mix", seed=3)
    spec = yaml.safe_load(merged.read_text())
    train = (tmp_path / "mix" / spec["train"]).read_text().split()
    assert sum("/new/" in p for p in train) == 15
    assert sum("/base/" in p for p in train) == replayed
    assert len((tmp_path / "mix" / spec["val"]).read_text().split()) == 5  # validation stays on the new data
    assert spec["names"][0] == "bolt" and spec["nc"] == 6


def test_replay_refuses_different_classes(datasets, tmp_path):
    _, new, base = datasets
    spec = yaml.safe_load(base.read_text())
    spec["names"] = {0: "other"}
    odd = tmp_path / "odd.yaml"
    odd.write_text(yaml.safe_dump(spec))
    with pytest.raises(TrainError, match="class names differ"):
        build_replay_dataset(new, odd, 0.3, tmp_path / "mix")
    with pytest.raises(TrainError, match="replay-fraction"):
        build_replay_dataset(new, base, 1.5, tmp_path / "mix2")


def test_the_amp_check_never_downloads_and_is_off_on_cpu() -> None:
    import torch
    import ultralytics.engine.trainer as ul_trainer

    from trainer.train import amp_check_without_download, check_amp_offline

    original = ul_trainer.check_amp
    with amp_check_without_download():
        assert ul_trainer.check_amp is check_amp_offline  # what Ultralytics' trainer calls in this block
    assert ul_trainer.check_amp is original
    assert check_amp_offline(torch.nn.Conv2d(3, 4, 3)) is False  # CPU: AMP is a GPU feature
    assert check_amp_offline(torch.nn.ReLU()) is False  # no parameters: nothing to place


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (bench/gpu_check.sh)")
def test_the_amp_check_passes_for_the_tiny_model_on_a_gpu() -> None:
    from ultralytics.nn.tasks import DetectionModel

    from trainer.train import TINY_MODEL_YAML, check_amp_offline

    model = DetectionModel(str(TINY_MODEL_YAML), nc=6, verbose=False).cuda()
    model.train()
    assert check_amp_offline(model) is True
    assert model.training  # left as it was
