"""Tests of ``edge-trainer synth`` (trainer.commands.synth) through a parser built with its add_parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List

import cv2
import pytest
import yaml

from trainer.commands import synth


def _run(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="edge-trainer")
    subparsers = parser.add_subparsers(dest="command", required=True)
    synth.add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_dataset_with_progress_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    code = _run(
        [
            "synth",
            "--domain",
            "factory",
            "--seed",
            "3",
            "--count",
            "20",
            "--out",
            str(out),
            "--size",
            "64x96",
            "--val-fraction",
            "0.25",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    progress = [line for line in captured.err.splitlines() if line.startswith("synth: ")]
    assert progress[-1] == "synth: 20/20 (100%)" and 5 <= len(progress) <= 11
    assert len(captured.out.splitlines()) == 1 and "15 train, 5 val" in captured.out
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["val"] == "images/val" and len(list((out / "images" / "val").iterdir())) == 5
    assert cv2.imread(str(out / "images" / "train" / "000000.png")).shape == (64, 96, 3)


def test_existing_dataset_needs_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "synth",
        "--domain",
        "night",
        "--seed",
        "1",
        "--count",
        "2",
        "--out",
        str(tmp_path),
        "--size",
        "32x32",
    ]
    (tmp_path / "keep.txt").write_text("x")
    assert _run(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert _run([*argv, "--overwrite"]) == 0
    assert (tmp_path / "keep.txt").exists() and (tmp_path / "data.yaml").exists()


def test_video_into_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(
        [
            "synth",
            "--domain",
            "drifted",
            "--seed",
            "4",
            "--video",
            "--frames",
            "6",
            "--fps",
            "5",
            "--size",
            "72x128",
            "--out",
            str(tmp_path / "videos"),
        ]
    )
    assert code == 0
    target = tmp_path / "videos" / "synthetic-drifted-4.mp4"
    assert str(target) in capsys.readouterr().out
    capture = cv2.VideoCapture(str(target))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--domain", "moon", "--seed", "1", "--count", "2"], "known domains: drifted, factory, night"),
        (["--domain", "factory", "--seed", "1"], "--count N (>= 1) is required"),
        (["--domain", "factory", "--seed", "1", "--count", "2", "--val-fraction", "1.5"], "val_fraction"),
        (["--domain", "factory", "--seed", "1", "--video", "--frames", "0"], "--frames must be >= 1"),
        (["--domain", "factory", "--seed", "1", "--video", "--codec", "xx"], "four-character"),
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: List[str], message: str
) -> None:
    assert _run(["synth", *argv, "--out", str(tmp_path / "o"), "--size", "32x32"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--size", "256"], ["--size", "8x8"], ["--seed", "-1"]])
def test_argparse_rejects_malformed_values(tmp_path: Path, argv: List[str]) -> None:
    base = {"--domain": "factory", "--seed": "1", "--count": "2", "--out": str(tmp_path)}
    base.update(dict(zip(argv[::2], argv[1::2])))
    with pytest.raises(SystemExit) as info:
        _run(["synth", *[item for pair in base.items() for item in pair]])
    assert info.value.code == 2
