"""The model-update service's pure decisions (table-driven), chunk assembly on disk, and the push CLI
against a real mosquitto."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
import pytest

from agent.ota.chunks import ChunkTransfer
from agent.ota.errors import VerificationError
from agent.ota.push import Decision, PushRejected, check_chunk_header, check_chunk_plan, decide_push, push_key
from agent.ota.state import InstallState, SlotRecord, Trial
from agent.protocol import ChunkPlan, ModelChunkHeader, ModelPush, ProtocolLimits, ReleaseRef, parse_model_chunk
from tests.agent.broker import MosquittoBroker
from trainer.commands import push as push_cli

TOPIC = "edge/s/fleet/models"
DATA = bytes(range(256)) * 40  # 10240 bytes
CHUNK = 4096


def make_push(counter: int = 3, channel: str = "stable", data: bytes = DATA, **chunks: Any) -> ModelPush:
    plan = {"topic": f"{TOPIC}/chunks/{counter}", "total": -(-len(data) // CHUNK), "chunk_size": CHUNK}
    plan.update(chunks)
    return ModelPush(
        release=ReleaseRef(name="m", version=f"1.{counter}.0", counter=counter),
        channel=channel,
        bundle_sha256=hashlib.sha256(data).hexdigest(),
        bundle_size=len(data),
        chunks=ChunkPlan(**plan),
        published_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )


def state(active: Optional[int] = None, floor: int = 0, trial: bool = False) -> InstallState:
    s = InstallState()
    if active is not None:
        s.active = SlotRecord("a" * 64, "m", f"1.{active}.0", active, "stable", "model.onnx", True)
    s.floor = floor
    if trial:
        s.trial = Trial("a" * 64, since="2026-01-01T00:00:00+00:00")
    return s


@pytest.mark.parametrize(
    "push, st, handled, expected",
    [
        (make_push(3), state(), {}, Decision.INSTALL),
        (make_push(3), state(active=2, floor=2), {}, Decision.INSTALL),
        (make_push(3), state(active=3, floor=3), {}, Decision.CURRENT),
        (make_push(2), state(active=3, floor=3), {}, Decision.STALE),
        (make_push(2), state(floor=3), {}, Decision.STALE),
        (make_push(3, channel="canary"), state(active=1), {}, Decision.OTHER_CHANNEL),
        (make_push(3), state(active=1), {push_key(make_push(3)): "rejected:unsigned"}, Decision.HANDLED),
        (make_push(3), state(active=2, trial=True), {}, Decision.DEFER),
    ],
)
def test_decide_push(push: ModelPush, st: InstallState, handled: Dict[str, str], expected: Decision) -> None:
    assert decide_push(push, st, "stable", handled) == expected


@pytest.mark.parametrize(
    "changes, max_bundle, max_chunk, reason",
    [
        ({"topic": "edge/s/#"}, 10**9, 10**9, "chunk_topic"),  # a push must not pick what we subscribe to
        ({"topic": f"{TOPIC}/chunks/4"}, 10**9, 10**9, "chunk_topic"),
        ({"topic": "edge/other/fleet/models/chunks/3"}, 10**9, 10**9, "chunk_topic"),
        ({"total": 2}, 10**9, 10**9, "chunk_plan"),
        ({"total": 4}, 10**9, 10**9, "chunk_plan"),
        ({}, len(DATA) - 1, 10**9, "too_large"),
        ({}, 10**9, CHUNK - 1, "too_large"),
    ],
)
def test_chunk_plan_refused(changes: Dict[str, Any], max_bundle: int, max_chunk: int, reason: str) -> None:
    with pytest.raises(PushRejected) as info:
        check_chunk_plan(make_push(**changes), TOPIC, max_bundle, max_chunk)
    assert info.value.reason == reason


def test_chunk_plan_accepted() -> None:
    check_chunk_plan(make_push(), TOPIC, len(DATA), CHUNK)


def header(push: ModelPush, index: int, data: bytes = DATA, **changes: Any) -> Tuple[ModelChunkHeader, bytes]:
    body = data[index * CHUNK : (index + 1) * CHUNK]
    fields: Dict[str, Any] = {
        "release": push.release,
        "bundle_sha256": push.bundle_sha256,
        "index": index,
        "total": push.chunks.total if push.chunks else 1,
        "offset": index * CHUNK,
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    fields.update(changes)
    return ModelChunkHeader(**fields), body


@pytest.mark.parametrize(
    "changes",
    [
        {"offset": 0},
        {"size": 100},
        {"total": 9},
        {"bundle_sha256": "1" * 64},
        {"release": ReleaseRef(name="m", version="9.9.9", counter=3)},
    ],
)
def test_chunk_header_mismatch_refused(changes: Dict[str, Any]) -> None:
    push = make_push()
    h, _ = header(push, 1, **changes)
    with pytest.raises(PushRejected):
        check_chunk_header(h, push, 1)


def test_chunk_header_index_must_match_topic() -> None:
    push = make_push()
    h, _ = header(push, 1)
    check_chunk_header(h, push, 1)
    with pytest.raises(PushRejected):
        check_chunk_header(h, push, 2)


def test_transfer_out_of_order_duplicates_and_resume(tmp_path: Path) -> None:
    push = make_push()
    t = ChunkTransfer(push, TOPIC, tmp_path / "x")
    t.accept(*header(push, 2))  # ahead of a gap: spilled to disk
    t.accept(*header(push, 0))
    assert t.offset == CHUNK and t.counters.spilled == 1
    t.accept(*header(push, 0))  # duplicate
    assert t.counters.duplicates == 1
    # "restart": a new transfer object over the same directory resumes, spill included
    t2 = ChunkTransfer(push, TOPIC, tmp_path / "x")
    assert t2.offset == CHUNK
    t2.accept(*header(push, 1))  # closes the gap; the spilled chunk 2 follows
    assert t2.done and t2.counters.bytes_appended == len(DATA) - CHUNK
    assert t2.finish().read_bytes() == DATA


def test_transfer_bundle_digest_checked(tmp_path: Path) -> None:
    other = bytes(reversed(DATA))
    push = make_push()  # announces DATA's digest
    t = ChunkTransfer(push, TOPIC, tmp_path / "x")
    for i in range(3):
        h, body = header(push, i, data=other)  # consistent chunks of other bytes
        t.accept(h, body)
    assert t.done
    with pytest.raises(VerificationError) as info:
        t.finish()
    assert info.value.reason == "hash_mismatch"


# --------------------------------------------------------------------------- the push CLI


def test_push_cli_publishes_retained_chunks_and_clears_superseded(tmp_path: Path, broker: MosquittoBroker) -> None:
    from tests.agent.ota.conftest import TINY_MODEL
    from trainer.release.build import ReleaseSpec, build_bundle, build_release, default_golden_images
    from trainer.release.keys import KeyRing, init_keys
    from trainer.release.repo import Repository

    init_keys(tmp_path / "keys")
    ring = KeyRing.load(tmp_path / "keys")
    repo = tmp_path / "repo"
    Repository(repo, ring).init()
    (tmp_path / "g").mkdir()
    golden = default_golden_images(tmp_path / "g", count=1)
    bundles = []
    for version in ("1.0.0", "1.1.0"):
        spec = ReleaseSpec(name="w", version=version, channel="stable", files={"onnx": TINY_MODEL}, golden=golden)
        build_release(Repository(repo, ring), spec)
        bundles.append(build_bundle(repo, ring, tmp_path / f"{version}.tar", "stable", trust="online"))

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    push_cli.add_parser(sub)
    base = ["push", "--broker", f"127.0.0.1:{broker.port}", "--site", "s1", "--chunk-size", "262144"]
    assert push_cli.run(parser.parse_args([*base, "--bundle", str(bundles[0])])) == 0
    assert push_cli.run(parser.parse_args([*base, "--bundle", str(bundles[1]), "--url", "http://h/r/"])) == 0
    assert push_cli.run(parser.parse_args([*base, "--url", "ftp://x/"])) == 1  # refused: needs http(s)/--repo

    retained: List[Tuple[str, bytes]] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="check")
    client.on_connect = lambda c, u, f, r, p: c.subscribe("edge/s1/#", qos=1)
    client.on_message = lambda c, u, m: retained.append((m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        time.sleep(1.0)  # a fresh subscriber receives exactly what is retained
    finally:
        client.loop_stop()
        client.disconnect()
    topics = {t for t, _ in retained}
    push = json.loads(dict(retained)["edge/s1/fleet/models"])
    assert push["release"]["counter"] == 2 and push["urls"] == ["http://h/r/"]
    assert push["chunks"]["topic"] == "edge/s1/fleet/models/chunks/2"
    assert not any("/chunks/1/" in t for t in topics)  # release 1's chunks were cleared
    chunks = sorted((int(t.rsplit("/", 1)[1]), p) for t, p in retained if "/chunks/2/" in t)
    assert len(chunks) == push["chunks"]["total"]
    data = b"".join(parse_model_chunk(f"c/{i}", p, ProtocolLimits())[1] for i, p in chunks)
    assert data == bundles[1].read_bytes() and hashlib.sha256(data).hexdigest() == push["bundle_sha256"]


def test_the_daemon_gives_the_installer_its_factory_model_and_the_classes_its_rules_name(tmp_path: Path) -> None:
    from agent.config import load_config
    from agent.daemon import Daemon
    from tests.agent.daemon.helpers import config_dict, synthetic_camera, write_config
    from tests.agent.ota.conftest import TINY_MODEL

    cameras = [
        synthetic_camera("line1", alerts=[{"name": "defects", "classes": ["defect", 0]}]),
        {**synthetic_camera("spare", alerts=[{"name": "parts", "classes": ["part"]}]), "enabled": False},
    ]
    path = write_config(tmp_path / "config.yaml", config_dict(tmp_path, 1883, TINY_MODEL, cameras))
    daemon = Daemon(load_config(path, environ={}), path, install_signal_handlers=False)
    serving = daemon.live.serving_context()
    assert serving.factory_model == TINY_MODEL
    assert serving.needs.names == {"defect"} and serving.needs.ids == {0}  # the disabled camera names nothing
    assert serving.needs.where == ("line1/defects=defect", "line1/defects=0")


def test_download_retries_are_jittered_so_a_fleet_does_not_retry_in_lockstep(tmp_path: Path) -> None:
    from agent.app.model_updates import ModelUpdateService
    from agent.core.backoff import Backoff
    from agent.ota import OtaConfig
    from agent.ota.config import ModelUpdatesConfig

    ota = OtaConfig(state_dir=tmp_path / "ota", trusted_root=tmp_path / "root.json", offline_root=None)
    waits = []
    for _box in range(20):  # twenty boxes whose download failed at the same instant
        service = ModelUpdateService(ota, "dev1", ModelUpdatesConfig(retry_initial_s=10, retry_max_s=300))
        before = time.monotonic()
        service._retry_later("push-1", "transport")
        waits.append(round(service._retry["push-1"][1] - before, 2))
    assert all(5.0 <= w <= 10.1 for w in waits) and len(set(waits)) > 10  # spread over [5, 10] s, not all 10 s
    assert isinstance(service._retry_backoff, Backoff)  # the one backoff of the agent (agent.core.backoff)
