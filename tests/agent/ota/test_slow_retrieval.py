"""Slow retrieval (TUF's freeze / slow-retrieval threat), through a hostile HTTP server on loopback: a body
trickled a byte at a time, and headers trickled a byte at a time. Each fetch is held to a deadline and a minimum
average rate; the attempt ends `too_slow`, the install state is free again, and a good server works next."""

from __future__ import annotations

import socketserver
import time
from pathlib import Path
from typing import Iterator

import pytest

from agent.ota import HttpFetcher, OtaLimits, TooSlowError, TransferPace, TransportError
from tests.agent.ota.conftest import QuietHandler, World, make_config, serve_directory, serving

FAST_PACE = {"fetch_deadline_s": 20.0, "fetch_min_rate": 200.0, "fetch_grace_s": 1.0}


class TricklingBody(QuietHandler):
    """Serves the repository, but timestamp.json at one byte every 0.2 s (5 bytes/s)."""

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        if not self.path.endswith("timestamp.json"):
            super().copyfile(source, outputfile)
            return
        for byte in iter(lambda: source.read(1), b""):
            outputfile.write(byte)
            outputfile.flush()
            time.sleep(0.2)


class TricklingHeaders(socketserver.BaseRequestHandler):
    """Answers every request with a status line and headers that never end (a byte every 0.2 s)."""

    def handle(self) -> None:
        self.request.recv(65536)
        try:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 10_000:
                self.request.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up: what it should do


@pytest.fixture
def trickle_server() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TricklingHeaders)
    server.daemon_threads = True
    with serving(server) as url:
        yield url


def test_a_trickled_timestamp_ends_too_slow_and_frees_the_state(world: World, tmp_path: Path) -> None:
    world.release("1.0.0")
    world.config = make_config(tmp_path, world.repo_path, limits=OtaLimits(**FAST_PACE))
    inst = world.installer()
    started = time.monotonic()
    with serve_directory(world.repo_path, TricklingBody) as slow:
        with pytest.raises(TransportError) as info:
            inst.install_url(slow)
    took = time.monotonic() - started
    assert info.value.reason == "too_slow", info.value
    assert "timestamp.json" in str(info.value) and "bytes/s" in str(info.value)
    assert took < 10, f"the slow server held the install {took:.1f} s"
    status = inst.status()
    assert status["pending"] is None, status  # not left "pending: downloading" until a restart
    with serve_directory(world.repo_path) as good:
        assert inst.install_url(good).version == "1.0.0"  # the retry works on a good server


def test_trickled_headers_end_too_slow_within_the_grace(trickle_server: str) -> None:
    fetcher = HttpFetcher(timeout_s=30.0, pace=TransferPace(deadline_s=60.0, min_bytes_per_s=100.0, grace_s=1.0))
    started = time.monotonic()
    with pytest.raises(TooSlowError, match="no response headers within 1 s"):
        list(fetcher.fetch_range(trickle_server + "/metadata/timestamp.json", 0))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("received", "elapsed", "slow"),
    [
        (0, 0.5, False),  # within the grace nothing is judged
        (10, 2.0, True),  # 5 bytes/s after the grace
        (10_000, 2.0, False),  # 5000 bytes/s
        (10**9, 61.0, True),  # fast but past the deadline
    ],
)
def test_pace(received: int, elapsed: float, slow: bool) -> None:
    pace = TransferPace(deadline_s=60.0, min_bytes_per_s=1000.0, grace_s=1.0)
    if slow:
        with pytest.raises(TooSlowError):
            pace.check("u", received, elapsed)
    else:
        pace.check("u", received, elapsed)
