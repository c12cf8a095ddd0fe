"""The ingest service against a real mosquitto: everything a device sends ends up in the store, once."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.trainer import helpers as h
from trainer.store import alert_history, fleet, list_samples, open_reader, sample_stats

pytestmark = [pytest.mark.trainer, pytest.mark.broker]


def test_every_kind_is_stored_and_the_registry_filled(tmp_path, broker):
    config = h.trainer_config(tmp_path, broker.port, share_group="ingest")
    device = h.Device(broker.port, "dev-1")
    try:
        with h.running_service(config) as service:
            topic, payload = h.device_status()
            device.publish(topic, payload, retain=True)
            device.publish(*h.camera_status())
            snap_topic, snap_payload, ref = h.snapshot()
            alert_topic, alert_payload, _ = h.alert(snapshot_ref=ref)
            device.publish(alert_topic, alert_payload)
            device.publish(snap_topic, snap_payload)
            device.publish(*h.ota_report())
            samples = [h.sample() for _ in range(20)]
            device.publish_many([(t, p) for t, p, _ in samples])
            assert h.wait_until(lambda: service.writer.snapshot().count("sample", "stored") == 20)
            assert h.wait_until(lambda: service.writer.snapshot().count("ota_state", "stored") == 1)
            with urllib.request.urlopen(f"http://127.0.0.1:{service.http.port}/status") as response:
                status = json.loads(response.read())
            assert status["mqtt"]["connected"] and status["mqtt"]["shared_subscription"]
            with urllib.request.urlopen(f"http://127.0.0.1:{service.http.port}/metrics") as response:
                metrics = response.read().decode()
            assert 'edge_ingest_records_total{kind="sample",outcome="stored"} 20.0' in metrics
    finally:
        device.close()
    assert service.exit_code == 0
    db = open_reader(config.store.index_path)
    stats = sample_stats(db)
    assert stats["samples"] == 20 and stats["alerts"] == 1 and stats["snapshots"] == 1
    stored = {row.id: row for row in list_samples(db, limit=None)}
    assert set(stored) == {meta.id for _, _, meta in samples}
    row = stored[samples[0][2].id]
    assert row.model_sha256 == h.MODEL.sha256 and row.predictions[0]["class_name"] == "crack"
    assert row.worker == "ingest-test" and row.label_state == "pending"
    (alert,) = alert_history(db)
    assert alert.snapshot_id == ref.id and alert.snapshot_sha256 == ref.image.sha256
    (registry,) = fleet(db, now=h.now().timestamp())
    assert registry.state == "online" and registry.model_version == "1.0.0" and registry.ota_phase == "probation"
    assert registry.cameras[0].fps == 9.5 and registry.samples_in_window == {"uncertain": 20}
