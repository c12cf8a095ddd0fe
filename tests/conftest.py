"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.agent.broker_fixtures", "tests.rtsp.fixtures"]

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "models" / "demo"

# Ultralytics (trainer tests) must never reach for the network or write into the home directory.
os.environ.setdefault("YOLO_OFFLINE", "1")


_exit_status = [0]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _exit_status[0] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave without interpreter finalisation once pytest has reported everything.

    Tests leave daemon threads behind by design (a camera reader blocked in a native read, a backend stuck on
    purpose for the watchdog test). If one of them is inside an OpenCV / ONNX Runtime call while C++ statics
    are destroyed at exit, libstdc++ aborts ("terminate called without an active exception", seen once in 10
    full runs on Python 3.11), turning a green run red. The summary is printed and every result is known here.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status[0])


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
