"""Protocol models, topics, framing, inbound parsers (table-driven and fuzzed), committed JSON schemas."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agent.json_schema import undescribed_properties
from agent.protocol import (
    COMMAND_TYPES,
    AlertEvent,
    CommandReply,
    FlagWindowCommand,
    ImageInfo,
    ModelChunkHeader,
    ModelPush,
    ModelRef,
    PingCommand,
    ProtocolError,
    ProtocolErrorReason,
    ProtocolLimits,
    ReleaseRef,
    SampleMeta,
    SetThresholdsCommand,
    Topics,
    encode_framed,
    encode_json,
    parse_alert,
    parse_camera_status,
    parse_command,
    parse_device_status,
    parse_model_chunk,
    parse_model_push,
    parse_ota_state,
    parse_sample,
)
from agent.protocol import models as models_module
from agent.protocol.schema import diff_schemas, schema_documents

ROOT = Path(__file__).resolve().parents[2]
LIMITS = ProtocolLimits()
T = "edge/s/d/cmd"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
SHA = "0" * 64
MODEL = ModelRef(name="demo", version="1.0.0", sha256=SHA)


def sample_meta(jpeg: bytes) -> SampleMeta:
    return SampleMeta(
        id="s-1",
        device="dev-a",
        camera="cam1",
        reason="uncertain",
        track_id=3,
        predictions=[{"x1": 1, "y1": 2, "x2": 3, "y2": 4, "class_id": 0, "class_name": "bolt", "confidence": 0.4}],
        thresholds={"confidence": 0.25, "uncertain_low": 0.3, "uncertain_high": 0.6},
        model=MODEL,
        frame_ts=NOW,
        image=ImageInfo(width=64, height=48, size=len(jpeg), sha256=hashlib.sha256(jpeg).hexdigest()),
    )


# ------------------------------------------------------------------ models


def _all_models() -> list:
    return [
        obj
        for obj in vars(models_module).values()
        if isinstance(obj, type)
        and issubclass(obj, BaseModel)
        and obj.__module__ == models_module.__name__
        and not obj.__name__.startswith("_")
    ]


@pytest.mark.parametrize("model", _all_models(), ids=lambda m: m.__name__)
def test_every_model_forbids_extra_keys_and_describes_every_field(model: type) -> None:
    assert model.model_config.get("extra") == "forbid"
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"


def test_outbound_messages_round_trip_through_json() -> None:
    alert = AlertEvent(
        id="a-1",
        device="dev-a",
        camera="cam1",
        model=MODEL,
        frame_ts=NOW,
        created_ts=NOW,
        boxes=[{"x1": 0, "y1": 0, "x2": 10, "y2": 10, "class_id": 1, "class_name": "crack", "confidence": 0.9}],
        rule={"name": "cracks", "classes": ["crack"], "min_confidence": 0.5, "min_frames": 3},
    )
    assert AlertEvent.model_validate_json(encode_json(alert)) == alert
    reply = CommandReply.failure("r1", "dev-a", NOW, "bad_json", "x" * 5000)
    assert reply.error is not None and len(reply.error.message) == 2048


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        CommandReply.ok("r1", "dev-a", datetime(2026, 1, 1))


# ------------------------------------------------------------------ topics


def test_topic_layout() -> None:
    t = Topics("edge", "plant-1", "jetson-07")
    assert t.status == "edge/plant-1/jetson-07/status"
    assert t.camera_status("cam1") == "edge/plant-1/jetson-07/cameras/cam1/status"
    assert t.cmd_reply == "edge/plant-1/jetson-07/cmd/reply"
    assert t.fleet_models == "edge/plant-1/fleet/models"
    assert t.subscriptions(["line-a"]) == [
        "edge/plant-1/jetson-07/cmd",
        "edge/plant-1/fleet/models",
        "edge/plant-1/groups/line-a/models",
    ]
    assert Topics.chunk_filter(t.fleet_models, 7) == "edge/plant-1/fleet/models/chunks/7/+"


@pytest.mark.parametrize("device", ["", "a/b", "a+", "#", "fleet", "groups", "x" * 200, "bad\x00"])
def test_topic_levels_that_would_break_the_layout_or_the_acl_are_refused(device: str) -> None:
    with pytest.raises(ValueError):
        Topics("edge", "s", device)


# ------------------------------------------------------------------ commands


def test_valid_commands_parse_to_their_types() -> None:
    flag = parse_command(
        T,
        json.dumps(
            {
                "type": "flag_window",
                "request_id": "r1",
                "camera": "cam1",
                "start": NOW.isoformat(),
                "end": NOW.isoformat(),
            }
        ).encode(),
        LIMITS,
    )
    assert isinstance(flag, FlagWindowCommand) and flag.camera == "cam1"
    st_cmd = parse_command(T, b'{"type":"set_thresholds","request_id":"r2","thresholds":{"confidence":0.4}}', LIMITS)
    assert isinstance(st_cmd, SetThresholdsCommand) and st_cmd.thresholds == {"confidence": 0.4}
    assert isinstance(parse_command(T, b'{"type":"ping","request_id":"r3"}', LIMITS), PingCommand)


@pytest.mark.parametrize(
    ("payload", "reason", "request_id"),
    [
        (b"\xc3\x28", ProtocolErrorReason.BAD_UTF8, None),
        (b"", ProtocolErrorReason.BAD_JSON, None),
        (b"{", ProtocolErrorReason.BAD_JSON, None),
        (b'{"type":"ping","request_id":"r","x":NaN}', ProtocolErrorReason.BAD_JSON, None),
        (b"[" * 50_00 + b"]" * 50_00, ProtocolErrorReason.BAD_JSON, None),
        (b'"ping"', ProtocolErrorReason.INVALID, None),
        (b"null", ProtocolErrorReason.INVALID, None),
        (b'{"request_id":"r1"}', ProtocolErrorReason.UNKNOWN_TYPE, "r1"),
        (b'{"type":"reboot","request_id":"r1"}', ProtocolErrorReason.UNKNOWN_TYPE, "r1"),
        (b'{"type":["ping"],"request_id":"r1"}', ProtocolErrorReason.UNKNOWN_TYPE, "r1"),
        (b'{"type":"ping"}', ProtocolErrorReason.INVALID, None),
        (b'{"type":"ping","request_id":"r1","extra":1}', ProtocolErrorReason.INVALID, "r1"),
        (b'{"type":"ping","request_id":"a/b"}', ProtocolErrorReason.INVALID, "a/b"),
        (b'{"type":"request_snapshot","request_id":"r1","camera":5}', ProtocolErrorReason.INVALID, "r1"),
        (
            b'{"type":"flag_window","request_id":"r1","camera":"c","start":"2026-01-01T00:00:00","end":"x"}',
            ProtocolErrorReason.INVALID,
            "r1",
        ),
        (b'{"type":"set_thresholds","request_id":"r1","thresholds":{}}', ProtocolErrorReason.INVALID, "r1"),
        (b'{"type":"ping","request_id":"r1","sent_at":1e400}', ProtocolErrorReason.INVALID, "r1"),
        (b" " * 20_000, ProtocolErrorReason.OVERSIZE, None),
        # a JSON-escaped lone surrogate: no reply could carry it back (and building one used to raise)
        (b'{"type":"ping","request_id":"bb-\\ud800"}', ProtocolErrorReason.INVALID, None),
        (b'{"type":"reboot","request_id":"\\udfff"}', ProtocolErrorReason.UNKNOWN_TYPE, None),
    ],
)
def test_invalid_commands_raise_one_error_with_topic_and_reason(
    payload: bytes, reason: ProtocolErrorReason, request_id: Any
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_command(T, payload, LIMITS)
    assert info.value.reason == reason
    assert info.value.topic == T
    assert info.value.request_id == request_id
    # PROTOCOL.md: every malformed command gets a reply; it must be buildable and encodable
    reply = CommandReply.failure(info.value.request_id, "dev1", datetime.now(timezone.utc), reason.value, "x")
    assert json.loads(encode_json(reply))["request_id"] == request_id


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_command_like = st.fixed_dictionaries(
    {"type": st.sampled_from([*COMMAND_TYPES, "nope"]) | _json_leaf},
    optional={
        "request_id": st.text(max_size=10) | _json_leaf,
        "camera": st.text(max_size=10) | _json,
        "start": st.datetimes().map(lambda d: d.isoformat()) | _json,
        "end": st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()) | _json,
        "thresholds": st.dictionaries(st.text(max_size=8), st.floats() | _json_leaf, max_size=3) | _json,
        "note": _json,
        "sent_at": _json,
        "reason": _json,
    },
)


def _check_never_raises_anything_else(payload: bytes) -> None:
    try:
        parse_command(T, payload, LIMITS)
    except ProtocolError as exc:
        assert exc.topic == T and isinstance(exc.reason, ProtocolErrorReason)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_bytes(payload: bytes) -> None:
    _check_never_raises_anything_else(payload)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fuzz_json_values(value: Any) -> None:
    _check_never_raises_anything_else(json.dumps(value).encode())


@settings(max_examples=600, deadline=None)
@given(_command_like)
def test_fuzz_command_shaped_objects(value: Any) -> None:
    _check_never_raises_anything_else(json.dumps(value).encode())


# ------------------------------------------------------------------ pushes, chunks, samples


def _push(**kw: Any) -> dict:
    base = {
        "release": {"name": "demo", "version": "1.2.0", "counter": 7},
        "channel": "stable",
        "bundle_sha256": SHA,
        "bundle_size": 1000,
        "urls": ["https://releases.example/demo-1.2.0/"],
        "chunks": {"topic": "edge/s/fleet/models/chunks/7", "total": 4, "chunk_size": 256},
        "published_at": NOW.isoformat(),
    }
    base.update(kw)
    return base


def test_model_push() -> None:
    push = parse_model_push("edge/s/fleet/models", json.dumps(_push()).encode(), LIMITS)
    assert isinstance(push, ModelPush) and push.release.counter == 7 and push.chunks is not None
    with pytest.raises(ProtocolError) as info:
        parse_model_push("t", json.dumps(_push(release={"name": "x", "version": "1", "counter": -1})).encode(), LIMITS)
    assert info.value.reason == ProtocolErrorReason.INVALID


def _chunk(data: bytes, **kw: Any) -> ModelChunkHeader:
    fields = {
        "release": ReleaseRef(name="demo", version="1.2.0", counter=7),
        "bundle_sha256": SHA,
        "index": 1,
        "total": 4,
        "offset": 256,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    fields.update(kw)
    return ModelChunkHeader(**fields)


def test_model_chunk_is_verified_before_it_is_returned() -> None:
    data = bytes(range(256))
    header, body = parse_model_chunk("c", encode_framed(_chunk(data), data), LIMITS)
    assert body == data and header.index == 1
    for payload, reason in [
        (encode_framed(_chunk(data), data[:-1] + b"\x00"), ProtocolErrorReason.BAD_DIGEST),
        (encode_framed(_chunk(data), data[:-1]), ProtocolErrorReason.BAD_DIGEST),
        (encode_framed(_chunk(data, index=4), data), ProtocolErrorReason.INVALID),
        (b"EVL0" + encode_framed(_chunk(data), data)[4:], ProtocolErrorReason.BAD_FRAME),
        (b"EVL1\x00\x00\xff\xff{}", ProtocolErrorReason.BAD_FRAME),
        (b"EVL1", ProtocolErrorReason.BAD_FRAME),
        (b"EVL1\x00\x00\x00\x02[]", ProtocolErrorReason.INVALID),
        (b"x" * (LIMITS.max_chunk_bytes + 1), ProtocolErrorReason.OVERSIZE),
    ]:
        with pytest.raises(ProtocolError) as info:
            parse_model_chunk("c", payload, LIMITS)
        assert info.value.reason == reason, payload[:16]


def test_sample_frame_round_trip() -> None:
    jpeg = b"\xff\xd8" + bytes(1000) + b"\xff\xd9"
    meta = sample_meta(jpeg)
    got, body = parse_sample("s", encode_framed(meta, jpeg), LIMITS)
    assert got == meta and body == jpeg


def test_sample_carries_the_synthetic_identity_when_there_is_one() -> None:
    jpeg = b"\xff\xd8" + bytes(10) + b"\xff\xd9"
    ref = {"domain": "drifted", "seed": 3, "index": 17, "width": 64, "height": 48}
    meta = sample_meta(jpeg).model_copy(update={"synthetic": models_module.SyntheticFrameRef(**ref)})
    got, _ = parse_sample("s", encode_framed(meta, jpeg), LIMITS)
    assert got.synthetic is not None and got.synthetic.model_dump() == ref
    assert sample_meta(jpeg).synthetic is None  # real cameras send none
    header = json.loads(encode_json(meta))
    for bad in ({**ref, "index": -1}, {**ref, "domain": "a/b"}, {**ref, "width": 0}, {**ref, "extra": 1}):
        with pytest.raises(ProtocolError) as info:
            parse_sample("s", encode_frame_raw({**header, "synthetic": bad}, jpeg), LIMITS)
        assert info.value.reason == ProtocolErrorReason.INVALID


def encode_frame_raw(header: Dict[str, Any], body: bytes) -> bytes:
    from agent.protocol import encode_frame

    return encode_frame(json.dumps(header).encode(), body)


def test_rollback_may_name_the_release_to_leave() -> None:
    payload = (
        b'{"type": "rollback", "request_id": "r-1", "if_active": {"name": "demo", "version": "1.1.0", "counter": 2}}'
    )
    command = parse_command(T, payload, LIMITS)
    assert command.type == "rollback" and command.if_active.counter == 2  # type: ignore[union-attr]
    bad = b'{"type": "rollback", "request_id": "r-1", "if_active": {"name": "demo", "counter": -1}}'
    with pytest.raises(ProtocolError) as info:
        parse_command(T, bad, LIMITS)
    assert info.value.reason == ProtocolErrorReason.INVALID and info.value.request_id == "r-1"


def test_device_status_carries_groups_and_the_models_figures() -> None:
    status = {
        "device": "d",
        "site": "s",
        "state": "online",
        "agent_version": "0.1.0",
        "ts": "2026-01-02T03:04:05Z",
        "groups": ["canary"],
        "quality": {
            "model_sha256": SHA,
            "since": "2026-01-02T03:00:00Z",
            "frames": 100,
            "detections": 250,
            "confidence_sum": 180.5,
            "alerts": 3,
            "uncertain_frames": 7,
        },
    }
    parsed = parse_device_status("t", json.dumps(status).encode(), LIMITS)
    assert parsed.groups == ["canary"] and parsed.quality is not None and parsed.quality.frames == 100
    for change in ({"groups": ["a/b"]}, {"quality": {**status["quality"], "frames": 2**64}}):  # type: ignore[dict-item]
        with pytest.raises(ProtocolError):
            parse_device_status("t", json.dumps({**status, **change}).encode(), LIMITS)


def test_device_message_parsers_for_ingest() -> None:
    status = {"device": "d", "site": "s", "state": "online", "agent_version": "0.1.0", "ts": "2026-01-02T03:04:05Z"}
    assert parse_device_status("t", json.dumps(status).encode(), LIMITS).state == "online"
    camera = {
        "device": "d",
        "camera": "c",
        "state": "streaming",
        "source": "rtsp://cam",
        "fps": 1.0,
        "frames": 1,
        "drops": 0,
        "reconnects": 0,
        "ts": "2026-01-02T03:04:05Z",
    }
    assert parse_camera_status("t", json.dumps(camera).encode(), LIMITS).camera == "c"
    report = {"id": "r1", "device": "d", "phase": "committed", "ts": "2026-01-02T03:04:05Z"}
    assert parse_ota_state("t", json.dumps(report).encode(), LIMITS).phase.value == "committed"
    alert = json.loads(
        encode_json(
            AlertEvent(
                id="a1",
                device="d",
                camera="c",
                model=MODEL,
                frame_ts=NOW,
                created_ts=NOW,
                boxes=[],
                rule={"name": "r", "min_confidence": 0.5, "min_frames": 1},
            )
        )
    )
    assert parse_alert("t", json.dumps(alert).encode(), LIMITS).id == "a1"
    for parser, doc in ((parse_device_status, status), (parse_camera_status, camera), (parse_ota_state, report)):
        with pytest.raises(ProtocolError) as info:
            parser("t", json.dumps({**doc, "ts": "2026-01-02T03:04:05"}).encode(), LIMITS)  # naive time
        assert info.value.reason == ProtocolErrorReason.INVALID
        with pytest.raises(ProtocolError) as info:
            parser("t", b"x" * (LIMITS.max_report_bytes + 1), LIMITS)
        assert info.value.reason == ProtocolErrorReason.OVERSIZE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_framed_parsers(payload: bytes) -> None:
    for parser in (parse_model_chunk, parse_sample):
        with contextlib.suppress(ProtocolError):
            parser("t", b"EVL1" + payload, LIMITS)


# ------------------------------------------------------------------ schemas


def test_committed_schemas_equal_the_generated_ones() -> None:
    problems = diff_schemas(ROOT / "docs" / "schemas")
    assert problems == [], "run: python -m agent.protocol.schema docs/schemas"


def test_schemas_describe_every_property() -> None:
    for name, text in schema_documents().items():
        assert undescribed_properties(text) == [], name
