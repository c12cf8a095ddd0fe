"""The MQTT link against a real mosquitto 2.0: delivery, outages, restarts, refusals, commands."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

import pytest

from agent.link import MqttLink
from agent.protocol import (
    Command,
    CommandReply,
    RequestSnapshotCommand,
    Topics,
)
from agent.threads import Supervisor
from tests.agent.broker import Collector, MosquittoBroker
from tests.agent.link.link_helpers import DEVICE, SITE, make_link, make_spool, wait_until

pytestmark = pytest.mark.broker
TOPICS = Topics("edge", SITE, DEVICE)


@pytest.fixture
def collector(broker: MosquittoBroker):
    c = Collector(broker.port, client_id="observer")
    c.subscribe("edge/#")
    yield c
    c.close()


def ids_on(collector: Collector, topic: str) -> List[str]:
    return [json.loads(p)["id"] for p in collector.on(topic)]


def test_publish_ack_round_trip(tmp_path: Path, broker: MosquittoBroker, collector: Collector) -> None:
    link = make_link(tmp_path, broker.port)
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        payload = json.dumps({"id": "a-1"}).encode()
        link.spool.put("alert", TOPICS.alerts, payload, message_id="a-1")
        assert collector.wait_for(lambda m: any(t == TOPICS.alerts for t, *_ in m))
        assert wait_until(lambda: len(link.spool) == 0)
        (_, body, retain, user) = next(m for m in collector.messages if m[0] == TOPICS.alerts)
        assert body == payload and not retain and user["id"] == "a-1"  # MQTT 5 user property carries the id
        # retained online status on connect
        assert collector.wait_for(lambda m: any(t == TOPICS.status and b"online" in p for t, p, *_ in m))
        metrics = link.metrics()
        assert (metrics.connects, metrics.published, metrics.acked, metrics.protocol) == (1, 1, 1, "5")
    finally:
        link.stop()


@pytest.mark.parametrize(
    "down_s",
    [
        1.0,
        pytest.param(
            30.0,
            marks=pytest.mark.slow,  # make test-slow
        ),
    ],
)
def test_broker_outage_loses_nothing_and_drains_the_spool(
    tmp_path: Path, broker: MosquittoBroker, down_s: float
) -> None:
    link = make_link(tmp_path, broker.port)
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        broker.stop()
        assert wait_until(lambda: not link.connected, 10)
        expected = []
        for i in range(60):  # produced while the broker is down
            kind = "alert" if i % 4 == 0 else "sample"
            mid = f"{kind}-{i}"
            link.spool.put(
                kind,
                TOPICS.alerts if kind == "alert" else TOPICS.samples,
                json.dumps({"id": mid}).encode(),
                message_id=mid,
            )
            expected.append(mid)
        wait_until(lambda: link.metrics().connect_errors >= 2, 5)
        time.sleep(down_s)
        broker.start()  # same port, no persistence: the broker forgot everything
        collector = Collector(broker.port, client_id="observer2").subscribe("edge/#")
        try:
            assert link.wait_connected_blocking(15)
            assert wait_until(lambda: len(link.spool) == 0, 20), link.metrics()
            got = ids_on(collector, TOPICS.alerts) + ids_on(collector, TOPICS.samples)
            assert set(got) == set(expected), f"missing {set(expected) - set(got)}"
            # at-least-once: any duplicate is recognisable by its id, and there are none here
            assert len(got) == len(set(got))
            # alerts were sent before samples
            order = [json.loads(p)["id"] for t, p, *_ in collector.messages if t in (TOPICS.alerts, TOPICS.samples)]
            first_sample = next(i for i, mid in enumerate(order) if mid.startswith("sample"))
            assert all(mid.startswith("sample") for mid in order[first_sample:])
            m = link.metrics()
            assert m.connects == 2 and m.disconnects == 1 and m.connect_errors >= 1
        finally:
            collector.close()
    finally:
        link.stop()


def test_commands_reach_the_handler_after_a_restart_without_persistence(
    tmp_path: Path,
    broker: MosquittoBroker,
) -> None:
    received: List[Command] = []

    def handler(command: Command) -> Optional[CommandReply]:
        received.append(command)
        return CommandReply.ok(
            command.request_id,
            DEVICE,
            command.sent_at or __import__("datetime").datetime.now(__import__("datetime").timezone.utc),
        )

    link = make_link(tmp_path, broker.port, on_command=handler)
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        sender = Collector(broker.port, client_id="ops")
        sender.publish(
            TOPICS.cmd,
            json.dumps({"type": "request_snapshot", "request_id": "r1", "camera": "cam1"}).encode(),
        )
        assert wait_until(lambda: len(received) == 1)
        sender.close()
        broker.restart(persistence=False)  # sessions and subscriptions are gone on the broker
        assert wait_until(lambda: link.metrics().connects == 2, 15)
        sender = Collector(broker.port, client_id="ops").subscribe(TOPICS.cmd_reply)
        wait_until(lambda: False, 0.3)  # let the link's SUBSCRIBE land before publishing
        sender.publish(
            TOPICS.cmd,
            json.dumps({"type": "request_snapshot", "request_id": "r2", "camera": "cam1"}).encode(),
        )
        assert wait_until(lambda: len(received) == 2), "command after restart never reached the handler"
        assert isinstance(received[1], RequestSnapshotCommand) and received[1].request_id == "r2"
        assert sender.wait_for(lambda m: any(b'"r2"' in p for _, p, *_ in m))
        sender.close()
    finally:
        link.stop()


def test_wrong_password_is_a_refusal_retried_with_backoff(tmp_path: Path, broker_factory) -> None:
    pwfile = tmp_path / "passwd"
    os.system(f"mosquitto_passwd -b -c {pwfile} {DEVICE} right-secret >/dev/null 2>&1")
    assert pwfile.exists()
    b = broker_factory(
        conf_text=(
            f"listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {pwfile}\n"
            + ("user root\n" if os.geteuid() == 0 else "")
            + "log_dest stderr\n"
        )
    )
    b.start()
    secret = tmp_path / "mqtt-password"
    secret.write_text("wrong-secret\n")
    link = make_link(tmp_path, b.port, username=DEVICE, password_file=str(secret))
    link.start()
    try:
        assert wait_until(lambda: link.metrics().refused >= 3, 10)
        m = link.metrics()
        assert not link.connected and m.connects == 0
        assert "Not authorized" in (m.last_connack or "") or "password" in (m.last_connack or "").lower()
        assert m.last_backoff_s > 0
        # rotate the secret: the same link reads it again and connects on its next attempt
        secret.write_text("right-secret\n")
        assert link.wait_connected_blocking(10)
    finally:
        link.stop()


MALFORMED = [
    b"\xff\xfe not utf8",
    b"{not json",
    b"[1, 2, 3]",
    b'{"type": "self_destruct", "request_id": "x1"}',
    b'{"type": "request_snapshot", "request_id": "x2"}',
    b'{"type": "set_thresholds", "request_id": "x3", "thresholds": {"conf": 7}}',
    b"{" * 100_000,
]


def test_malformed_commands_get_error_replies_and_the_link_keeps_working(
    tmp_path: Path,
    broker: MosquittoBroker,
    collector: Collector,
) -> None:
    link = make_link(tmp_path, broker.port)
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        for payload in MALFORMED:
            collector.publish(TOPICS.cmd, payload)
        collector.publish(TOPICS.cmd, b'{"type": "ping", "request_id": "alive"}')
        assert collector.wait_for(lambda m: len([1 for t, *_ in m if t == TOPICS.cmd_reply]) == len(MALFORMED) + 1)
        replies = [json.loads(p) for p in collector.on(TOPICS.cmd_reply)]
        errors = [r for r in replies if r["status"] == "error"]
        assert [r["error"]["code"] for r in errors] == [
            "bad_utf8",
            "bad_json",
            "invalid",
            "unknown_type",
            "invalid",
            "invalid",
            "oversize",
        ]
        assert [r["request_id"] for r in errors][3:6] == ["x1", "x2", "x3"]
        assert replies[-1]["status"] == "ok" and replies[-1]["request_id"] == "alive"
        assert link.metrics().commands_malformed == len(MALFORMED)
        assert link.connected
    finally:
        link.stop()


def test_message_refused_by_the_broker_is_quarantined_not_retried_forever(tmp_path: Path, broker_factory) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite edge/#\n")
    b = broker_factory(extra_conf=f"acl_file {acl}\n")
    b.start()
    link = make_link(tmp_path, b.port, max_rejects=3)
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        bad = link.spool.put("alert", "forbidden/topic", b"{}", message_id="bad-1")
        good = link.spool.put("alert", TOPICS.alerts, b"{}", message_id="good-1")
        assert wait_until(lambda: len(link.spool) == 0, 10), link.metrics()
        m = link.metrics()
        assert m.quarantined == 1 and m.rejected == 3
        assert [q[0] for q in link.spool.quarantined()] == [bad]
        assert link.spool.stats().counters["acked"] >= 1 and good
    finally:
        link.stop()


def test_mqtt_311_protocol_and_framed_samples(tmp_path: Path, broker: MosquittoBroker, collector: Collector) -> None:
    from agent.protocol import ProtocolLimits, encode_frame, parse_sample

    link = make_link(tmp_path, broker.port, protocol="3.1.1")
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        assert link.metrics().protocol == "3.1.1"
        from tests.agent.test_protocol import sample_meta

        jpeg = os.urandom(5000)
        meta = sample_meta(jpeg)
        link.spool.put(
            "sample", TOPICS.samples, encode_frame(meta.model_dump_json().encode(), jpeg), message_id=meta.id
        )
        assert collector.wait_for(lambda m: any(t == TOPICS.samples for t, *_ in m))
        got_meta, got_jpeg = parse_sample(TOPICS.samples, collector.on(TOPICS.samples)[0], ProtocolLimits())
        assert got_meta == meta and got_jpeg == jpeg
    finally:
        link.stop()


def test_retained_state_is_restored_after_a_broker_restart(tmp_path: Path, broker: MosquittoBroker) -> None:
    link = make_link(tmp_path, broker.port)
    link.start()
    try:
        assert link.wait_connected_blocking(10)
        link.set_retained(TOPICS.camera_status("cam1"), b'{"state":"streaming"}')
        broker.restart(persistence=False)
        assert wait_until(lambda: link.metrics().connects == 2, 15)
        # The link republishes after its CONNACK, so a subscriber arriving in between gets the message live
        # (retain flag clear). Once one subscriber has it, the broker holds it: a later one must get it retained.
        late = Collector(broker.port, client_id="late").subscribe(TOPICS.camera_status("cam1"))
        later = None
        try:
            assert late.wait_for(lambda m: len(m) > 0)
            later = Collector(broker.port, client_id="later").subscribe(TOPICS.camera_status("cam1"))
            assert later.wait_for(lambda m: any(r for _, _, r, _ in m))  # delivered as retained
        finally:
            late.close()
            if later is not None:
                later.close()
    finally:
        link.stop()


def test_asyncio_surface(tmp_path: Path, broker: MosquittoBroker) -> None:
    import asyncio

    async def scenario() -> Command:
        link: MqttLink = make_link(tmp_path, broker.port)
        link.start(asyncio.get_running_loop())
        try:
            assert await link.wait_connected(10)
            sender = Collector(broker.port, client_id="ops")
            sender.publish(TOPICS.cmd, b'{"type": "rollback", "request_id": "rb1"}')
            sender.close()
            assert link.commands is not None
            return await asyncio.wait_for(link.commands.get(), 10)
        finally:
            link.stop()

    command = asyncio.run(scenario())
    assert command.type == "rollback" and command.request_id == "rb1"


def test_graceful_stop_publishes_offline(tmp_path: Path, broker: MosquittoBroker, collector: Collector) -> None:
    link = make_link(tmp_path, broker.port)
    link.start()
    assert link.wait_connected_blocking(10)
    link.stop()
    assert collector.wait_for(lambda m: any(t == TOPICS.status and b'"offline"' in p for t, p, *_ in m))
    assert make_spool is not None


def test_an_exception_while_serving_reconnects_instead_of_killing_the_thread(
    tmp_path: Path, broker: MosquittoBroker, collector: Collector
) -> None:
    link = make_link(tmp_path, broker.port)
    real = link._status_payload
    calls = {"n": 0}

    def flaky(state: str) -> bytes:  # a status payload that cannot be built, once, while serving a connection
        if link._connected.is_set():
            calls["n"] += 1
            if calls["n"] == 1:
                raise ValueError("status payload broke")
        return real(state)

    link._status_payload = flaky  # type: ignore[method-assign]
    link.start()
    try:
        assert wait_until(lambda: link.metrics().serve_errors == 1, 10)
        assert link.wait_connected_blocking(10), "the link did not come back after the exception"
        assert link.alive and link.failure is None
        link.spool.put("alert", TOPICS.alerts, b'{"id": "a-2"}', message_id="a-2")
        assert collector.wait_for(lambda m: any(t == TOPICS.alerts for t, *_ in m))
        assert link.metrics().connects == 2
    finally:
        link.stop()


def test_a_dead_link_thread_is_reported_and_restarted(tmp_path: Path, broker: MosquittoBroker) -> None:
    supervisor = Supervisor()
    link = make_link(tmp_path, broker.port, supervisor=supervisor)
    real = link._run_guarded
    calls = {"n": 0}

    def broken_once() -> None:  # a bug outside every guard of the loop, the first time only
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("link bug")
        real()

    link._run_guarded = broken_once  # type: ignore[method-assign]
    link.start()
    try:
        assert wait_until(lambda: len(supervisor.deaths()) == 1, 5)
        death = supervisor.deaths()[0]
        assert death.worker == "mqtt-link" and "link bug" in death.error and death.action.value == "restart"
        assert isinstance(link.failure, RuntimeError)
        assert link.wait_connected_blocking(10), "the restarted link did not connect"
        state = {s.name: s for s in supervisor.states()}["mqtt-link"]
        assert state.restarts == 1 and state.state == "running"
    finally:
        link.stop()
