"""The daemon in-process against a real mosquitto: alert latency, outage and drain, commands after a broker
restart, fuzzed commands, a camera that disappears, spool eviction, hot swap, reload, status and watchdog."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.app.status import render_summary, status_main
from agent.engine.config import OnnxRuntimeConfig
from agent.engine.detector import Detector
from agent.engine.model import read_model
from agent.engine.onnxruntime import OnnxRuntimeBackend
from agent.observability.sdnotify import SdNotifier
from tests.agent.broker import MosquittoBroker, free_port
from tests.agent.daemon.helpers import (
    Collector,
    InProcessDaemon,
    config_dict,
    drain_notifications,
    notify_socket,
    sampling_rules,
    synthetic_camera,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.broker

CMD = "edge/site1/dev1/cmd"
REPLY = "edge/site1/dev1/cmd/reply"


def test_alerts_arrive_within_one_second_of_the_frame(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    collector = Collector(broker.port)
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    try:
        with InProcessDaemon(cfg) as d:
            wait_for(lambda: len(collector.on("/alerts")) >= 5, 20, "5 alerts")
            d.stop()
        latencies = []
        for received, _, payload in collector.on("/alerts"):
            alert = json.loads(payload)
            frame_ts = datetime.fromisoformat(alert["frame_ts"].replace("Z", "+00:00")).timestamp()
            latencies.append(received - frame_ts)
            assert alert["model"]["sha256"] and alert["camera"] == "cam1" and alert["boxes"]
            assert alert["snapshot"]["topic"].endswith("/snapshots")
        assert max(latencies) < 1.0, latencies
        snapshots = collector.on("/snapshots")
        assert snapshots and snapshots[0][2].startswith(b"EVL1")
    finally:
        collector.close()


def _mean_abs_diff_in_boxes(image: np.ndarray, frame: Any) -> float:
    diff = np.abs(image.astype(np.int16) - frame.image.astype(np.int16))
    mask = np.zeros(diff.shape[:2], bool)
    for x1, y1, x2, y2 in frame.boxes.astype(int).tolist():
        mask[max(0, y1) : y2, max(0, x1) : x2] = True
    return float(diff[mask].mean()) if mask.any() else float(diff.mean())


@pytest.mark.parametrize("prerender", [0, 6])
def test_samples_of_the_synthetic_camera_carry_the_identity_of_their_frame(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path, prerender: int
) -> None:
    """The lineage names what was rendered (domain, seed, stream index, size), also when a prerendered loop is
    replayed back and forth: rendering that identity again gives the sample's image (the cloud's oracle
    labeller relies on it)."""
    import cv2

    from agent.protocol import ProtocolLimits, parse_sample
    from agent.synthetic import render_stream_frame

    collector = Collector(broker.port)
    cam = synthetic_camera("cam1", seed=4, fps=10)
    cam["source"]["prerender"] = prerender
    cam["rules"] = sampling_rules(alerts=False)
    cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [cam]))
    try:
        with InProcessDaemon(cfg) as d:
            wait_for(lambda: len(collector.on("/samples")) >= 12, 30, "12 samples")
            d.stop()
        indexes = set()
        for _, topic, payload in collector.on("/samples")[:12]:
            meta, jpeg = parse_sample(topic, payload, ProtocolLimits())
            ref = meta.synthetic
            assert ref is not None and (ref.domain, ref.seed, ref.width, ref.height) == ("factory", 4, 320, 192)
            indexes.add(ref.index)
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            claimed = _mean_abs_diff_in_boxes(image, render_stream_frame("factory", 4, ref.index, size=(192, 320)))
            other = _mean_abs_diff_in_boxes(image, render_stream_frame("factory", 4, ref.index + 1, size=(192, 320)))
            assert claimed < 0.9 * other, (ref.index, claimed, other)
        if prerender:
            assert indexes <= set(range(prerender))  # the replayed loop's own frames, not the frame counter
    finally:
        collector.close()


def _outage(tmp_path: Path, model: Path, outage_s: float) -> None:
    broker = MosquittoBroker(tmp_path / "broker", persistence=True)
    broker.start()
    collector = Collector(broker.port)
    cam = synthetic_camera("cam1", fps=5)
    cam["rules"] = sampling_rules()
    cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, broker.port, model, [cam]))
    try:
        with InProcessDaemon(cfg) as d:
            wait_for(lambda: collector.on("/samples"), 20, "first sample")
            broker.stop()
            counters = lambda: d.daemon.parts.writer.snapshot()  # noqa: E731
            produced_before = counters().samples_spooled + counters().alerts_spooled
            time.sleep(outage_s)
            queued = len(d.daemon.parts.spool)
            assert counters().samples_spooled + counters().alerts_spooled > produced_before + 3
            assert queued > 3, "nothing was spooled during the outage"
            broker.start()
            wait_for(lambda: d.daemon.parts.link.connected, 20, "reconnect")
            d.daemon.live.pipeline.call_soon(lambda: d.daemon.live.pipeline.cameras.clear())  # stop producing
            time.sleep(0.5)
            wait_for(lambda: len(d.daemon.parts.spool) == 0, 30, "spool drained")
            produced = counters().samples_spooled + counters().alerts_spooled
            time.sleep(0.5)
            stats = d.daemon.parts.spool.stats()
            assert not any(k.startswith("evicted") for k in stats.counters)
            d.stop()
        ids = collector.ids("/samples") + collector.ids("/alerts")
        assert len(set(ids)) == produced, (len(set(ids)), produced)
        duplicates = len(ids) - len(set(ids))
        assert duplicates <= d.daemon.parts.link.metrics().disconnects * 64  # at-least-once: only in-flight resends
    finally:
        collector.close()
        broker.close()


def test_broker_outage_everything_arrives_once_spool_empties(tmp_path: Path, daemon_model: Path) -> None:
    _outage(tmp_path, daemon_model, 3.0)


@pytest.mark.slow
def test_broker_outage_30s(tmp_path: Path, daemon_model: Path) -> None:
    _outage(tmp_path, daemon_model, 30.0)


def _command(request_id: str, kind: str = "ping", **fields: Any) -> bytes:
    return json.dumps({"type": kind, "request_id": request_id, **fields}).encode()


def _replies(collector: Collector) -> Dict[str, Dict[str, Any]]:
    out = {}
    for _, _, payload in collector.on("/cmd/reply"):
        reply = json.loads(payload)
        out[str(reply.get("request_id"))] = reply
    return out


def test_commands_reach_the_daemon_after_broker_restart_without_persistence(
    tmp_path: Path, broker: MosquittoBroker, daemon_model: Path
) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        collector = Collector(broker.port, client_id="c1")
        wait_for(lambda: d.daemon.parts.link.metrics().connects >= 1, 10, "connected")
        time.sleep(0.3)
        collector.publish(CMD, _command("before"))
        wait_for(lambda: "before" in _replies(collector), 10, "reply before restart")
        collector.close()
        broker.stop()
        broker.start(persistence=False)
        wait_for(lambda: d.daemon.parts.link.metrics().connects >= 2, 20, "reconnected")
        collector = Collector(broker.port, client_id="c2")
        time.sleep(0.5)  # the daemon re-subscribes on connect; give the SUBACK a moment
        now = datetime.now(timezone.utc)
        collector.publish(CMD, _command("after"))
        collector.publish(
            CMD,
            _command(
                "flag",
                "flag_window",
                camera="cam1",
                start=now.isoformat(),
                end=(now + timedelta(seconds=5)).isoformat(),
            ),
        )
        collector.publish(CMD, _command("snap", "request_snapshot", camera="cam1"))
        collector.publish(CMD, _command("nocam", "request_snapshot", camera="cam9"))
        collector.publish(
            CMD, _command("thr", "set_thresholds", thresholds={"conf": 0.3, "any-part.min_confidence": 0.4})
        )
        collector.publish(CMD, _command("badthr", "set_thresholds", thresholds={"nonsense": 0.3}))
        wait_for(
            lambda: {"after", "flag", "snap", "nocam", "thr", "badthr"} <= set(_replies(collector)),
            10,
            "replies after restart",
        )
        replies = _replies(collector)
        assert replies["after"]["status"] == "ok" and replies["flag"]["status"] == "ok"
        assert replies["snap"]["status"] == "ok" and replies["thr"]["status"] == "ok"
        assert replies["nocam"]["error"]["code"] == "unknown_camera"
        assert replies["badthr"]["error"]["code"] == "invalid"
        from agent.protocol import ProtocolLimits, parse_snapshot

        def requested() -> List[Any]:  # alerts' snapshots travel on the same topic, without a request id
            refs = [parse_snapshot(t, p, ProtocolLimits()) for _, t, p in collector.on("/snapshots")]
            return [(ref, jpeg) for ref, jpeg in refs if ref.request_id is not None]

        wait_for(requested, 10, "requested snapshot")
        ref, jpeg = requested()[0]
        assert (ref.request_id, ref.camera) == ("snap", "cam1")  # the requester can match the answer
        assert jpeg[:2] == b"\xff\xd8"
        wait_for(lambda: d.daemon.live.pipeline.decode.conf == 0.3, 5, "threshold applied")
        collector.close()


payloads = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(
        st.sampled_from(["type", "request_id", "camera", "start", "end", "thresholds", "reason", "x"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.floats(allow_nan=True),
            st.text(max_size=30),
            st.sampled_from(["ping", "flag_window", "set_thresholds", "rollback", "request_snapshot", "cam1"]),
            st.dictionaries(st.text(max_size=10), st.floats(allow_nan=False), max_size=3),
        ),
        max_size=6,
    ).map(lambda d: json.dumps(d).encode()),
)


def test_fuzzed_commands_never_crash_the_daemon(tmp_path: Path, broker: MosquittoBroker, daemon_model: Path) -> None:
    cfg = write_config(
        tmp_path / "c.yaml", config_dict(tmp_path, broker.port, daemon_model, [synthetic_camera("cam1")])
    )
    with InProcessDaemon(cfg) as d:
        collector = Collector(broker.port)
        wait_for(lambda: d.daemon.parts.link.connected, 10, "connected")
        time.sleep(0.3)
        sent = [0]

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(payloads)
        def fuzz(payload: bytes) -> None:
            collector.publish(CMD, payload)
            collector.publish("edge/site1/fleet/models", payload)
            sent[0] += 1

        fuzz()
        collector.publish(CMD, _command("alive"))
        wait_for(lambda: "alive" in _replies(collector), 15, "reply after fuzzing")
        assert d.rc is None and not d.daemon.live.errors, d.daemon.live.errors
        assert d.daemon.parts.link.metrics().commands >= sent[0]
        processed = d.daemon.live.pipeline.counters.frames
        wait_for(lambda: d.daemon.live.pipeline.counters.frames > processed, 5, "still detecting")
        collector.close()


def test_camera_disappears_and_comes_back(tmp_path: Path, daemon_model: Path) -> None:
    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    camera = {
        "name": "folder",
        "source": {"type": "images", "path": str(folder), "fps": 20, "loop": True},
        "reconnect": {"initial_s": 0.1, "max_s": 0.2},
    }
    cfg = write_config(tmp_path / "c.yaml", config_dict(tmp_path, free_port(), daemon_model, [camera]))
    with InProcessDaemon(cfg) as d:
        status = lambda: d.daemon.live.camera_status.get("folder")  # noqa: E731
        wait_for(lambda: status() and status().state.value == "streaming", 10, "streaming")
        os.rename(folder, tmp_path / "gone")
        wait_for(lambda: status().state.value == "reconnecting", 10, "reconnecting")
        processed = d.status()["cameras"]["folder"]["processed"]
        os.rename(tmp_path / "gone", folder)
        wait_for(lambda: status().state.value == "streaming", 10, "streaming again")
        wait_for(lambda: d.status()["cameras"]["folder"]["processed"] > processed + 5, 10, "frames processed again")
        assert d.status()["cameras"]["folder"]["reconnects"] >= 1


def test_spool_full_evicts_samples_before_alerts_and_counts(tmp_path: Path, daemon_model: Path) -> None:
    cam = synthetic_camera("cam1", fps=10)
    cam["rules"] = sampling_rules()
    data = config_dict(tmp_path, free_port(), daemon_model, [cam], spool={"max_bytes": 150_000})
    cfg = write_config(tmp_path / "c.yaml", data)
    with InProcessDaemon(cfg) as d:  # no broker listens: everything stays in the spool
        wait_for(lambda: d.daemon.parts.spool.stats().counters.get("evicted.sample", 0) > 3, 30, "sample evictions")
        stats = d.daemon.parts.spool.stats()
        assert stats.bytes <= 150_000
        assert stats.counters.get("evicted.alert", 0) == 0
        d.daemon.write_status()
        document = json.loads((tmp_path / "state" / "status.json").read_text())
        assert document["spool"]["counters"]["evicted.sample"] > 3
        assert "evicted" in render_summary(document)
        assert d.daemon.live.pipeline.counters.frames > 10


class BlockingBackend:
    """Fake at the runtime seam: a real ONNX Runtime session that blocks inside ``run`` while ``block`` is
    set (what a hung GPU driver or runtime looks like to the daemon)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.block = threading.Event()
        self.release = threading.Event()
        self.max_batch = inner.max_batch
        self.input_shape = inner.input_shape
        self.input_dtype = inner.input_dtype
        self.output_names = inner.output_names

    def run(self, tensor: np.ndarray) -> Any:
        if self.block.is_set():
            self.release.wait(30)
        return self.inner.run(tensor)

    def describe(self) -> Dict[str, Any]:
        return {"backend": "blocking-fake", **self.inner.describe()}

    def close(self) -> None:
        self.inner.close()


def test_stuck_inference_stops_watchdog_pings_and_sigterm_bound(tmp_path: Path, daemon_model: Path) -> None:
    sock = notify_socket(tmp_path / "notify")
    notifier = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"})
    backends: List[BlockingBackend] = []

    def factory(path: Path, backend_cfg: Any) -> Detector:
        model = read_model(path)
        backend = BlockingBackend(
            OnnxRuntimeBackend(model.data, OnnxRuntimeConfig(intra_op_threads=1), source=str(path))
        )
        backends.append(backend)
        return Detector(model=model, backend=backend)  # type: ignore[arg-type]

    data = config_dict(tmp_path, free_port(), daemon_model, [synthetic_camera("cam1", fps=10)])
    data["daemon"]["shutdown_timeout_s"] = 2
    cfg = write_config(tmp_path / "c.yaml", data)
    d = InProcessDaemon(cfg, notifier=notifier, detector_factory=factory)
    with d:
        first = drain_notifications(sock, 1.0)
        assert any(m.startswith("READY=1") for _, m in first)
        assert sum(m == "WATCHDOG=1" for _, m in first) >= 3  # every ~0.2 s while the loop makes progress
        backends[0].block.set()
        time.sleep(0.3)  # the loop is now inside run()
        drain_notifications(sock, 0.1)
        stuck = drain_notifications(sock, 1.5)
        assert not [m for _, m in stuck if m == "WATCHDOG=1"], stuck  # systemd would kill us now
        assert d.status()["inference"]["busy_s"] > 1.0
        t0 = time.monotonic()
        d.daemon.request_stop("test")
        d._thread.join(10)
        elapsed = time.monotonic() - t0
        assert not d._thread.is_alive() and elapsed < 2 + 1.0, elapsed  # bounded even with a hung runtime
        assert any(m.startswith("STOPPING=1") for _, m in drain_notifications(sock, 0.2))
    backends[0].release.set()


def test_hot_swap_reload_and_status_cli(tmp_path: Path, daemon_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cameras = [synthetic_camera("cam1", seed=1, fps=10), synthetic_camera("cam2", seed=2, fps=10)]
    data = config_dict(tmp_path, free_port(), daemon_model, cameras)
    cfg = write_config(tmp_path / "c.yaml", data)
    other = tmp_path / "other.onnx"
    other.write_bytes(daemon_model.read_bytes())
    with InProcessDaemon(cfg) as d:
        daemon = d.daemon
        # both cameras added (all() of no cameras is True) and running
        wait_for(
            lambda: (
                len(daemon.live.pipeline.cameras) == 2
                and all(r.stats.processed > 5 for r in daemon.live.pipeline.cameras.values())
            ),
            20,
            "frames",
        )
        before = {
            n: (s.dropped, daemon.live.pipeline.cameras[n].stats.processed)
            for n, s in daemon.live.camera_status.items()
        }
        drops_before = {n: daemon.live.pipeline.cameras[n].source.status().dropped for n in before}
        import asyncio

        ok = asyncio.run_coroutine_threadsafe(
            daemon.parts.hot_swap.swap_model(other, "other", "2.0"), daemon._loop
        ).result(30)
        assert ok and daemon.live.pipeline.model.name == "other" and daemon.live.pipeline.counters.swaps == 1
        wait_for(
            lambda: all(daemon.live.pipeline.cameras[n].stats.processed > before[n][1] + 5 for n in before),
            20,
            "frames after swap",
        )
        for name in before:
            assert daemon.live.pipeline.cameras[name].source.status().dropped - drops_before[name] <= 1
        assert daemon.live.pipeline.counters.inference_errors == 0

        # reload: cam2 removed, cam3 added, cam1's rules changed, log level changed
        data["cameras"] = [synthetic_camera("cam1", fps=10, alerts=[]), synthetic_camera("cam3", seed=3, fps=10)]
        data["logging"]["level"] = "error"
        write_config(cfg, data)
        d.daemon.request_reload()
        wait_for(lambda: set(daemon.live.pipeline.cameras) == {"cam1", "cam3"}, 10, "cameras reloaded")
        wait_for(lambda: daemon.live.pipeline.cameras["cam1"].alerts.rules == (), 5, "rules reloaded")
        wait_for(lambda: daemon.live.pipeline.cameras["cam3"].stats.processed > 3, 20, "new camera running")
        write_config(cfg, {"mqtt": {"site": "x"}})  # invalid: keeps running unchanged
        d.daemon.request_reload()
        wait_for(lambda: any("reload rejected" in e for e in daemon.live.errors), 5, "reload rejected")
        assert set(daemon.live.pipeline.cameras) == {"cam1", "cam3"}
        daemon.live.errors.clear()
        write_config(cfg, data)
        daemon.write_status()
        capsys.readouterr()
        assert status_main(cfg, as_json=False) == 0
        text = capsys.readouterr().out
        assert "cam1" in text and "cam3" in text and "other 2.0" in text
        assert status_main(cfg, as_json=True) == 0
        # the in-process daemon's log lines share captured stdout: keep only the status document
        out = capsys.readouterr().out.splitlines()
        document = json.loads("\n".join(line for line in out if not re.match(r"\d{4}-\d\d-\d\d ", line)))
        assert document["daemon"]["cameras"]["cam3"]["processed"] > 0
    assert status_main(cfg) == 3  # EXIT_NOT_RUNNING: the daemon says it stopped
