"""Fixtures for the camera source tests: real video files, image folders and a local HTTP MJPEG camera."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from agent.sources.camera import CameraSource

from .helpers import MjpegCamera, write_video


@pytest.fixture
def video_file(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.avi")


@pytest.fixture
def started() -> Iterator[Callable[[CameraSource], CameraSource]]:
    """Start sources and make sure every one is stopped at the end of the test."""
    sources: List[CameraSource] = []

    def start(source: CameraSource) -> CameraSource:
        sources.append(source)
        source.start()
        return source

    yield start
    for source in sources:
        assert source.stop(timeout=5.0), f"camera {source.name} did not stop"


@pytest.fixture
def mjpeg_camera() -> Iterator[MjpegCamera]:
    camera = MjpegCamera()
    camera.start()
    yield camera
    camera.stop()
