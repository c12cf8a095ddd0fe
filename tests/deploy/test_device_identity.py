"""Device identities end to end (issue 13): certificates from `edge-trainer devices`, the shipped broker config
with its CRL, a real mosquitto. A revoked device is refused at connect; a rotated certificate takes over
without losing what the agent had spooled; the ACL still pins each identity to its own topics (the ACL cases
themselves: test_broker_acl.py, on certificates from the same tool)."""

from __future__ import annotations

import shutil
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any, List, Optional

import paho.mqtt.client as mqtt
import pytest

from agent.link import MqttConfig, MqttLink, TlsConfig
from agent.protocol import Topics
from agent.spool import Spool, SpoolConfig
from tests.agent.link.link_helpers import status, wait_until
from tests.deploy.test_broker_acl import SITE, SiteBroker
from trainer.commands.devices import main as devices_main
from trainer.devices import SitePki

pytestmark = pytest.mark.broker


def handshake(site: SiteBroker, cert: Path, key: Path) -> Optional[int]:
    """CONNACK reason code of a fresh MQTT 5 connection with this certificate, or None when the broker ended
    the TLS handshake (a refused certificate)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(site.pki / "ca.crt"))
    context.load_cert_chain(str(cert), str(key))
    codes = []
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"probe-{time.monotonic_ns()}", protocol=mqtt.MQTTv5
    )
    client.tls_set_context(context)
    client.on_connect = lambda c, u, f, rc, p: codes.append(rc.value)
    try:
        client.connect("localhost", site.tls_port, 30)
        for _ in range(50):  # TLS 1.3: a refused client certificate shows after the handshake
            if codes or client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
    except (ssl.SSLError, OSError):
        return None
    finally:
        client.disconnect()
    return codes[0] if codes else None


def reload_broker(site: SiteBroker) -> None:
    """What `systemctl reload mosquitto` does: SIGHUP, which makes mosquitto read the CRL again."""
    assert site.broker.proc is not None
    site.broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert site.broker.running, site.broker.log()


class PersistentOps:
    """An operator-side subscriber with a persistent session (MQTT 3.1.1, clean_session=False): the broker
    (persistence on, as shipped) keeps its subscription and queues its messages across a broker restart."""

    def __init__(self, site: SiteBroker, topic: str) -> None:
        self.payloads: List[bytes] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="ops-persistent", protocol=mqtt.MQTTv311, clean_session=False
        )
        self.client.username_pw_set("ops", "ops-secret")
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.connect("127.0.0.1", site.ops_port, 30)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: object, userdata: object, message: Any) -> None:
        with self._lock:
            self.payloads.append(bytes(message.payload))

    def received(self) -> List[bytes]:
        with self._lock:
            return list(self.payloads)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def device_files(site: SiteBroker, device: str) -> tuple:
    return site.pki / "devices" / f"{device}.crt", site.pki / "devices" / f"{device}.key"


def test_a_revoked_device_is_refused_at_connect_and_the_others_are_not(site: SiteBroker, tmp_path: Path) -> None:
    kept = tmp_path / "dev-a-copy"
    kept.mkdir()
    cert, key = device_files(site, "dev-a")
    shutil.copy(cert, kept / "a.crt")  # what the device holds
    shutil.copy(key, kept / "a.key")
    assert handshake(site, kept / "a.crt", kept / "a.key") == 0

    assert devices_main(["devices", "revoke", "dev-a", "--pki", str(site.pki)]) == 0
    reload_broker(site)

    assert handshake(site, kept / "a.crt", kept / "a.key") is None, "a revoked certificate connected"
    assert "certificate revoked" in site.broker.log() or "revoked" in site.broker.log().lower()
    assert handshake(site, *device_files(site, "dev-b")) == 0, "revoking dev-a refused dev-b too"
    assert not cert.exists() and not key.exists()  # nothing valid left to hand out for dev-a
    assert [r.state for r in SitePki(site.pki).records() if r.device == "dev-a"] == ["revoked"]


def test_a_rotated_certificate_takes_over_without_losing_the_spool(site: SiteBroker, tmp_path: Path) -> None:
    device_dir = tmp_path / "device"  # /etc/edge-agent on the box
    device_dir.mkdir()
    cert, key = device_dir / "dev-a.crt", device_dir / "mqtt-client.key"
    shutil.copy(site.pki / "devices" / "dev-a.crt", cert)
    shutil.copy(site.pki / "devices" / "dev-a.key", key)
    old_cert, old_key = tmp_path / "old.crt", tmp_path / "old.key"
    shutil.copy(cert, old_cert)
    shutil.copy(key, old_key)
    config = MqttConfig(
        host="localhost",
        port=site.tls_port,
        site=SITE,
        device="dev-a",
        tls=TlsConfig(ca_file=site.pki / "ca.crt", cert_file=cert, key_file=key),
        backoff={"initial_s": 0.1, "max_s": 0.5},
    )
    spool = Spool(SpoolConfig(path=tmp_path / "spool.db"))
    link = MqttLink(config, spool, lambda: status().model_copy(update={"device": "dev-a", "site": SITE}))
    topics = Topics("edge", SITE, "dev-a")
    ops = PersistentOps(site, topics.alerts)
    link.start()
    try:
        assert link.wait_connected_blocking(15), link.metrics()
        spool.put("alert", topics.alerts, b'{"id": "before"}', message_id="before")
        assert wait_until(lambda: len(ops.received()) == 1, 10)

        # The broker goes away; the box spools meanwhile.
        site.broker.stop()
        assert wait_until(lambda: not link.connected, 10)
        for i in range(20):
            spool.put("alert", topics.alerts, f'{{"id": "during-{i}"}}'.encode(), message_id=f"during-{i}")

        # The operator rotates the certificate, installs the new one on the box, retires the old one.
        assert devices_main(["devices", "rotate", "dev-a", "--pki", str(site.pki)]) == 0
        shutil.copy(site.pki / "devices" / "dev-a.crt", cert)
        shutil.copy(site.pki / "devices" / "dev-a.key", key)
        assert devices_main(["devices", "revoke", "dev-a", "--superseded", "--pki", str(site.pki)]) == 0
        site.broker.start()  # reads the new CRL

        assert wait_until(lambda: len(spool) == 0, 30), (len(spool), link.metrics())
        assert wait_until(lambda: len(set(ops.received())) >= 21, 15), len(set(ops.received()))
        assert len(set(ops.received())) == 21, "a spooled message was lost across the rotation"
        assert link.metrics().connects >= 2
        assert handshake(site, old_cert, old_key) is None, "the superseded certificate still connects"
        assert handshake(site, cert, key) == 0
        states = {r.state for r in SitePki(site.pki).records() if r.device == "dev-a"}
        assert states == {"active", "revoked"}
    finally:
        link.stop()
        ops.close()
        spool.close()
