"""bench/gpu_check.py without a GPU: its comparison maths, its step bookkeeping and its dry run end to end.

The GPU steps themselves (TensorRT engines, CUDA timings, AMP training) run only on a GPU machine; the dry run
keeps the rest of the script from rotting: argument handling, report writing, the parity and mAP arithmetic
on ONNX Runtime CPU outputs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

from bench.gpu_check import (
    NEEDS_TRT,
    REPO,
    Check,
    Detections,
    Step,
    exit_status,
    match_detections,
    render_markdown,
    strip_option,
)

REF = Detections([[10.0, 10.0, 50.0, 60.0], [100.0, 20.0, 140.0, 90.0]], [0.9, 0.6], [0, 2])


def shifted(dx: float = 0.0, dconf: float = 0.0, cls: Optional[int] = None) -> Detections:
    return Detections(
        [[v + dx for v in box] for box in REF.xyxy],
        [c + dconf for c in REF.conf],
        [cls if cls is not None else c for c in REF.cls],
    )


@pytest.mark.parametrize(
    "test, conf_tol, ok",
    [
        (shifted(), 0.02, True),
        (shifted(dx=1.9), 0.02, True),
        (shifted(dx=2.5), 0.02, False),  # boxes beyond 2 px
        (shifted(dconf=0.015), 0.02, True),
        (shifted(dconf=-0.03), 0.02, False),  # confidence beyond tolerance
        (shifted(dconf=-0.03), None, True),  # INT8: confidences not compared
        (shifted(cls=1), 0.02, False),  # other classes
        (Detections(REF.xyxy[:1], REF.conf[:1], REF.cls[:1]), 0.02, False),  # one missing
        (Detections([*REF.xyxy, [0, 0, 5, 5]], [*REF.conf, 0.8], [*REF.cls, 1]), 0.02, False),  # an extra one
        (Detections([*REF.xyxy, [0, 0, 5, 5]], [*REF.conf, 0.27], [*REF.cls, 1]), 0.02, True),  # at the threshold
    ],
)
def test_match_detections(test: Detections, conf_tol: Optional[float], ok: bool) -> None:
    result = match_detections(REF, test, 2.0, conf_tol, threshold=0.25, margin=0.05)
    assert result["ok"] is ok, result["problems"]


def test_a_step_that_raises_fails_and_the_others_still_run(tmp_path: Path) -> None:
    args = argparse.Namespace(out=tmp_path, work=tmp_path / "work", dry_run=True, budget_s=60.0)
    check = Check(args)

    def broken(step: Step) -> None:
        raise RuntimeError("engine exploded")

    def fine(step: Step) -> None:
        step.check("two is two", 2 == 2, value=2)

    assert check.run("broken", broken).status == "failed"
    assert check.run("gpu-only", fine, needs=("gpu",)).status == "skipped"
    assert check.run("fine", fine).status == "passed"
    assert "engine exploded" in check.steps[0].note
    report = {
        "started": "now",
        "dry_run": True,
        "machine": "here",
        "seconds": 1.0,
        "passed": False,
        "complete": True,
        "not_run": [],
        "steps": [vars(s) for s in check.steps],
    }
    text = render_markdown(report)
    assert "**FAILED**" in text and "| broken | failed |" in text and "| gpu-only | skipped |" in text


def test_dry_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report"
    script = str(REPO / "bench" / "gpu_check.py")
    options = ["--out", str(out), "--work", str(tmp_path / "work"), "--holdout", "4", "--repeats", "3"]
    run = subprocess.run(
        [sys.executable, script, "--dry-run", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    assert report["dry_run"] and report["passed"] and report["complete"]  # a dry run skips, it is not incomplete
    assert [s["status"] for s in report["steps"]] == [
        "passed",  # environment
        "passed",  # models
        "skipped",  # cuda_memory: needs a GPU
        "skipped",  # trt_build: needs a GPU
        "passed",  # parity (ORT CPU against itself: the maths)
        "passed",  # map (FP32 and the INT8 QDQ model through ORT CPU)
        "passed",  # timing (the ORT CPU pipeline)
        "skipped",  # train_amp
        "skipped",  # ort_providers
    ]
    assert 0.0 < steps["map"]["figures"]["ort_fp32"] <= 1.0
    assert steps["parity"]["figures"]["images"] == 5  # the bundled sample + 4 rendered frames
    assert "needs a GPU" in steps["trt_build"]["note"]
    assert "dry run (CPU)" in (out / "gpu_check.md").read_text()


def test_bad_arguments_are_refused() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--holdout", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2 and "must be positive" in run.stderr


def test_a_step_whose_package_is_missing_is_not_run_and_says_why(tmp_path: Path) -> None:
    """On a GPU machine a missing TensorRT skips its steps with the reason; the check is then incomplete (3)."""
    args = argparse.Namespace(out=tmp_path, work=tmp_path / "work", dry_run=False, budget_s=60.0)
    check = Check(args)
    check.have = {"gpu", "cuda"}
    check.missing = {"tensorrt": "not installable: not in the carried wheels"}
    ran = []
    step = check.run("trt_build", lambda s: ran.append(s), needs=NEEDS_TRT)
    assert step.status == "skipped" and step.not_run and not ran
    assert step.note == "needs tensorrt: not installable: not in the carried wheels"
    assert check.run("cuda_memory", lambda s: s.check("ok", True), needs=("gpu", "cuda")).status == "passed"
    report = {
        "started": "now",
        "dry_run": False,
        "machine": "here",
        "seconds": 1.0,
        "passed": True,
        "complete": False,
        "not_run": ["trt_build"],
        "steps": [vars(s) for s in check.steps],
    }
    assert exit_status(report) == 3
    assert "**INCOMPLETE (not run: trt_build)**" in render_markdown(report)


@pytest.mark.parametrize(
    "passed, complete, status",
    [(True, True, 0), (True, False, 3), (False, True, 1), (False, False, 1)],  # a failure outranks a gap
)
def test_exit_status(passed: bool, complete: bool, status: int) -> None:
    assert exit_status({"passed": passed, "complete": complete}) == status


@pytest.mark.parametrize(
    "argv, out",
    [
        (["--out", "x", "--budget-s", "480"], ["--out", "x"]),
        (["--budget-s=480", "--dry-run"], ["--dry-run"]),
        (["--budget-s", "10", "--budget-s", "20", "--wheels", "w"], ["--wheels", "w"]),
        (["--budget-seconds", "5"], ["--budget-seconds", "5"]),  # another option, kept
        ([], []),
    ],
)
def test_strip_option(argv: List[str], out: List[str]) -> None:
    assert strip_option(argv, "--budget-s") == out
