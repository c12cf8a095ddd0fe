"""The offline guard: any non-loopback connection or DNS lookup is refused at once, recorded, and fails the run."""

from __future__ import annotations

import socket

import pytest

from trainer.offline import NetworkAccessError, offline_environment, prepare_config_dir

pytestmark = pytest.mark.trainer


def test_remote_connection_is_refused_and_reported(tmp_path):
    with pytest.raises(NetworkAccessError, match="192.0.2.1:443"), offline_environment(tmp_path):
        s = socket.socket()
        try:
            with pytest.raises(NetworkAccessError):
                s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed; the guard must stop it first
        finally:
            s.close()


def test_dns_lookup_is_refused(tmp_path):
    with pytest.raises(NetworkAccessError, match="DNS lookup of example.com"), offline_environment(tmp_path):
        with pytest.raises(NetworkAccessError):
            socket.getaddrinfo("example.com", 443)


def test_swallowed_attempt_still_fails_the_run(tmp_path):
    """A library that catches the error and falls back silently must not hide the attempt."""
    with pytest.raises(NetworkAccessError), offline_environment(tmp_path):
        try:
            socket.create_connection(("198.51.100.7", 80), timeout=1)
        except OSError:
            pass


def test_loopback_stays_open(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with offline_environment(tmp_path) as attempts:
            client = socket.create_connection(server.getsockname(), timeout=2)
            client.close()
        assert attempts == []
    finally:
        server.close()


def test_fonts_are_provided_locally(tmp_path):
    prepare_config_dir(tmp_path)
    assert (tmp_path / "Ultralytics" / "Arial.ttf").stat().st_size > 10_000
    assert (tmp_path / "Ultralytics" / "Arial.Unicode.ttf").is_file()


def test_environment_is_restored(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    with offline_environment(tmp_path):
        import os

        assert os.environ["YOLO_OFFLINE"] == "1"
    import os

    assert "YOLO_OFFLINE" not in os.environ
