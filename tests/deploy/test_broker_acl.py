"""The site broker config in deploy/mosquitto/, run for real: mutual TLS, identities from certificates,
and an ACL under which a device cannot publish as another device nor read another device's commands.

Certificates come from `edge-trainer devices` (trainer/devices) into a temp dir, CRL included; the config file
is the shipped one with paths and ports rewritten (each rewrite is asserted, so a drifting config fails here
loudly).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import List, Tuple

import paho.mqtt.client as mqtt
import pytest

from agent.link import MqttConfig, MqttLink, TlsConfig
from agent.protocol import Topics
from agent.spool import Spool, SpoolConfig
from tests.agent.broker import Collector, MosquittoBroker, free_port
from tests.agent.link.link_helpers import status, wait_until
from trainer.commands.devices import main as devices_main

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "mosquitto"
SITE = "site1"


def _rewrite(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/mosquitto/mosquitto.conf no longer contains {old!r}"
    return text.replace(old, new)


class SiteBroker:
    def __init__(self, tmp: Path) -> None:
        self.pki = tmp / "pki"
        for args in (["init"], ["server", "localhost", "127.0.0.1"], ["provision", "dev-a"], ["provision", "dev-b"]):
            assert devices_main(["devices", args[0], "--pki", str(self.pki), *args[1:]]) == 0, args
        shutil.copy(DEPLOY / "acl", self.pki / "acl")
        shutil.copy(DEPLOY / "ops.acl", self.pki / "ops.acl")
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(self.pki / "ops.passwd"), "ops", "ops-secret"], check=True)
        self.tls_port = free_port()
        self.ops_port = free_port()
        while self.ops_port == self.tls_port:
            self.ops_port = free_port()
        text = (DEPLOY / "mosquitto.conf").read_text()
        text = _rewrite(text, "/etc/mosquitto/edge/", f"{self.pki}/")
        text = _rewrite(text, "persistence_location /var/lib/mosquitto/", f"persistence_location {tmp}/")
        text = _rewrite(text, "listener 8883\n", f"listener {self.tls_port} 127.0.0.1\n")
        text = _rewrite(text, "listener 1883 127.0.0.1\n", f"listener {self.ops_port} 127.0.0.1\n")
        text = _rewrite(text, "log_dest syslog", "log_dest stderr")
        if os.geteuid() == 0:
            text = "user root\n" + text
        self.broker = MosquittoBroker(
            tmp / "broker", port=self.tls_port, conf_text=text.replace("{", "{{").replace("}", "}}")
        )

    def tls_context(self, device: str | None) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.pki / "ca.crt"))
        if device is not None:
            context.load_cert_chain(
                str(self.pki / "devices" / f"{device}.crt"), str(self.pki / "devices" / f"{device}.key")
            )
        return context

    def device_client(self, device: str) -> DeviceClient:
        return DeviceClient(self.tls_port, device, self.tls_context(device))

    def ops(self) -> Collector:
        return Collector(self.ops_port, client_id="ops-observer", username="ops", password="ops-secret")


class DeviceClient:
    """A raw MQTT 5 client with a device certificate, recording PUBACK/SUBACK reason codes."""

    def __init__(self, port: int, device: str, context: ssl.SSLContext) -> None:
        self.messages: List[Tuple[str, bytes]] = []
        self.pubacks: dict = {}
        self.subacks: dict = {}
        self.connack: List[int] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5)
        c.tls_set_context(context)
        c.on_connect = lambda cl, u, f, rc, p: self.connack.append(rc.value)
        c.on_message = lambda cl, u, m: self.messages.append((m.topic, bytes(m.payload)))
        c.on_publish = lambda cl, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.subacks.__setitem__(mid, [r.value for r in rcs])
        c.connect("localhost", port, 30)
        c.loop_start()
        self.client = c
        assert wait_until(lambda: bool(self.connack), 10) and self.connack == [0]

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: info.mid in self.pubacks, 10)
        return int(self.pubacks[info.mid])

    def subscribe(self, topic: str) -> int:
        _, mid = self.client.subscribe(topic, qos=1)
        assert wait_until(lambda: mid in self.subacks, 10)
        return int(self.subacks[mid][0])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_device_cannot_publish_as_another_device(site: SiteBroker) -> None:
    ops = site.ops().subscribe("edge/#")
    a = site.device_client("dev-a")
    try:
        forged = a.publish(f"edge/{SITE}/dev-b/alerts", b'{"forged": true}')
        own = a.publish(f"edge/{SITE}/dev-a/alerts", b'{"own": true}')
        assert forged == 0x87  # MQTT 5 PUBACK: Not authorized
        assert own == 0
        assert ops.wait_for(lambda m: any(t == f"edge/{SITE}/dev-a/alerts" for t, *_ in m))
        time.sleep(0.3)
        assert ops.on(f"edge/{SITE}/dev-b/alerts") == [], "a forged message reached a subscriber"
        # nor samples under another device's topic (the cloud ingest also refuses a sample naming another device)
        assert a.publish(f"edge/{SITE}/dev-b/samples", b"EVL1\x00\x00\x00\x02{}") == 0x87
        # a device cannot send commands either, not even to itself
        assert a.publish(f"edge/{SITE}/dev-b/cmd", b"{}") == 0x87
    finally:
        a.close()
        ops.close()


def test_device_cannot_read_another_devices_commands_but_reads_its_own_and_the_fleet(
    site: SiteBroker,
) -> None:
    a = site.device_client("dev-a")
    b = site.device_client("dev-b")
    ops = site.ops()
    try:
        a.subscribe(f"edge/{SITE}/dev-b/cmd")  # may be granted or refused: either way nothing must arrive
        a.subscribe(f"edge/{SITE}/+/cmd")
        assert a.subscribe(f"edge/{SITE}/dev-a/cmd") == 1
        assert a.subscribe(f"edge/{SITE}/fleet/models") == 1
        assert b.subscribe(f"edge/{SITE}/dev-b/cmd") == 1
        ops.publish(f"edge/{SITE}/dev-b/cmd", b'{"for": "b"}')
        ops.publish(f"edge/{SITE}/dev-a/cmd", b'{"for": "a"}')
        ops.publish(f"edge/{SITE}/fleet/models", b'{"push": 1}', retain=True)
        assert wait_until(lambda: any(t.endswith("fleet/models") for t, _ in a.messages), 10)
        assert wait_until(lambda: any(t.endswith("dev-b/cmd") for t, _ in b.messages), 10)
        time.sleep(0.3)
        got_a = [(t, json.loads(p)) for t, p in a.messages]
        assert (f"edge/{SITE}/dev-a/cmd", {"for": "a"}) in got_a
        assert all(p != {"for": "b"} for _, p in got_a), "device A read device B's command"
    finally:
        a.close()
        b.close()
        ops.close()


def test_client_without_certificate_is_refused(site: SiteBroker) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-a", protocol=mqtt.MQTTv5)
    c.tls_set_context(site.tls_context(None))
    with pytest.raises((ssl.SSLError, OSError)):
        c.connect("localhost", site.tls_port, 30)
        for _ in range(50):  # TLS 1.3 reports a missing client certificate after the handshake
            if c.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                raise OSError("connection closed by the broker")
        assert not c.is_connected()


def test_agent_link_over_mutual_tls(site: SiteBroker, tmp_path: Path) -> None:
    ops = site.ops().subscribe("edge/#")
    config = MqttConfig(
        host="localhost",
        port=site.tls_port,
        site=SITE,
        device="dev-a",
        tls=TlsConfig(
            ca_file=site.pki / "ca.crt",
            cert_file=site.pki / "devices" / "dev-a.crt",
            key_file=site.pki / "devices" / "dev-a.key",
        ),
        backoff={"initial_s": 0.1, "max_s": 0.5},
        max_rejects=2,
    )
    spool = Spool(SpoolConfig(path=tmp_path / "spool.db"))
    link = MqttLink(config, spool, lambda: status().model_copy(update={"device": "dev-a", "site": SITE}))
    link.start()
    topics = Topics("edge", SITE, "dev-a")
    try:
        assert link.wait_connected_blocking(15), link.metrics()
        spool.put("alert", topics.alerts, b'{"id": "tls-1"}')
        spool.put("alert", f"edge/{SITE}/dev-b/alerts", b'{"id": "forged"}')
        assert ops.wait_for(lambda m: any(t == topics.alerts for t, *_ in m))
        assert wait_until(lambda: len(spool) == 0, 10)
        assert link.metrics().quarantined == 1  # the broker keeps refusing it: quarantined, not retried forever
        assert ops.on(f"edge/{SITE}/dev-b/alerts") == []
        assert any(t == topics.status and b"online" in p for t, p, *_ in ops.messages)
    finally:
        link.stop()
        ops.close()
