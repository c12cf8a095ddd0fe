"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.agent.broker_fixtures"]

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "models" / "demo"

# Ultralytics (trainer tests) must never reach for the network or write into the home directory.
os.environ.setdefault("YOLO_OFFLINE", "1")


def pytest_report_header(config):
    return f"python {sys.version.split()[0]} at {sys.executable}"


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    """The shipped FP32 demo model (trained by the project's own trainer; see models/demo/README.md)."""
    path = Path(os.environ.get("EDGE_TEST_DEMO_MODEL", DEMO_DIR / "demo.onnx"))
    assert path.is_file(), f"the shipped demo model is missing: {path}"
    return path


@pytest.fixture(scope="session")
def demo_int8_model_path() -> Path:
    path = Path(os.environ.get("EDGE_TEST_DEMO_INT8_MODEL", DEMO_DIR / "demo-int8.onnx"))
    assert path.is_file(), f"the shipped INT8 demo model is missing: {path}"
    return path
