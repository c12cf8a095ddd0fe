"""Helpers of the cloud-side tests: device messages encoded as the agent encodes them, a trainer.yaml for a
test broker, an in-process ingest service, and a publishing device."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from agent.protocol import (
    AlertEvent,
    AlertRuleRef,
    Box,
    CameraState,
    CameraStatus,
    DeviceStatus,
    ImageInfo,
    ModelRef,
    OtaPhase,
    OtaStateReport,
    SampleMeta,
    SampleReason,
    SnapshotRef,
    SyntheticFrameRef,
    Topics,
    encode_framed,
    encode_json,
)
from tests.agent.link.link_helpers import wait_until as link_wait_until
from trainer.settings import TrainerConfig

REPO = Path(__file__).resolve().parents[2]
MODEL = ModelRef(name="demo", version="1.0.0", sha256="ab" * 32)
_BASE_JPEG: Dict[Tuple[int, int], bytes] = {}


def now() -> datetime:
    return datetime.now(timezone.utc)


def base_jpeg(width: int = 320, height: int = 240) -> bytes:
    """A real JPEG (noise, so it does not compress to nothing)."""
    key = (width, height)
    if key not in _BASE_JPEG:
        rng = np.random.default_rng(7)
        image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        _BASE_JPEG[key] = data.tobytes()
    return _BASE_JPEG[key]


def unique_jpeg(tag: str, width: int = 320, height: int = 240) -> bytes:
    """A valid JPEG with a unique trailer after its end marker (decoders ignore it), so every image differs."""
    return base_jpeg(width, height) + b"EVLTEST" + tag.encode()


def image_info(jpeg: bytes, width: int = 320, height: int = 240) -> ImageInfo:
    return ImageInfo(width=width, height=height, size=len(jpeg), sha256=hashlib.sha256(jpeg).hexdigest())


def sample(
    device: str = "dev-1",
    site: str = "plant-1",
    camera: str = "line-1",
    reason: SampleReason = SampleReason.UNCERTAIN,
    jpeg: Optional[bytes] = None,
    message_id: Optional[str] = None,
    synthetic: Optional[SyntheticFrameRef] = None,
    width: int = 320,
    height: int = 240,
    predictions: Optional[List[Box]] = None,
    **meta: Any,
) -> Tuple[str, bytes, SampleMeta]:
    """(topic, framed payload, meta) of one sample, as the agent sends it."""
    message_id = message_id or uuid.uuid4().hex
    jpeg = jpeg if jpeg is not None else unique_jpeg(message_id, width, height)
    if predictions is None:
        predictions = [Box(x1=10, y1=20, x2=60, y2=90, class_id=1, class_name="crack", confidence=0.41)]
    fields: Dict[str, Any] = {
        "id": message_id,
        "device": device,
        "camera": camera,
        "reason": reason,
        "predictions": predictions,
        "thresholds": {"uncertain_low": 0.3, "uncertain_high": 0.6},
        "model": MODEL,
        "frame_ts": now(),
        "image": image_info(jpeg, width, height),
        "synthetic": synthetic,
    }
    fields.update(meta)
    header = SampleMeta(**fields)
    return Topics("edge", site, device).samples, encode_framed(header, jpeg), header


def snapshot(
    device: str = "dev-1", site: str = "plant-1", snapshot_id: Optional[str] = None
) -> Tuple[str, bytes, SnapshotRef]:
    topics = Topics("edge", site, device)
    jpeg = unique_jpeg(snapshot_id or uuid.uuid4().hex)
    ref = SnapshotRef(id=snapshot_id or uuid.uuid4().hex, topic=topics.snapshots, image=image_info(jpeg))
    return topics.snapshots, encode_framed(ref, jpeg), ref


def alert(
    device: str = "dev-1", site: str = "plant-1", snapshot_ref: Optional[SnapshotRef] = None
) -> Tuple[str, bytes, AlertEvent]:
    event = AlertEvent(
        id=uuid.uuid4().hex,
        device=device,
        camera="line-1",
        model=MODEL,
        frame_ts=now(),
        created_ts=now(),
        boxes=[Box(x1=1, y1=2, x2=30, y2=40, class_id=1, class_name="crack", confidence=0.93, track_id=4)],
        rule=AlertRuleRef(name="cracks", classes=["crack"], min_confidence=0.6, min_frames=3),
        snapshot=snapshot_ref,
    )
    return Topics("edge", site, device).alerts, encode_json(event), event


def device_status(
    device: str = "dev-1",
    site: str = "plant-1",
    state: str = "online",
    ts: Optional[datetime] = None,
    model: Optional[ModelRef] = None,
    groups: Optional[List[str]] = None,
    quality: Optional[Dict[str, Any]] = None,
) -> Tuple[str, bytes]:
    status = DeviceStatus(
        device=device,
        site=site,
        state=state,
        agent_version="0.1.0",
        model=model or MODEL,
        groups=groups or [],
        quality=quality,
        ts=ts or now(),
    )
    return Topics("edge", site, device).status, encode_json(status)


def camera_status(
    device: str = "dev-1", site: str = "plant-1", camera: str = "line-1", fps: float = 9.5
) -> Tuple[str, bytes]:
    status = CameraStatus(
        device=device,
        camera=camera,
        state=CameraState.STREAMING,
        source="synthetic:factory",
        fps=fps,
        frames=100,
        drops=2,
        reconnects=0,
        last_frame_at=now(),
        ts=now(),
    )
    return Topics("edge", site, device).camera_status(camera), encode_json(status)


def ota_report(
    device: str = "dev-1",
    site: str = "plant-1",
    phase: OtaPhase = OtaPhase.PROBATION,
    release: Optional[Dict[str, Any]] = None,
    detail: str = "test",
) -> Tuple[str, bytes]:
    report = OtaStateReport(id=uuid.uuid4().hex, device=device, phase=phase, release=release, detail=detail, ts=now())
    return Topics("edge", site, device).ota_state, encode_json(report)


def trainer_config(tmp_path: Path, port: int, **ingest: Any) -> TrainerConfig:
    """A trainer.yaml for a plain test broker on 127.0.0.1:port, store and state under tmp_path."""
    ingest_section: Dict[str, Any] = {
        "broker": {
            "host": "127.0.0.1",
            "port": port,
            "client_id": "ingest-test",
            "backoff": {"initial_s": 0.1, "max_s": 1.0},
        },
        "sites": ["plant-1"],
    }
    broker_overrides = ingest.pop("broker", {})
    ingest_section["broker"].update(broker_overrides)
    ingest_section.update(ingest)
    store = ingest_section.pop("store", {})
    return TrainerConfig.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "store": {"path": str(tmp_path / "store"), **store},
            "ingest": ingest_section,
            "http": {"enabled": True, "port": 0},
            "logging": {"level": "warning"},
        }
    )


@contextlib.contextmanager
def running_service(config: TrainerConfig, ready: bool = True) -> Iterator[Any]:
    """An IngestService on a thread of this process; stopped (drained) on exit."""
    from trainer.ingest.service import IngestService

    service = IngestService(config)
    stop = threading.Event()
    result: List[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run(stop)), name="test-ingest-main", daemon=True)
    thread.start()
    try:
        if ready:
            assert service.client.wait_ready(15), f"ingest did not connect: {service.client.snapshot()}"
        yield service
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the ingest service did not stop"
    service.exit_code = result[0] if result else None  # type: ignore[attr-defined]


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """The link tests' poller, with a longer default (ingest tests wait on a second process)."""
    return link_wait_until(predicate, timeout, interval)


class Device:
    """A publishing device: a paho client that sends QoS 1 and waits for every PUBACK."""

    def __init__(self, port: int, client_id: str = "", protocol: int = 5) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if protocol == 5 else mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(256)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, retain: bool = False, wait: bool = True) -> Any:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(10)
            assert info.is_published(), f"no PUBACK for {topic}"
        return info

    def publish_many(self, messages: List[Tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, p, qos=1) for t, p in messages]
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def agent_link(tmp_path: Path, port: int, device: str = "dev-1", site: str = "plant-1") -> Any:
    """The agent's own MQTT link and spool (what a real box runs), not started."""
    from agent.link import MqttConfig, MqttLink
    from agent.spool import Spool, SpoolConfig

    spool = Spool(SpoolConfig(path=tmp_path / f"spool-{device}.db", max_bytes=1 << 30))
    config = MqttConfig(
        host="127.0.0.1",
        port=port,
        site=site,
        device=device,
        keepalive_s=5,
        connect_timeout_s=3.0,
        backoff={"initial_s": 0.1, "max_s": 0.5, "jitter": 0.2},
    )

    def status() -> DeviceStatus:
        return DeviceStatus(device=device, site=site, state="online", agent_version="0.1.0", ts=now())

    return MqttLink(config, spool, status)


def write_config(config: TrainerConfig, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    return path


def stored_count(config: TrainerConfig) -> int:
    import sqlite3

    if not config.store.index_path.exists():
        return 0
    try:
        db = sqlite3.connect(str(config.store.index_path), timeout=5)
        try:
            return int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def service_subscribed(config: TrainerConfig) -> bool:
    """The status file of a service running in another process says it is connected and subscribed."""
    import json

    from trainer.ingest.service import status_path

    try:
        return bool(json.loads(status_path(config).read_text())["mqtt"]["subscribed"])
    except (OSError, ValueError, KeyError):
        return False


def synthetic_sample(
    seed: int = 3, index: int = 0, domain: str = "factory", width: int = 320, height: int = 240, device: str = "dev-1"
) -> Tuple[str, bytes, SampleMeta, Any]:
    """A sample of the synthetic camera, as the agent makes it: the rendered frame as JPEG (q90), its render
    identity in the lineage, the true boxes shifted a little as the model's (uncertain) predictions.
    Returns (topic, payload, meta, the rendered SyntheticFrame)."""
    from agent.synthetic import CLASS_NAMES, render_stream_frame

    frame = render_stream_frame(domain, seed, index, size=(height, width))
    ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg = data.tobytes()
    predictions = [
        Box(
            x1=x1 + 2, y1=y1 + 1, x2=x2 + 2, y2=y2 - 1, class_id=int(c), class_name=CLASS_NAMES[int(c)], confidence=0.45
        )
        for (x1, y1, x2, y2), c in zip(frame.boxes.tolist(), frame.class_ids.tolist())
    ]
    ref = SyntheticFrameRef(domain=domain, seed=seed, index=index, width=width, height=height)
    topic, payload, meta = sample(
        device=device, jpeg=jpeg, synthetic=ref, width=width, height=height, predictions=predictions
    )
    return topic, payload, meta, frame


def fill_store(config: TrainerConfig, messages: List[Tuple[str, bytes]]) -> None:
    """Store messages as ingest would (the decoder and the store, without a broker)."""
    from agent.protocol import ProtocolLimits
    from trainer.ingest import decode
    from trainer.store import SampleStore

    store = SampleStore(config.store)
    try:
        records = [decode(t, p, "edge", ProtocolLimits(), time.time(), "test") for t, p in messages]
        store.write_batch([r for r in records if r is not None])
    finally:
        store.close()


def store_config(tmp_path: Path, **labelling: Any) -> Tuple[TrainerConfig, Path]:
    """A trainer.yaml with a store and no ingest (for the CLI tests); returns (config, its path)."""
    config = TrainerConfig.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "store": {"path": str(tmp_path / "store"), "budget": {"min_free_bytes": 0}},
            "labelling": labelling,
            "logging": {"level": "warning"},
        }
    )
    tmp_path.mkdir(parents=True, exist_ok=True)
    return config, write_config(config, tmp_path / "trainer.yaml")


class RecordedActions:
    """Stand-in for the broker at the MQTT seam: keeps retained payloads and sent commands."""

    def __init__(self, retained=None):
        self.retained_topics = dict(retained or {})
        self.sent = []

    def retained(self, topic):
        return self.retained_topics.get(topic) or None

    def publish_retained(self, messages):
        for topic, payload in messages:
            self.retained_topics[topic] = payload

    def send(self, topic, payload):
        self.sent.append((topic, json.loads(payload)))

    def close(self):
        pass


def three_stage_rollout(state_dir: Path) -> Any:
    """Canary group, wide group, then the fleet of site plant-1 (watch 30 s, 30 s, 0 s; judged from 100 frames)."""
    from trainer.rollout.config import RolloutConfig

    return RolloutConfig(
        state_dir=state_dir,
        site="plant-1",
        stages=[
            {"name": "canary", "group": "canary", "min_committed": 1, "watch_s": 30},
            {"name": "wide", "group": "wide", "min_committed": 1, "watch_s": 30},
            {"name": "fleet", "group": None, "min_committed": 3, "watch_s": 0},
        ],
        bounds={"min_frames": 100},
    )
