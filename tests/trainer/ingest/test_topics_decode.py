"""Pure parts of ingest: topic filters and parsing, and the decoder (table-driven)."""

from __future__ import annotations

import json
import struct

import pytest

from agent.protocol import ProtocolLimits, Topics, encode_frame
from tests.trainer import helpers as h
from trainer.ingest import Kind, TopicError, decode, parse_topic, subscription_filters
from trainer.store import AlertIn, CameraStatusIn, DeviceStatusIn, DropIn, OtaReportIn, SampleIn, SnapshotIn

LIMITS = ProtocolLimits()


def test_filters_split_events_and_read_state_directly():
    assert subscription_filters("edge", ["p1"], "ingest") == [
        "$share/ingest/edge/p1/+/samples",
        "$share/ingest/edge/p1/+/alerts",
        "$share/ingest/edge/p1/+/snapshots",
        "$share/ingest/edge/p1/+/ota/state",
        "edge/p1/+/status",
        "edge/p1/+/cameras/+/status",
    ]
    assert subscription_filters("a/b", ["p1", "p2"], None)[0] == "a/b/p1/+/samples"
    assert len(subscription_filters("edge", ["p1", "p2"], None)) == 12


@pytest.mark.parametrize(
    "bad", [("edge", ["p/1"], None), ("edge", ["+"], None), ("ed#ge", ["p"], None), ("edge", ["p"], "g/1")]
)
def test_filters_refuse_levels_that_are_not_levels(bad):
    with pytest.raises(ValueError):
        subscription_filters(*bad)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("edge/p1/d1/samples", ("p1", "d1", Kind.SAMPLE, None)),
        ("edge/p1/d1/alerts", ("p1", "d1", Kind.ALERT, None)),
        ("edge/p1/d1/snapshots", ("p1", "d1", Kind.SNAPSHOT, None)),
        ("edge/p1/d1/ota/state", ("p1", "d1", Kind.OTA_STATE, None)),
        ("edge/p1/d1/status", ("p1", "d1", Kind.STATUS, None)),
        ("edge/p1/d1/cameras/line-1/status", ("p1", "d1", Kind.CAMERA_STATUS, "line-1")),
    ],
)
def test_parse_topic(topic, expected):
    ref = parse_topic(topic, "edge")
    assert (ref.site, ref.device, ref.kind, ref.camera) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "other/p1/d1/samples",
        "edge/p1/samples",
        "edge/p1/d1/cmd",
        "edge/p1/d1/cmd/reply",
        "edge/p1/fleet/models",
        "edge/p1/groups/samples",
        "edge/p1/d1/samples/extra",
        "edge/p1/d1/cameras/line-1/other",
        "edge/p1/d 1/samples",
        "edge/p1//samples",
    ],
)
def test_parse_topic_refuses(topic):
    with pytest.raises(TopicError):
        parse_topic(topic, "edge")


def _decode(topic, payload):
    return decode(topic, payload, "edge", LIMITS, 1000.0, "w1")


def test_decode_every_kind():
    topics = Topics("edge", "plant-1", "dev-1")
    snap_topic, snap_payload, ref = h.snapshot()
    cases = [
        (*h.sample()[:2], SampleIn),
        (snap_topic, snap_payload, SnapshotIn),
        (*h.alert(snapshot_ref=ref)[:2], AlertIn),
        (*h.device_status(), DeviceStatusIn),
        (*h.camera_status(), CameraStatusIn),
        (*h.ota_report(), OtaReportIn),
    ]
    for topic, payload, kind in cases:
        record = _decode(topic, payload)
        assert isinstance(record, kind), (topic, record)
        assert record.origin.device == "dev-1" and record.origin.site == "plant-1" and record.origin.worker == "w1"
    assert _decode(topics.status, b"") is None  # a cleared retained status: nothing to store


def _framed_sample(**changes):
    topic, payload, _ = h.sample()
    n = struct.unpack(">I", payload[4:8])[0]
    header, body = json.loads(payload[8 : 8 + n]), payload[8 + n :]
    body = changes.pop("body", body)
    header.update(changes)
    return topic, encode_frame(json.dumps(header).encode(), body)


@pytest.mark.parametrize(
    ("make", "reason", "device"),
    [
        (lambda: ("edge/p1/d1/cmd", b"{}"), "bad_topic", ""),
        (lambda: (Topics("edge", "plant-1", "dev-1").samples, b""), "bad_frame", "dev-1"),
        (lambda: _framed_sample(device="dev-2"), "device_mismatch", "dev-1"),
        (lambda: _framed_sample(reason="bored"), "invalid", "dev-1"),
        (lambda: _framed_sample(body=b"not a jpeg at all"), "bad_digest", "dev-1"),
        (lambda: (Topics("edge", "plant-1", "dev-1").alerts, b"[1, 2]"), "invalid", "dev-1"),
        (lambda: (Topics("edge", "plant-1", "dev-1").alerts, b'{"id": NaN}'), "bad_json", "dev-1"),
        (lambda: (Topics("edge", "plant-1", "dev-1").status, b"x" * (300 * 1024)), "oversize", "dev-1"),
        (
            lambda: (
                h.camera_status(camera="line-2")[0].replace("line-2", "line-3"),
                h.camera_status(camera="line-2")[1],
            ),
            "camera_mismatch",
            "dev-1",
        ),
        (lambda: (Topics("edge", "plant-1", "dev-9").ota_state, h.ota_report()[1]), "device_mismatch", "dev-9"),
        (lambda: (Topics("edge", "plant-1", "dev-9").snapshots, h.snapshot()[1]), "device_mismatch", "dev-9"),
    ],
)
def test_decode_rejects(make, reason, device):
    topic, payload = make()
    record = _decode(topic, payload)
    assert isinstance(record, DropIn), record
    assert (record.reason.value, record.device) == (reason, device)
    assert record.size == len(payload) and record.head == payload[:4096] and record.detail


def test_a_body_that_is_not_a_jpeg_is_invalid_even_with_a_right_digest():
    import hashlib

    from agent.protocol import ImageInfo, encode_framed

    topic, _, meta = h.sample()
    body = b"GIF89a" + b"\0" * 100
    header = meta.model_copy(
        update={"image": ImageInfo(width=1, height=1, size=len(body), sha256=hashlib.sha256(body).hexdigest())}
    )
    record = _decode(topic, encode_framed(header, body))
    assert isinstance(record, DropIn) and record.reason.value == "invalid" and "JPEG" in record.detail


def test_rejected_message_keeps_its_id_for_forensics():
    topic, payload = _framed_sample(device="dev-2")
    record = _decode(topic, payload)
    assert record.message_id is not None and len(record.message_id) == 32
