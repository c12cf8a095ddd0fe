"""Model pushes end to end: a real mosquitto, real signed TUF repositories (trainer/release), a real HTTP
server, the daemon in-process with real ONNX Runtime health checks and hot swaps.

URL mode, catch-up of a box that was offline, chunk mode with resume, tampered chunks, a bundle signed by
someone else, a stale push, and repeated deliveries of the same retained push.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from agent.ota.config import ModelUpdatesConfig
from agent.protocol import ModelPush, ReleaseRef, encode_json
from agent.protocol.framing import decode_frame
from tests.agent.broker import MosquittoBroker
from tests.agent.daemon.helpers import Collector, InProcessDaemon, config_dict, wait_for, write_config
from tests.agent.ota import conftest as ota_fixtures
from tests.agent.ota.conftest import TINY_MODEL, World, make_config
from trainer.release.keys import KeyRing, init_keys
from trainer.release.push import Publication, Publisher, build_push, publish
from trainer.release.repo import Repository

pytestmark = pytest.mark.broker

# the OTA tests' fixtures (real keys, a real signed repository, a device committed on release 1.0.0)
_keys_template = ota_fixtures._keys_template
world = ota_fixtures.world
committed_world = ota_fixtures.committed_world

PUSH_TOPIC = "edge/site1/fleet/models"
STATE_TOPIC = "edge/site1/dev1/ota/state"
FAST = ModelUpdatesConfig(tick_s=0.1, retry_initial_s=0.5, chunk_stall_s=1.0, health_grace_s=0.5)
CHUNK = 64 * 1024


@contextlib.contextmanager
def http_repo(directory: Path) -> Iterator[str]:
    with ota_fixtures.serve_directory(directory) as url:
        yield url + "/"


def daemon_config(w: World, broker: MosquittoBroker, period_s: float = 600.0, min_fps: float = 0.0) -> Path:
    ota = json.loads(w.config.model_dump_json())
    ota["probation"]["period_s"] = period_s
    data = config_dict(
        w.tmp / "daemon",
        broker.port,
        TINY_MODEL,
        [],
        ota=ota,
        daemon={"health_min_fps": min_fps},
    )
    (w.tmp / "daemon").mkdir(exist_ok=True)
    return write_config(w.tmp / "daemon" / "config.yaml", data)


def reports(collector: Collector) -> List[Dict[str, Any]]:
    return [json.loads(payload) for _, _, payload in collector.on("/ota/state")]


def phases(collector: Collector) -> List[str]:
    out: List[str] = []
    for report in reports(collector):
        if not out or out[-1] != report["phase"]:  # chunk progress repeats "downloading"
            out.append(report["phase"])
    return out


def model_version(d: InProcessDaemon) -> Optional[str]:
    return d.status()["model"].get("version")  # type: ignore[no-any-return]


@contextlib.contextmanager
def publisher(broker: MosquittoBroker) -> Iterator[Publisher]:
    p = Publisher("127.0.0.1", broker.port)
    try:
        yield p
    finally:
        p.close()


def chunk_release(w: World, version: str, name: str, counter: Optional[int] = None) -> Publication:
    w.release(version, counter=counter)
    bundle = w.bundle(name, trust="online", tar=True)
    return build_push(PUSH_TOPIC, "stable", bundle=bundle, chunk_size=CHUNK)


def test_url_push_installs_health_checks_switches_commits_once(committed_world: World, broker: MosquittoBroker) -> None:
    w = committed_world
    w.release("1.1.0")
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with http_repo(w.repo_path) as url, InProcessDaemon(
            daemon_config(w, broker, period_s=1.0), model_updates=FAST
        ) as d:
            assert model_version(d) == "1.0.0"
            publication = build_push(PUSH_TOPIC, "stable", urls=[url], repo=w.repo_path)
            with publisher(broker) as pub:
                publish(pub, publication)
            wait_for(lambda: "committed" in phases(collector), 60, "committed report")
            assert phases(collector) == [
                "downloading",
                "verifying",
                "staging",
                "health_check",
                "probation",
                "committed",
            ]
            done = [r for r in reports(collector) if r["phase"] == "committed"][-1]
            assert done["release"] == {"name": "widget", "version": "1.1.0", "counter": 2}
            assert done["active"]["version"] == "1.1.0"
            wait_for(lambda: model_version(d) == "1.1.0", 30, "pipeline serving 1.1.0")
            assert d.daemon.parts.installer.state().floor == 2  # raised at commit
            # the same retained push delivered again (twice, and again on a reconnect) → no second install
            with publisher(broker) as pub:
                publish(pub, publication)
                publish(pub, publication)
            d.daemon.parts.link.remove_subscription(PUSH_TOPIC)
            d.daemon.parts.link.add_subscription(
                PUSH_TOPIC, d.daemon.parts.link._handle_push
            )  # re-subscribe: retained again
            wait_for(lambda: d.daemon.parts.link.metrics().pushes >= 4, 30, "pushes delivered again")
            assert d.daemon.parts.updates.installs == 1
            assert [r["phase"] for r in reports(collector)].count("downloading") == 1
    finally:
        collector.close()


def test_box_offline_during_push_catches_up_on_start(committed_world: World, broker: MosquittoBroker) -> None:
    w = committed_world
    w.release("1.1.0")
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with http_repo(w.repo_path) as url:
            with publisher(broker) as pub:  # pushed while the box is down; the push is retained
                publish(pub, build_push(PUSH_TOPIC, "stable", urls=[url], repo=w.repo_path))
            with InProcessDaemon(daemon_config(w, broker), model_updates=FAST) as d:
                wait_for(lambda: model_version(d) == "1.1.0", 60, "caught up to 1.1.0")
                assert d.daemon.parts.installer.state().trial is not None  # in probation (long period)
                wait_for(lambda: "probation" in phases(collector), 30, "probation report")
    finally:
        collector.close()


def test_chunk_push_resumes_from_persisted_offset(committed_world: World, broker: MosquittoBroker) -> None:
    w = committed_world
    publication = chunk_release(w, "1.1.0", "r2.tar")
    size = publication.push.bundle_size
    half = len(publication.chunks) // 2
    assert half >= 3
    config = daemon_config(w, broker)
    with publisher(broker) as pub:
        pub.publish(publication.chunks[:half])  # the publisher died half-way
        pub.publish([(PUSH_TOPIC, encode_json(publication.push))])
    with InProcessDaemon(config, model_updates=FAST) as d:
        status = d.daemon.parts.updates.status
        wait_for(lambda: (status()["transfer"] or {}).get("offset") == half * CHUNK, 30, "half the chunks")
        first = d.daemon.parts.updates.last_transfer
        assert first is not None and first.bytes_appended == half * CHUNK
        assert model_version(d) == "1.0.0"
    part = w.config.state_dir / "staging" / "push" / publication.push.bundle_sha256 / "bundle.tar.part"
    assert part.stat().st_size == half * CHUNK  # persisted across the stop
    with publisher(broker) as pub:
        pub.publish(publication.chunks[half:])
    with InProcessDaemon(config, model_updates=FAST) as d:
        wait_for(lambda: model_version(d) == "1.1.0", 60, "installed from chunks")
        second = d.daemon.parts.updates.last_transfer
        assert second is not None
        assert second.bytes_appended == size - half * CHUNK  # resumed: did not start over
        assert second.duplicates >= half  # the retained first half came again and was dropped
    assert not part.parent.exists()  # staging cleaned after the install


def test_tampered_chunk_refused_then_recovered(committed_world: World, broker: MosquittoBroker) -> None:
    w = committed_world
    publication = chunk_release(w, "1.1.0", "r2.tar")
    chunks = list(publication.chunks)
    topic, good = chunks[2]
    bad = bytearray(good)
    bad[-10] ^= 0x01  # the body no longer matches the header's digest
    chunks[2] = (topic, bytes(bad))
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with publisher(broker) as pub:
            pub.publish(chunks)
            pub.publish([(PUSH_TOPIC, encode_json(publication.push))])
        with InProcessDaemon(daemon_config(w, broker), model_updates=FAST) as d:
            wait_for(lambda: any("bad_digest" in (r["detail"] or "") for r in reports(collector)), 20, "chunk refusal")
            # the chunks after the refused one keep arriving: kept aside (spilled), not appended
            wait_for(lambda: d.daemon.parts.updates.status()["transfer"]["spilled"] >= 1, 20, "later chunks spilled")
            transfer = d.daemon.parts.updates.status()["transfer"]
            assert transfer["offset"] == 2 * CHUNK and transfer["refused"] >= 1
            assert model_version(d) == "1.0.0"
            with publisher(broker) as pub:
                pub.publish([(topic, good)])  # the publisher re-sends the chunk
            wait_for(lambda: model_version(d) == "1.1.0", 60, "installed after the good chunk")
    finally:
        collector.close()


def test_a_stalled_chunk_transfer_ends_too_slow_and_resumes_on_retry(
    committed_world: World, broker: MosquittoBroker
) -> None:
    """Slow retrieval over MQTT: half the chunks, then nothing. The transfer ends `too_slow` (reported, the
    state free), keeps what it has, and the retry finishes once the rest is there."""
    w = committed_world
    publication = chunk_release(w, "1.1.0", "r2.tar")
    half = len(publication.chunks) // 2
    assert half >= 3
    slow = ModelUpdatesConfig(
        tick_s=0.1,
        retry_initial_s=0.5,
        chunk_stall_s=30.0,
        health_grace_s=0.5,
        chunk_grace_s=1.0,
        chunk_min_rate=half * CHUNK / 3,  # what arrived at once averages below this after ~3 s
    )
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with publisher(broker) as pub:
            pub.publish(publication.chunks[:half])
            pub.publish([(PUSH_TOPIC, encode_json(publication.push))])
        with InProcessDaemon(daemon_config(w, broker), model_updates=slow) as d:
            wait_for(lambda: any("too_slow" in (r["detail"] or "") for r in reports(collector)), 30, "too_slow")
            assert model_version(d) == "1.0.0"
            part = w.config.state_dir / "staging" / "push" / publication.push.bundle_sha256 / "bundle.tar.part"
            assert part.stat().st_size == half * CHUNK  # kept for the retry
            with publisher(broker) as pub:
                pub.publish(publication.chunks[half:])
            wait_for(lambda: model_version(d) == "1.1.0", 60, "installed on a retry")
    finally:
        collector.close()


def test_foreign_signed_bundle_rejected_and_not_retried(
    committed_world: World, broker: MosquittoBroker, tmp_path: Path
) -> None:
    w = committed_world
    # A complete, self-consistent bundle signed with someone else's keys (push and chunks match exactly).
    evil_keys = tmp_path / "evil-keys"
    init_keys(evil_keys)
    ring = KeyRing.load(evil_keys)
    evil_repo = tmp_path / "evil-repo"
    Repository(evil_repo, ring).init()
    evil = World(tmp_path / "evil", ring, evil_repo, make_config(tmp_path / "evil", evil_repo), golden=w.golden)
    (tmp_path / "evil").mkdir()
    publication = chunk_release(evil, "9.0.0", "evil.tar", counter=5)
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with publisher(broker) as pub:
            publish(pub, publication)
        with InProcessDaemon(daemon_config(w, broker), model_updates=FAST) as d:
            wait_for(lambda: "failed" in phases(collector), 30, "rejection report")
            failed = [r for r in reports(collector) if r["phase"] == "failed"]
            assert len(failed) == 1 and failed[0]["active"]["version"] == "1.0.0"
            # the refusal names the push it refuses (the installer never trusted a manifest to say it)
            assert failed[0]["release"]["version"] == "9.0.0", failed[0]
            assert "as announced by the push" in failed[0]["detail"]
            assert model_version(d) == "1.0.0"
            assert d.daemon.parts.installer.state().active.version == "1.0.0"
            # the rejection is persisted by the worker right after the installer's report goes out: wait for it
            pushes = w.config.state_dir / "pushes.json"
            wait_for(lambda: pushes.is_file() and "rejected" in pushes.read_text(), 30, "rejection persisted")
            handled = json.loads(pushes.read_text())["handled"]
            assert list(handled.values()) == ["rejected:unsigned"]
            # delivered again (re-subscribe): not fetched again
            d.daemon.parts.link.remove_subscription(PUSH_TOPIC)
            d.daemon.parts.link.add_subscription(PUSH_TOPIC, d.daemon.parts.link._handle_push)
            wait_for(lambda: d.daemon.parts.link.metrics().pushes >= 2, 30, "push delivered again")
            # a push claiming an older release than the active one: reported once, ignored
            stale = ModelPush(
                release=ReleaseRef(name="widget", version="0.9.0", counter=0),
                channel="stable",
                bundle_sha256="0" * 64,
                bundle_size=10,
                urls=["http://127.0.0.1:9/"],
                published_at=publication.push.published_at,
            )
            with publisher(broker) as pub:
                pub.publish([(PUSH_TOPIC, encode_json(stale))])
            wait_for(lambda: any("stale_push" in (r["detail"] or "") for r in reports(collector)), 30, "stale report")
            starts = [r for r in reports(collector) if (r["detail"] or "").startswith("chunked transfer")]
            assert len(starts) == 1  # fetched once
            assert d.daemon.parts.updates.installs == 0
            assert model_version(d) == "1.0.0"
    finally:
        collector.close()


def test_unhealthy_trial_rolled_back_by_probation(committed_world: World, broker: MosquittoBroker) -> None:
    """No camera runs, so the aggregate FPS (0) fails ``health_min_fps`` once the grace period is over."""
    w = committed_world
    w.release("1.1.0")
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with http_repo(w.repo_path) as url:
            with publisher(broker) as pub:
                publish(pub, build_push(PUSH_TOPIC, "stable", urls=[url], repo=w.repo_path))
            with InProcessDaemon(daemon_config(w, broker, min_fps=1.0), model_updates=FAST) as d:
                wait_for(lambda: "rolled_back" in phases(collector), 60, "rollback report")
                wait_for(lambda: model_version(d) == "1.0.0", 30, "back on 1.0.0")
                state = d.daemon.parts.installer.state()
                assert state.active.version == "1.0.0" and state.trial is None and state.floor == 1
    finally:
        collector.close()


def test_chunk_frames_decode(committed_world: World) -> None:
    """The publisher's frames are what the device parser expects (header and digest)."""
    publication = chunk_release(committed_world, "1.1.0", "r2.tar")
    header, body = decode_frame("t", publication.chunks[0][1], 1 << 16)
    assert json.loads(header)["index"] == 0 and len(body) == CHUNK


def test_a_box_without_a_loadable_model_stays_up_and_recovers_from_a_pushed_release(
    world: World, broker: MosquittoBroker
) -> None:
    # no release installed, and the factory model is missing: it used to exit 3 and restart every 5 s for ever
    w = world
    ota = json.loads(w.config.model_dump_json())
    data = config_dict(w.tmp / "daemon", broker.port, w.tmp / "missing.onnx", [], ota=ota)
    (w.tmp / "daemon").mkdir(exist_ok=True)
    cfg = write_config(w.tmp / "daemon" / "config.yaml", data)
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with InProcessDaemon(cfg, model_updates=FAST) as d:
            assert d.rc is None and d.daemon.live.pipeline is None
            status = d.status()
            assert status["model"]["error"].endswith("missing.onnx: model file not found")
            assert any(
                p.startswith("model: error:") and "waiting for a signed release" in p for p in status["problems"]
            )

            def retained_model_error() -> Optional[str]:
                docs = [json.loads(p) for _, t, p in collector.on("/status") if t.endswith("dev1/status")]
                return docs[-1].get("model_error") if docs else None

            wait_for(lambda: (retained_model_error() or "").endswith("model file not found"), 15, "model_error")
            # the link works: commands are answered (and say why they cannot act)
            collector.publish("edge/site1/dev1/cmd", json.dumps({"type": "ping", "request_id": "p1"}).encode())
            wait_for(lambda: any(b'"p1"' in p for _, _, p in collector.on("/cmd/reply")), 10, "pong")
            # a signed release pushed over MQTT brings a model: the pipeline comes up without a restart
            publication = chunk_release(w, "1.0.0", "r1")
            with publisher(broker) as pub:
                publish(pub, publication)
            wait_for(lambda: d.daemon.live.pipeline is not None, 60, "pipeline up from the pushed release")
            assert d.rc is None
            wait_for(lambda: d.status()["model"].get("version") == "1.0.0", 10, "model reported")
            assert not any(p.startswith("model: error") for p in d.status()["problems"])
    finally:
        collector.close()


def test_a_release_on_probation_whose_model_does_not_load_is_rolled_back_at_start(
    committed_world: World, broker: MosquittoBroker, tmp_path: Path
) -> None:
    w = committed_world
    model_b = tmp_path / "model-b.onnx"  # the same tiny model with other bytes: a different release
    model_b.write_bytes(TINY_MODEL.read_bytes().replace(b"Ultralytics tiny model", b"Ultralytics tinz model"))
    w.release("1.1.0", model=model_b)
    installer = w.installer()
    installer.install_path(w.bundle("r2"))
    assert installer.state().trial is not None
    active = installer.active_model_path()
    assert active is not None
    active.write_bytes(b"the release's model file, broken on this box")
    with InProcessDaemon(daemon_config(w, broker), model_updates=FAST) as d:
        # not a wait for a release, not a restart loop: the known-good release runs again, at once
        assert d.rc is None and d.daemon.live.pipeline is not None
        assert model_version(d) == "1.0.0"
        state = d.daemon.parts.installer.state()
        assert state.trial is None and state.active is not None and state.active.version == "1.0.0"
        assert state.last is not None and state.last["kind"] == "rolled_back"
        assert "model does not load" in state.last["reason"]
        assert d.daemon.live.model_error is None
