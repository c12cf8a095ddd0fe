"""The agent's test environment on Python 3.8 resolves what a Jetson on JetPack 5 runs: OpenCV 4.x, not 5.x."""

from __future__ import annotations

import sys

import pytest


@pytest.mark.skipif(sys.version_info >= (3, 10), reason="the JetPack 5 interpreter is Python 3.8")
def test_opencv_is_the_major_version_jetpack_ships() -> None:
    import cv2

    assert cv2.__version__.split(".")[0] == "4", cv2.__version__
