"""edge-trainer keys / release / usb-bundle through the command functions (real keys, real repository)."""

from __future__ import annotations

import json
import shutil
import stat
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*Python 3.8 is no longer supported.*")

from trainer.commands.release import main  # noqa: E402
from trainer.release.keys import KeyError_, KeyRing  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "data" / "ota" / "tiny-yolo64.onnx"


def test_keys_release_bundle_rotate(tmp_path: Path) -> None:
    keys, repo = tmp_path / "keys", tmp_path / "repo"
    assert main(["keys", "init", str(keys), "--repo", str(repo)]) == 0
    ring = KeyRing.load(keys)
    assert ring.roles["root"].threshold == 2 and len(ring.roles["root"].keys) == 3
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.glob("*.pem"))
    assert main(["keys", "init", str(keys)]) == 1  # never overwrites keys
    assert (repo / "metadata" / "1.root.json").exists() and (repo / "offline" / "metadata" / "1.root.json").exists()

    args = [
        "release",
        "--model",
        str(MODEL),
        "--name",
        "widget",
        "--version",
        "1.0.0",
        "--repo",
        str(repo),
        "--keys",
        str(keys),
        "--device-type",
        "x86-cpu",
    ]
    assert main(args) == 0
    assert main([*args[:6], "2.0.0", *args[7:]]) == 0
    channel = next((repo / "targets" / "models" / "channels").glob("*.stable.json"))
    assert json.loads(channel.read_text())["counter"] in (1, 2)
    assert (
        main(
            [
                "release",
                "--model",
                str(MODEL),
                "--name",
                "w",
                "--version",
                "1.0",
                "--repo",
                str(repo),
                "--keys",
                str(keys),
            ]
        )
        == 1
    )  # not a semantic version

    assert main(["usb-bundle", str(tmp_path / "usb.tar"), "--repo", str(repo), "--keys", str(keys)]) == 0
    assert (tmp_path / "usb.tar").stat().st_size > MODEL.stat().st_size

    assert main(["keys", "rotate", "root", "--keys", str(keys), "--repo", str(repo)]) == 0
    assert (repo / "metadata" / "2.root.json").exists()
    assert main(["keys", "rotate", "trainer", "--keys", str(keys), "--repo", str(repo)]) == 0
    assert KeyRing.load(keys).roles["trainer"].retired


def test_bad_key_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyError_):
        KeyRing.load(tmp_path)


def test_release_records_the_golden_expectations_with_the_model_the_devices_serve(tmp_path: Path) -> None:
    """--health-role names the file a box serves (ota.health.model_role); its detections, not the FP32
    model's, are what the box's health check must reproduce."""
    from trainer.release.build import record_expected

    demo = Path(__file__).resolve().parents[2] / "models" / "demo"
    keys, repo, model = tmp_path / "keys", tmp_path / "repo", tmp_path / "model"
    model.mkdir()
    shutil.copyfile(demo / "demo.onnx", model / "model.onnx")
    shutil.copyfile(demo / "demo-int8.onnx", model / "model-int8.onnx")
    golden = Path(__file__).resolve().parents[2] / "samples" / "factory-line.jpg"
    assert main(["keys", "init", str(keys), "--repo", str(repo)]) == 0
    base = ["release", "--model", str(model), "--name", "demo", "--repo", str(repo), "--keys", str(keys)]
    base += ["--golden", str(golden)]
    assert main([*base, "--version", "1.0.0", "--health-role", "onnx_int8"]) == 0
    manifest = json.loads(next((repo / "targets" / "models" / "demo").glob("1/*.release.json")).read_text())
    recorded = manifest["health"]["golden"][0]["expected"]
    int8 = record_expected(model / "model-int8.onnx", [golden], 0.25, 0.7)[0]
    fp32 = record_expected(model / "model.onnx", [golden], 0.25, 0.7)[0]
    assert recorded and int8 != fp32
    assert [d["confidence"] for d in recorded] == [d["confidence"] for d in int8]
    assert main([*base, "--version", "1.1.0", "--health-role", "tensorrt"]) == 1  # not among the files
