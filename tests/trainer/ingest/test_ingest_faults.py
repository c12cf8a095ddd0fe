"""Ingest under faults, with the agent's own link and spool as the device: SIGKILL of the service mid-stream,
and a broker restart mid-stream. Every sample must be stored exactly once."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.trainer import helpers as h
from trainer.store import LocalBlobStore, drop_counts, list_samples, open_reader

pytestmark = [pytest.mark.trainer, pytest.mark.broker]


def spool_samples(link, count: int, device: str = "dev-1"):
    expected = {}
    for _ in range(count):
        topic, payload, meta = h.sample(device=device)
        link.spool.put("sample", topic, payload, message_id=meta.id)
        expected[meta.id] = meta.image.sha256
    return expected


def check_stored_once(config, expected):
    db = open_reader(config.store.index_path)
    rows = list_samples(db, limit=None, with_labels=False)
    assert len(rows) == len(expected), "a sample is missing or stored twice"
    assert {r.id: r.image_sha256 for r in rows} == expected
    blobs = LocalBlobStore(config.store.path)
    try:
        digests = set(blobs.iter_digests())
        assert digests == set(expected.values())
        for sha in list(digests)[:50]:
            assert hashlib.sha256(blobs.get(sha)).hexdigest() == sha
    finally:
        blobs.close()
    return {(d["device"], d["reason"]): d["count"] for d in drop_counts(db)}


def start_serve(config_path, log):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.cli", "serve", "--config", str(config_path)], stdout=log, stderr=log, env=env
    )


def stop_mid_stream(tmp_path, broker, count, stop_after, stop):
    """Stream ``count`` samples from the agent's link into `edge-trainer serve` (its own process), call
    ``stop(process, config)`` once ``stop_after`` are stored, start the service again, and check that every
    sample ends up stored exactly once. Returns the drop counters."""
    config = h.trainer_config(tmp_path, broker.port, batch_max_messages=64)
    config_path = h.write_config(config, tmp_path / "trainer.yaml")
    link = h.agent_link(tmp_path, broker.port)
    expected = spool_samples(link, count)
    log = open(tmp_path / "serve.log", "ab")
    serve = start_serve(config_path, log)
    try:
        # the service's session must exist before the device sends, or the broker has nowhere to queue
        assert h.wait_until(lambda: h.service_subscribed(config), 30), (tmp_path / "serve.log").read_text()
        link.start()
        assert h.wait_until(lambda: h.stored_count(config) >= stop_after, 60), "nothing stored"
        stop(serve, config)
        assert h.stored_count(config) < count, "the stream was over before the stop; nothing tested"
        serve = start_serve(config_path, log)
        assert h.wait_until(lambda: h.stored_count(config) == count, 120), f"stuck at {h.stored_count(config)}"
        assert h.wait_until(lambda: len(link.spool) == 0, 30)
        time.sleep(0.5)  # anything still arriving would be a second copy
        return check_stored_once(config, expected)
    finally:
        link.stop()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        log.close()


def test_sigkill_mid_stream_loses_nothing_stores_nothing_twice(tmp_path, broker):
    def kill(serve, config):
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)

    drops = stop_mid_stream(tmp_path, broker, 2000, 400, kill)
    # what was stored but not yet acknowledged at the kill came again and was recognised
    print(f"duplicates recognised after the restart: {drops}")


def test_sigterm_drains_acknowledges_what_it_stored_and_exits_0(tmp_path, broker):
    def terminate(serve, config):
        started = time.monotonic()
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
        assert time.monotonic() - started < config.ingest.drain_timeout_s

    drops = stop_mid_stream(tmp_path, broker, 1500, 300, terminate)
    # everything stored before the stop was acknowledged before the process left: nothing came twice
    assert drops.get(("dev-1", "duplicate_id"), 0) == 0, drops


def test_broker_restart_mid_stream_loses_nothing(tmp_path, broker_factory):
    broker = broker_factory(persistence=True)
    broker.start()
    config = h.trainer_config(tmp_path, broker.port, batch_max_messages=64)  # one worker, plain subscription
    link = h.agent_link(tmp_path, broker.port)
    expected = spool_samples(link, 800)
    with h.running_service(config) as service:
        link.start()
        assert h.wait_until(lambda: h.stored_count(config) >= 200, 60)
        broker.restart(down_for=1.0)
        assert h.wait_until(lambda: h.stored_count(config) == 800, 120), f"stuck at {h.stored_count(config)}"
        assert h.wait_until(lambda: len(link.spool) == 0, 30)
        client = service.client.snapshot()
        assert client.connects >= 2 and client.disconnects >= 1  # it reconnected and resubscribed
        link.stop()
    check_stored_once(config, expected)


def test_mosquitto_drops_shared_subscriptions_at_restart(tmp_path, broker_factory):
    """The broker limitation docs/CLOUD.md warns about, kept as a canary: mosquitto 2.0 restores a persistent
    session's plain subscriptions after a restart, not its shared ones, so messages published before the
    worker subscribes again are dropped by the broker (the worker itself then takes everything that follows).
    If this test fails, the broker was fixed: update docs/CLOUD.md and the share_group description."""
    broker = broker_factory(persistence=True)
    broker.start()
    config = h.trainer_config(tmp_path, broker.port, share_group="ingest")
    device = h.Device(broker.port, "dev-1")
    with h.running_service(config) as service:
        before = [h.sample() for _ in range(5)]
        device.publish_many([(t, p) for t, p, _ in before])
        assert h.wait_until(lambda: h.stored_count(config) == 5)
        service.client.close_intake()  # the worker stays away while the broker restarts
    device.close()
    broker.restart()
    device = h.Device(broker.port, "dev-1")
    gap = [h.sample() for _ in range(5)]
    device.publish_many([(t, p) for t, p, _ in gap])
    with h.running_service(config):
        after = [h.sample() for _ in range(5)]
        device.publish_many([(t, p) for t, p, _ in after])
        assert h.wait_until(lambda: h.stored_count(config) == 10)
        time.sleep(1.0)
    device.close()
    stored = {row.id for row in list_samples(open_reader(config.store.index_path), limit=None)}
    assert stored == {m.id for _, _, m in before + after}, "the broker now keeps shared subscriptions"


def test_mqtt_311_runs_as_one_worker_and_says_so(tmp_path, broker):
    config = h.trainer_config(tmp_path, broker.port, share_group="ingest", broker={"protocol": "3.1.1"})
    device = h.Device(broker.port, "dev-1", protocol=4)
    try:
        with h.running_service(config) as service:
            device.publish_many([(t, p) for t, p, _ in (h.sample() for _ in range(10))])
            assert h.wait_until(lambda: service.writer.snapshot().count("sample", "stored") == 10)
            client = service.client.snapshot()
            assert client.protocol == "3.1.1" and not client.shared_subscription
            assert not any(f.startswith("$share/") for f in client.filters)
            assert any("3.1.1" in w for w in service.status()["warnings"])
    finally:
        device.close()
