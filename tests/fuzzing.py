"""Fuzz targets: every parser of bytes that reach the agent from outside, with the errors each may raise.

One table for three runners: the hypothesis tests of the suite (tests/agent/test_fuzz_parsers.py, a few
hundred examples each), the deeper run that records counts (``bench/fuzz.py``: hypothesis with many examples,
then atheris, coverage-guided, on the same targets where it installs), and any regression test a finding
becomes. A target takes bytes, parses them the way the agent does, and may raise only its documented error
types (bad data is a clear, typed error; anything else is a finding).

Targets: every inbound MQTT topic's parser (commands, model pushes, chunks with their framing, and the status,
alert, sample, snapshot and OTA-report parsers the cloud ingest shares), the configuration file, release
manifests, TUF metadata as the OTA client receives it (through the real ngclient updater over an in-memory
fetcher), USB bundle archives (vetting and extraction), and the ONNX metadata reader with the model-metadata
checks on what it returns.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import io
import json
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Type

from agent.config import ConfigError, load_config
from agent.core.model_meta import MetadataError, parse_model_metadata
from agent.core.onnx_proto import OnnxParseError, parse_onnx_model
from agent.core.release import ReleaseError, parse_manifest
from agent.ota.bundle import extract_tar, read_bundle_json, vet_tar
from agent.ota.errors import OtaError
from agent.protocol import (
    AlertEvent,
    AlertRuleRef,
    Box,
    CameraState,
    CameraStatus,
    DeviceStatus,
    ImageInfo,
    ModelChunkHeader,
    ModelRef,
    OtaPhase,
    OtaStateReport,
    ProtocolError,
    ProtocolLimits,
    ReleaseRef,
    SampleMeta,
    SnapshotRef,
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
    parse_snapshot,
)
from tests.agent.onnx_builder import model_bytes

REPO = Path(__file__).resolve().parents[1]
LIMITS = ProtocolLimits()
TOPICS = Topics("edge", "plant-1", "dev-1")
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)
MODEL = ModelRef(name="demo", version="1.0.0", sha256="0" * 64)
# the smallest whole JPEG the ingest takes: start of image, a frame header (64 x 48, one component), a scan
# header, entropy-coded bytes (a stuffed FF among them) and the end of image (trainer/ingest/jpeg.py)
JPEG = (
    b"\xff\xd8"
    + b"\xff\xc0\x00\x0b\x08\x00\x30\x00\x40\x01\x01\x11\x00"
    + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"
    + bytes(range(1, 60))
    + b"\xff\x00\x12"
    + b"\xff\xd9"
)


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing: ``run(data)`` returns or raises one of ``expected``; anything else is a bug."""

    name: str
    what: str
    run: Callable[[bytes], None]
    expected: Tuple[Type[BaseException], ...]
    seeds: Callable[[], List[bytes]]


def outcome(target: Target, data: bytes) -> str:
    """``accepted`` or ``rejected``; any other exception propagates (a finding)."""
    try:
        target.run(data)
    except target.expected:
        return "rejected"
    return "accepted"


# ------------------------------------------------------------------ MQTT payloads


def _json(obj: Dict[str, object]) -> bytes:
    return json.dumps(obj).encode()


def _command_seeds() -> List[bytes]:
    return [
        _json({"type": "ping", "request_id": "r-1"}),
        _json({"type": "set_thresholds", "request_id": "r-2", "thresholds": {"confidence": 0.4}}),
        _json(
            {
                "type": "flag_window",
                "request_id": "r-3",
                "camera": "line-1",
                "start": "2026-12-01T12:00:00+00:00",
                "end": "2026-12-01T12:00:10+00:00",
                "note": "missed a crack",
            }
        ),
        _json({"type": "request_snapshot", "request_id": "r-4", "camera": "line-1"}),
        _json(
            {"type": "rollback", "request_id": "r-5", "if_active": {"name": "demo", "version": "1.2.0", "counter": 7}}
        ),
    ]


def _push_seeds() -> List[bytes]:
    base: Dict[str, object] = {
        "release": {"name": "demo", "version": "1.2.0", "counter": 7},
        "channel": "stable",
        "bundle_sha256": "a" * 64,
        "bundle_size": 1000,
        "urls": ["https://releases.example/demo-1.2.0/"],
        "chunks": {"topic": "edge/plant-1/fleet/models/chunks/7", "total": 4, "chunk_size": 256},
        "published_at": NOW.isoformat(),
    }
    return [_json(base), _json({**base, "chunks": None}), _json({**base, "urls": []})]


def _chunk_seeds() -> List[bytes]:
    body = bytes(range(256))
    header = ModelChunkHeader(
        release=ReleaseRef(name="demo", version="1.2.0", counter=7),
        bundle_sha256="a" * 64,
        index=1,
        total=4,
        offset=256,
        size=len(body),
        sha256=hashlib.sha256(body).hexdigest(),
    )
    return [encode_framed(header, body)]


def _image(jpeg: bytes) -> ImageInfo:
    return ImageInfo(width=64, height=48, size=len(jpeg), sha256=hashlib.sha256(jpeg).hexdigest())


def _sample_seeds() -> List[bytes]:
    meta = SampleMeta(
        id="s-1",
        device="dev-1",
        camera="line-1",
        reason="uncertain",
        track_id=3,
        predictions=[Box(x1=1, y1=2, x2=30, y2=40, class_id=0, class_name="bolt", confidence=0.41)],
        thresholds={"uncertain_low": 0.3, "uncertain_high": 0.6},
        model=MODEL,
        frame_ts=NOW,
        image=_image(JPEG),
    )
    return [encode_framed(meta, JPEG)]


def _snapshot_seeds() -> List[bytes]:
    ref = SnapshotRef(id="sn-1", topic=TOPICS.snapshots, image=_image(JPEG), request_id="r-4")
    return [encode_framed(ref, JPEG)]


def _alert_seeds() -> List[bytes]:
    event = AlertEvent(
        id="a-1",
        device="dev-1",
        camera="line-1",
        model=MODEL,
        frame_ts=NOW,
        created_ts=NOW,
        boxes=[Box(x1=1, y1=2, x2=30, y2=40, class_id=1, class_name="crack", confidence=0.93, track_id=4)],
        rule=AlertRuleRef(name="cracks", classes=["crack"], min_confidence=0.6, min_frames=3),
    )
    return [encode_json(event)]


def _device_status_seeds() -> List[bytes]:
    status = DeviceStatus(
        device="dev-1", site="plant-1", state="online", agent_version="0.1.0", model=MODEL, groups=["canary"], ts=NOW
    )
    return [encode_json(status)]


def _camera_status_seeds() -> List[bytes]:
    status = CameraStatus(
        device="dev-1",
        camera="line-1",
        state=CameraState.STREAMING,
        source="synthetic:factory",
        fps=9.5,
        frames=100,
        drops=2,
        reconnects=0,
        last_frame_at=NOW,
        ts=NOW,
    )
    return [encode_json(status)]


def _ota_state_seeds() -> List[bytes]:
    report = OtaStateReport(
        id="o-1",
        device="dev-1",
        phase=OtaPhase.PROBATION,
        release={"name": "demo", "version": "1.2.0", "counter": 7},
        detail="probation",
        ts=NOW,
    )
    return [encode_json(report)]


def _protocol(
    name: str, what: str, parse: Callable[..., object], topic: str, seeds: Callable[[], List[bytes]]
) -> Target:
    return Target(name, what, lambda data: _discard(parse(topic, data, LIMITS)), (ProtocolError,), seeds)


def _discard(_: object) -> None:
    return None


# ------------------------------------------------------------------ files


def _config_run(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(data)
        load_config(path, environ={})


def _config_seeds() -> List[bytes]:
    example = (REPO / "examples" / "config.yaml").read_bytes()
    # the example's RTSP URLs are systemd credentials, which this process does not have
    example = example.replace(b"url: !credential press-1-sub-url", b"url: 'rtsp://cam.local/stream2'")
    return [example.replace(b"main_url: !credential press-1-url", b"main_url: 'rtsp://cam.local/stream1'")]


def _manifest_run(data: bytes) -> None:
    parse_manifest(data)


def _manifest_seeds() -> List[bytes]:
    from tests.agent.ota.test_release_manifest import enc, manifest

    return [enc(manifest())]


def _onnx_run(data: bytes) -> None:
    info = parse_onnx_model(data)
    if info.inputs:
        parse_model_metadata(info.metadata, info.inputs[0].dims)


def _onnx_seeds() -> List[bytes]:
    tiny = REPO / "tests" / "data" / "ota" / "tiny-yolo64.onnx"
    names = {"names": "{0: 'bolt', 1: 'crack'}", "imgsz": "[64, 64]", "task": "detect", "stride": "32"}
    seeds = [model_bytes(metadata=names)]
    if tiny.exists():
        seeds.append(tiny.read_bytes())
    return seeds


def _tar(members: List[Tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def _bundle_seeds() -> List[bytes]:
    bundle = json.dumps(
        {"format": "edge-ota-bundle", "version": 1, "trust": "offline", "manifest": "releases/stable.json"}
    ).encode()
    members = [("bundle/bundle.json", bundle), ("bundle/metadata/1.root.json", b"{}"), ("bundle/targets/a", b"x")]
    plain = _tar(members)
    return [plain, gzip.compress(plain, mtime=0)]


def _bundle_run(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bundle.tar"
        path.write_bytes(data)
        limits = {"max_bytes": 1 << 20, "max_members": 64, "max_ratio": 200.0}
        vet_tar(path, **limits)
        dest = Path(tmp) / "out"
        extract_tar(path, dest, **limits)
        roots = [p for p in dest.iterdir() if p.is_dir()]
        for root in roots or [dest]:
            read_bundle_json(root)


# ------------------------------------------------------------------ TUF metadata


@functools.lru_cache(maxsize=1)
def tuf_repository() -> Tuple[bytes, Dict[str, bytes]]:
    """(trusted root, every metadata file by name) of a real repository signed once per process."""
    from trainer.release.keys import KeyRing, init_keys
    from trainer.release.repo import Repository

    tmp = Path(tempfile.mkdtemp(prefix="fuzz-tuf-"))
    init_keys(tmp / "keys")
    repo = Repository(tmp / "repo", KeyRing.load(tmp / "keys"))
    repo.init()
    files = {p.name: p.read_bytes() for p in (tmp / "repo" / "metadata").glob("*.json")}
    return files["1.root.json"], files


def _tuf_role_file(files: Dict[str, bytes], role: str) -> str:
    names = sorted((n for n in files if n == f"{role}.json" or n.endswith(f".{role}.json")), key=len)
    return names[-1] if role != "timestamp" else f"{role}.json"


def _tuf_run(role: str, data: bytes) -> None:
    from agent.ota.fetchers import MemoryFetcher
    from agent.ota.trust import TimeFloor, TrustClient

    root, files = tuf_repository()
    served = dict(files)
    served[_tuf_role_file(files, role) if role != "root-update" else "2.root.json"] = data
    base = "mem://repo/metadata/"
    fetcher = MemoryFetcher({base + name: body for name, body in served.items()})
    with tempfile.TemporaryDirectory() as tmp:
        client = TrustClient(
            Path(tmp) / "metadata", root, fetcher, base, "mem://repo/targets/", TimeFloor(Path(tmp) / "floor.json")
        )
        client.refresh()


def _tuf_seeds(role: str) -> Callable[[], List[bytes]]:
    def seeds() -> List[bytes]:
        _, files = tuf_repository()
        if role == "root-update":  # a root that claims to be version 2 (its signatures no longer match)
            return [files["1.root.json"].replace(b'"version": 1', b'"version": 2', 1)]
        return [files[_tuf_role_file(files, role)]]

    return seeds


def _tuf_target(role: str) -> Target:
    return Target(
        f"tuf.{role}",
        f"TUF {role} metadata served to the OTA client (ngclient refresh over an in-memory fetcher)",
        functools.partial(_tuf_run, role),
        (OtaError,),
        _tuf_seeds(role),
    )


# ------------------------------------------------------------------ the cloud side (Python 3.10+)

_INGEST_TOPICS = [
    TOPICS.samples,
    TOPICS.snapshots,
    TOPICS.alerts,
    TOPICS.status,
    TOPICS.camera_status("line-1"),
    TOPICS.ota_state,
]
_INGEST_SEEDS = [
    _sample_seeds,
    _snapshot_seeds,
    _alert_seeds,
    _device_status_seeds,
    _camera_status_seeds,
    _ota_state_seeds,
]


class Dropped(Exception):
    """The ingest turned the message into a counted drop (its way of rejecting: ``decode`` never raises)."""


def _ingest_run(data: bytes) -> None:
    """First byte: which device topic; the rest: the payload."""
    from trainer.ingest.decode import decode
    from trainer.store.records import DropIn

    topic = _INGEST_TOPICS[data[0] % len(_INGEST_TOPICS)] if data else TOPICS.status
    if isinstance(decode(topic, data[1:], "edge", LIMITS, 0.0, "fuzz"), DropIn):
        raise Dropped(topic)


def _ingest_seeds() -> List[bytes]:
    return [bytes([i]) + seed for i, make in enumerate(_INGEST_SEEDS) for seed in make()]


def _trainer_config_run(data: bytes) -> None:
    from trainer.settings import load_trainer_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trainer.yaml"
        path.write_bytes(data)
        load_trainer_config(path, environ={})


def _cloud_targets() -> List[Target]:
    if sys.version_info < (3, 10):  # the trainer needs 3.10+
        return []
    return [
        Target(
            "ingest.decode", "the cloud ingest: any device topic, any payload", _ingest_run, (Dropped,), _ingest_seeds
        ),
        Target(
            "config.trainer_yaml",
            "the trainer's configuration file",
            _trainer_config_run,
            (ConfigError,),
            lambda: [(REPO / "examples" / "trainer.yaml").read_bytes()],
        ),
    ]


# ------------------------------------------------------------------ the table

AGENT_TARGETS: List[Target] = [
    _protocol("mqtt.command", "commands (`<device>/cmd`)", parse_command, TOPICS.cmd, _command_seeds),
    _protocol(
        "mqtt.model_push",
        "model pushes (retained push topics)",
        parse_model_push,
        "edge/plant-1/fleet/models",
        _push_seeds,
    ),
    _protocol("mqtt.model_chunk", "model chunks: EVL1 framing + header + digest", parse_model_chunk, "c", _chunk_seeds),
    _protocol(
        "mqtt.sample", "samples: EVL1 framing + metadata + JPEG digest", parse_sample, TOPICS.samples, _sample_seeds
    ),
    _protocol("mqtt.snapshot", "snapshots: EVL1 framing", parse_snapshot, TOPICS.snapshots, _snapshot_seeds),
    _protocol("mqtt.alert", "alerts", parse_alert, TOPICS.alerts, _alert_seeds),
    _protocol("mqtt.device_status", "retained device status", parse_device_status, TOPICS.status, _device_status_seeds),
    _protocol(
        "mqtt.camera_status",
        "retained camera status",
        parse_camera_status,
        TOPICS.camera_status("line-1"),
        _camera_status_seeds,
    ),
    _protocol("mqtt.ota_state", "OTA state reports", parse_ota_state, TOPICS.ota_state, _ota_state_seeds),
    Target("config.yaml", "the agent's configuration file", _config_run, (ConfigError,), _config_seeds),
    Target("release.manifest", "release manifests (release.json)", _manifest_run, (ReleaseError,), _manifest_seeds),
    Target(
        "onnx.metadata",
        "ONNX ModelProto reader + model metadata checks",
        _onnx_run,
        (OnnxParseError, MetadataError),
        _onnx_seeds,
    ),
    Target("usb.archive", "USB bundle archives: vet, extract, bundle.json", _bundle_run, (OtaError,), _bundle_seeds),
    _tuf_target("timestamp"),
    _tuf_target("snapshot"),
    _tuf_target("targets"),
    _tuf_target("root-update"),
]
CLOUD_TARGETS: List[Target] = _cloud_targets()
TARGETS: List[Target] = AGENT_TARGETS + CLOUD_TARGETS

BY_NAME: Dict[str, Target] = {t.name: t for t in TARGETS}


def target(name: str) -> Target:
    return BY_NAME[name]


def mutate(seed: bytes, edits: List[Tuple[int, int, int]]) -> bytes:
    """Apply ``(op, position, value)`` edits: 0 flip a byte, 1 delete, 2 insert, 3 truncate."""
    data = bytearray(seed)
    for op, pos, value in edits:
        if not data:
            data.append(value & 0xFF)
            continue
        i = pos % len(data)
        if op == 0:
            data[i] ^= (value % 255) + 1
        elif op == 1:
            del data[i]
        elif op == 2:
            data.insert(i, value & 0xFF)
        else:
            del data[i:]
    return bytes(data)


def seeds_of(t: Target) -> List[bytes]:
    return list(_seed_cache(t.name))


@functools.lru_cache(maxsize=None)
def _seed_cache(name: str) -> Tuple[bytes, ...]:
    return tuple(BY_NAME[name].seeds())


def run_random_bytes(t: Target, settings: object, max_size: int = 512) -> None:
    """Hypothesis: random byte strings through ``t`` (``settings``: a ``hypothesis.settings``)."""
    from hypothesis import given
    from hypothesis import strategies as st

    @settings  # type: ignore[operator]
    @given(st.binary(max_size=max_size))
    def run(data: bytes) -> None:
        outcome(t, data)

    run()


def run_mutations(t: Target, settings: object, max_edits: int = 8) -> None:
    """Hypothesis: ``mutate`` edits of ``t``'s valid seeds."""
    from hypothesis import given
    from hypothesis import strategies as st

    seeds = seeds_of(t)
    edits = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=max_edits
    )

    @settings  # type: ignore[operator]
    @given(st.integers(0, len(seeds) - 1), edits)
    def run(which: int, edit: List[Tuple[int, int, int]]) -> None:
        outcome(t, mutate(seeds[which], edit))

    run()
