"""The network thread on its own: alive while the broker is away (the watchdog must not restart a worker that
only waits for its broker), and its death reported by the supervisor."""

from __future__ import annotations

import threading
import time

import pytest

from tests.agent.broker import free_port
from tests.trainer import helpers as h
from trainer.ingest.client import IngestClient
from trainer.ingest.service import IngestService


def test_backing_off_from_an_absent_broker_still_shows_progress(tmp_path):
    config = h.trainer_config(tmp_path, free_port(), broker={"backoff": {"initial_s": 3.0, "max_s": 3.0, "jitter": 0}})
    client = IngestClient(config.ingest, lambda delivery: None)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        first = client.snapshot().iterations
        time.sleep(2.2)  # inside one 3 s backoff
        snapshot = client.snapshot()
        assert snapshot.iterations >= first + 2 and not snapshot.connected
        assert snapshot.connect_failures >= 1 and "connect" in snapshot.last_error
    finally:
        client.request_stop()
        thread.join(5)
    assert not thread.is_alive()


def test_a_dead_worker_thread_ends_the_service_with_status_1(tmp_path, broker):
    config = h.trainer_config(tmp_path, broker.port)

    def broken_store():
        raise RuntimeError("disk on fire")

    service = IngestService(config, open_store=broken_store)
    stop = threading.Event()
    started = time.monotonic()
    code = service.run(stop)
    assert code == 1 and time.monotonic() - started < 10
    (writer,) = [t for t in service.threads if t.name == "store-writer"]
    state = writer.state()
    assert state.state == "died" and "disk on fire" in (state.last_error or "")
    assert any("store-writer died" in p for p in service.problems())


@pytest.mark.parametrize(
    "bad",
    [
        {"sites": []},
        {"sites": ["a", "a"]},
        {"sites": ["x"], "share_group": "a/b"},
        {"sites": ["x"], "topic_prefix": "e/+"},
        {"sites": ["x"], "batch_max_messages": 0},
    ],
)
def test_ingest_config_refuses_what_cannot_work(bad):
    from pydantic import ValidationError

    from trainer.ingest.config import IngestConfig

    with pytest.raises(ValidationError):
        IngestConfig(**bad)
