"""pytest fixtures for a real RTSP server (a pytest plugin: tests/conftest.py loads it).

    def test_x(rtsp_clips, rtsp_server):
        server = rtsp_server({"/cam": rtsp_clips["h264"]}, user="op", password="pw")   # started
        ...                                                                              # stopped at the end

``EVL_REQUIRE_RTSP=1`` (``make test`` sets it) turns a missing server into a failure instead of a loud skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping

import pytest

from tests.rtsp.clips import TEST_CLIPS, Clip, ensure_clip
from tests.rtsp.server import RtspServer, missing_packages

REQUIRE = os.environ.get("EVL_REQUIRE_RTSP") == "1"


def _need_server() -> None:
    why = missing_packages()
    if why:
        if REQUIRE:
            pytest.fail(f"the RTSP server cannot run (EVL_REQUIRE_RTSP=1): {why}")
        pytest.skip(f"SKIPPED LOUDLY: the RTSP server cannot run here: {why}")


@pytest.fixture(scope="session")
def rtsp_clips() -> Dict[str, Clip]:
    """Every test clip, encoded once and cached (tests/rtsp/clips.py)."""
    _need_server()
    return {name: ensure_clip(spec) for name, spec in TEST_CLIPS.items()}


@pytest.fixture
def rtsp_server(tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    """Start RTSP servers (each in its own process); all are stopped at the end of the test."""
    _need_server()
    servers: List[RtspServer] = []

    def start(mounts: Mapping[str, Clip], **options: Any) -> RtspServer:
        server = RtspServer(tmp_path / f"rtsp-{len(servers)}", mounts, **options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()
