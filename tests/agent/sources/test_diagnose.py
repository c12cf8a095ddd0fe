"""Why a network camera did not open (agent.sources.diagnose), against real loopback servers: refused, silent,
RTSP 401 / 404, HTTP 401; DNS failure through the resolver seam; and the message a failed open now carries."""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
from typing import ClassVar, Iterator, List, Optional

import pytest

from agent.sources import diagnose
from agent.sources.diagnose import describe_status, diagnose_stream_url
from agent.sources.errors import SourceUnavailableError
from agent.sources.readers import open_ffmpeg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Rtsp(socketserver.StreamRequestHandler):
    code = 401
    seen: ClassVar[List[str]] = []

    def handle(self) -> None:
        request = self.rfile.readline(1024).decode("latin-1")
        type(self).seen.append(request)
        while self.rfile.readline(1024).strip():
            pass
        self.wfile.write(f"RTSP/1.0 {self.code} Whatever\r\nCSeq: 1\r\n\r\n".encode())


@pytest.fixture
def rtsp_server() -> Iterator[socketserver.TCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Rtsp)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "code, creds, fragment",
    [
        (401, False, "wants credentials"),
        (401, True, "refused the configured user / password"),
        (403, True, "may not view"),
        (404, False, "no stream at this path"),
        (503, False, "internal error"),
        (200, False, "could not be decoded"),
    ],
)
def test_describe_status(code: int, creds: bool, fragment: str) -> None:
    assert fragment in describe_status("RTSP", code, creds)


@pytest.mark.parametrize("code, fragment", [(401, "wants credentials"), (404, "no stream at this path")])
def test_rtsp_status_from_a_real_server(rtsp_server: socketserver.TCPServer, code: int, fragment: str) -> None:
    _Rtsp.code = code
    port = rtsp_server.server_address[1]
    why = diagnose_stream_url(f"rtsp://127.0.0.1:{port}/stream1")
    assert why is not None and fragment in why and f"RTSP {code}" in why


def test_credentials_never_appear_and_change_the_sentence(rtsp_server: socketserver.TCPServer) -> None:
    _Rtsp.code = 401
    _Rtsp.seen = []
    port = rtsp_server.server_address[1]
    why = diagnose_stream_url(f"rtsp://admin:s3cret@127.0.0.1:{port}/h264")
    assert why is not None and "refused the configured user / password" in why
    assert "s3cret" not in why and "admin" not in why
    assert _Rtsp.seen and "s3cret" not in _Rtsp.seen[0]  # the probe does not send them either


def test_connection_refused() -> None:
    port = free_port()
    why = diagnose_stream_url(f"rtsp://127.0.0.1:{port}/x")
    assert why is not None and f"connection refused by 127.0.0.1:{port}" in why


def test_a_listener_that_never_answers() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        why = diagnose_stream_url(f"rtsp://127.0.0.1:{port}/x", timeout_s=0.5)
    assert why is not None and "accepts connections but" in why


def test_http_401() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        why = diagnose_stream_url(f"http://127.0.0.1:{server.server_address[1]}/mjpeg")
        assert why is not None and "HTTP 401" in why
    finally:
        server.shutdown()
        server.server_close()


def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # the resolver is the seam: no DNS server answers in this sandbox, and a test must not wait on one
    def no_such_host(*args: object, **kw: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(diagnose.socket, "getaddrinfo", no_such_host)
    assert diagnose_stream_url("rtsp://cam-7.plant.example/live") == (
        "DNS lookup of cam-7.plant.example failed (Name or service not known)"
    )


@pytest.mark.parametrize("url", ["/videos/a.mp4", "file:///x.mp4", "nonsense", "rtsp://"])
def test_not_a_network_url(url: str) -> None:
    assert diagnose_stream_url(url) is None


def test_a_failed_open_says_why() -> None:
    # an HTTP camera (OpenCV's FFmpeg); RTSP cameras open through GStreamer: test_rtsp_camera.py
    port = free_port()
    with pytest.raises(SourceUnavailableError) as info:
        open_ffmpeg(f"http://127.0.0.1:{port}/mjpeg", live=True, open_timeout_s=2, what="camera door (http)")
    message: Optional[str] = str(info.value)
    assert message is not None and "camera door (http): cannot open: connection refused by 127.0.0.1" in message
