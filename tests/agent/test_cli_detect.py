"""``edge-agent detect`` end to end: images, folders, videos, JSON output, and clean errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.synthetic import render_frame, render_video

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    import cv2

    root = tmp_path_factory.mktemp("media")
    images = root / "images"
    images.mkdir()
    for i, size in enumerate([(256, 256), (480, 640)]):
        cv2.imwrite(str(images / f"frame{i}.jpg"), render_frame("factory", 99, i, size).image)
    video = render_video(root / "clip.mp4", "factory", 5, frames=6, fps=10, size=(240, 320))
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not an image")
    (root / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    return root, images, Path(video)


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_image_json(media, demo_model_path, capsys):
    _, images, _ = media
    code, out, err = run_cli(
        ["detect", "--model", str(demo_model_path), "--source", str(images / "frame1.jpg"), "--json"], capsys
    )
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert (record["width"], record["height"]) == (640, 480)
    assert record["detections"], "the rendered frame has parts; the demo model must find some"
    first = record["detections"][0]
    assert set(first) == {"xyxy", "confidence", "class_id", "class_name"}
    assert 0 <= first["xyxy"][0] <= first["xyxy"][2] <= 640


def test_folder_and_save(media, demo_model_path, tmp_path, capsys):
    _, images, _ = media
    code, out, err = run_cli(
        ["detect", "--model", str(demo_model_path), "--source", str(images), "--save", str(tmp_path / "out")], capsys
    )
    assert code == 0, err
    assert out.count("frame0.jpg") == 1 and out.count("frame1.jpg") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["frame0.jpg", "frame1.jpg"]


def test_video(media, demo_model_path, tmp_path, capsys):
    _, _, video = media
    code, out, err = run_cli(
        ["detect", "--model", str(demo_model_path), "--source", str(video), "--json", "--save", str(tmp_path)], capsys
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in records] == list(range(6))
    assert (tmp_path / "clip.mp4").stat().st_size > 0


@pytest.mark.parametrize(
    ("source", "model", "message"),
    [
        ("notes.txt", None, "not an image or a video"),
        ("empty", None, "folder has no images"),
        ("broken.mp4", None, "cannot open video|no decodable frame"),
        ("missing.jpg", None, "source not found"),
        ("images", "missing.onnx", "model file not found"),
        ("images", "notes.txt", "not a valid ONNX model"),
    ],
)
def test_bad_input_is_a_clear_error(media, demo_model_path, capsys, source, model, message):
    root, _, _ = media
    model_path = root / model if model else demo_model_path
    code, _, err = run_cli(["detect", "--model", str(model_path), "--source", str(root / source)], capsys)
    assert code == 2
    assert err.startswith("error: ")
    assert pytest.importorskip("re").search(message, err), err
    assert "Traceback" not in err


def test_bad_thresholds(media, demo_model_path, capsys):
    _, images, _ = media
    code, _, err = run_cli(["detect", "--model", str(demo_model_path), "--source", str(images), "--conf", "2"], capsys)
    assert code == 2 and "conf must be in [0, 1]" in err


def test_no_traceback_from_the_real_entry_point(media):
    root, _, _ = media
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "detect", "--model", str(root / "notes.txt"), "--source", str(root)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a valid ONNX model" in proc.stderr


def test_unreadable_image_inside_a_folder_is_skipped_not_fatal(media, demo_model_path, tmp_path, capsys):
    import shutil

    _, images, _ = media
    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    (folder / "zz-corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    code, out, err = run_cli(["detect", "--model", str(demo_model_path), "--source", str(folder)], capsys)
    assert code == 0
    assert "skipped:" in err and "zz-corrupt.jpg" in err
    assert out.count("frame") == 2
