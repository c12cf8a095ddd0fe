"""Bad input over a real broker: every kind of bad message is rejected and counted per device and reason, the
service keeps running, and good messages around them are stored. And a full store refuses new images."""

from __future__ import annotations

import json
import struct

import pytest

from agent.protocol import Topics, encode_frame
from tests.trainer import helpers as h
from trainer.store import drop_counts, list_samples, open_reader, sample_stats

pytestmark = [pytest.mark.trainer, pytest.mark.broker]


def bad_messages():
    topic, payload, _ = h.sample(device="dev-1")
    header_len = struct.unpack(">I", payload[4:8])[0]
    header = json.loads(payload[8 : 8 + header_len])
    body = payload[8 + header_len :]

    def framed(doc, data=body):
        return encode_frame(json.dumps(doc).encode(), data)

    flipped = bytearray(body)
    flipped[100] ^= 0xFF
    return [
        ("bad_frame", "dev-1", topic, b"EVL2" + payload[4:]),
        ("bad_frame", "dev-1", topic, payload[: 8 + header_len - 5]),
        ("bad_digest", "dev-1", topic, framed(header, bytes(flipped))),
        ("bad_digest", "dev-1", topic, framed(header, body[:-1])),
        ("oversize", "dev-1", topic, payload + b"\0" * (10 * 1024 * 1024)),
        ("invalid", "dev-1", topic, framed({**header, "reason": "bored"})),
        ("invalid", "dev-1", topic, framed({**header, "extra": 1})),
        ("bad_json", "dev-1", topic, encode_frame(b"{not json", body)),
        ("bad_utf8", "dev-1", Topics("edge", "plant-1", "dev-1").alerts, b"\xff\xfe{}"),
        ("invalid", "dev-1", topic, framed({**header, "image": {**header["image"], "sha256": "z" * 64}})),
        # dev-2 (the topic, the identity the broker authenticated) sends a sample claiming to be dev-1
        ("device_mismatch", "dev-2", Topics("edge", "plant-1", "dev-2").samples, payload),
        ("device_mismatch", "dev-2", Topics("edge", "plant-1", "dev-2").status, h.device_status("dev-1")[1]),
        (
            "site_mismatch",
            "dev-1",
            *h.device_status("dev-1", site="plant-9")[:1],
            h.device_status("dev-1", site="plant-9")[1],
        ),
    ]


def test_bad_messages_are_rejected_counted_and_nothing_stops(tmp_path, broker):
    config = h.trainer_config(tmp_path, broker.port)
    bad = bad_messages()
    # the site-mismatch status is published under plant-1's topic
    bad[-1] = ("site_mismatch", "dev-1", Topics("edge", "plant-1", "dev-1").status, bad[-1][3])
    device = h.Device(broker.port, "dev-x")
    try:
        with h.running_service(config) as service:
            good_before = [h.sample() for _ in range(3)]
            device.publish_many([(t, p) for t, p, _ in good_before])
            for _, _, topic, payload in bad:
                device.publish(topic, payload)
            good_after = [h.sample() for _ in range(3)]
            device.publish_many([(t, p) for t, p, _ in good_after])
            assert h.wait_until(lambda: service.writer.snapshot().count("sample", "stored") == 6)
            assert h.wait_until(lambda: service.writer.snapshot().count("rejected", "dropped") == len(bad))
            assert all(t.alive for t in service.threads)
    finally:
        device.close()
    db = open_reader(config.store.index_path)
    expected = {}
    for reason, dev, _, _ in bad:
        expected[(dev, reason)] = expected.get((dev, reason), 0) + 1
    counted = {(d["device"], d["reason"]): d["count"] for d in drop_counts(db)}
    assert counted == expected
    assert {r.id for r in list_samples(db, limit=None)} == {m.id for _, _, m in good_before + good_after}
    # the forensic copy keeps the first bytes only, even of the 10 MB payload
    sizes = [row[0] for row in db.execute("SELECT length(head) FROM rejected WHERE reason = 'oversize'")]
    assert sizes == [4096]


def test_full_store_refuses_new_images_keeps_old_ones_and_says_so(tmp_path, broker):
    first = [h.sample() for _ in range(4)]
    size = first[0][2].image.size
    config = h.trainer_config(
        tmp_path, broker.port, store={"budget": {"max_bytes": size * 4 + 10, "min_free_bytes": 0}}
    )
    device = h.Device(broker.port, "dev-1")
    try:
        with h.running_service(config) as service:
            device.publish_many([(t, p) for t, p, _ in first])
            assert h.wait_until(lambda: service.writer.snapshot().count("sample", "stored") == 4)
            assert not service.writer.snapshot().store_full  # 10 bytes left: nothing refused yet
            later = [h.sample() for _ in range(3)]
            device.publish_many([(t, p) for t, p, _ in later])
            device.publish(*h.alert()[:2])  # small records are still kept
            assert h.wait_until(lambda: service.writer.snapshot().count("sample", "refused") == 3)
            assert h.wait_until(lambda: service.writer.snapshot().count("alert", "stored") == 1)
            assert service.writer.snapshot().store_full
            status = service.status()
            assert status["store"]["full"] and any("store full" in w for w in status["warnings"])
            assert not status["problems"]  # full is a state to report, not a failure of the service
    finally:
        device.close()
    db = open_reader(config.store.index_path)
    assert {r.id for r in list_samples(db, limit=None)} == {m.id for _, _, m in first}
    assert sample_stats(db)["drops_by_reason"] == {"store_full": 3}
