"""The agent's link and the cloud ingest against a second MQTT 5 broker: ejabberd's mod_mqtt (Debian's
`ejabberd`, Erlang; the only other MQTT 5 broker the registries here offer: docs/SCALING.md).

What it shows: QoS 1 with PUBACKs, retained status, commands and replies, a sample from a box's spool stored
by the ingest over MQTT 5, password authentication; and the one difference that matters: ejabberd does not
support shared subscriptions (it disconnects a client that asks, reason 0x9E), so the ingest runs there as one
worker without ``share_group``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import paho.mqtt.client as mqtt
import pytest

from agent.protocol import Topics
from tests.agent.broker import free_port, wait_port
from tests.trainer import helpers as h

EJABBERDCTL = shutil.which("ejabberdctl") or (
    "/usr/sbin/ejabberdctl" if Path("/usr/sbin/ejabberdctl").exists() else None
)
pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(EJABBERDCTL is None, reason="ejabberd is not installed (make setup installs it)"),
]
PASSWORD = "broker-test-secret"

CONFIG = """
hosts: [localhost]
loglevel: warning
auth_method: [internal]
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: mod_mqtt
acl:
  local:
    user_regexp: ""
modules:
  mod_mqtt:
    access_publish:
      "#": [allow]
    access_subscribe:
      "#": [allow]
"""


class Ejabberd:
    """One ejabberd node with only its MQTT listener, in a temp dir (it runs as the `ejabberd` user)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.node = f"evltest{os.getpid()}{self.port}@localhost"
        for d in ("logs", "spool"):
            (root / d).mkdir(parents=True)
        (root / "ejabberd.yml").write_text(CONFIG.format(port=self.port))
        ctl = (
            Path("/etc/ejabberd/ejabberdctl.cfg").read_text() if Path("/etc/ejabberd/ejabberdctl.cfg").exists() else ""
        )
        ctl = "\n".join(
            line for line in ctl.splitlines() if not line.startswith(("EJABBERD_CONFIG_PATH", "EJABBERD_PID_PATH"))
        )
        (root / "ejabberdctl.cfg").write_text(
            f"{ctl}\nEJABBERD_CONFIG_PATH={root}/ejabberd.yml\nEJABBERD_PID_PATH={root}/ejabberd.pid\n"
        )
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(root)], check=False)
        self.proc: subprocess.Popen[bytes] | None = None

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert EJABBERDCTL is not None
        return subprocess.run(
            [EJABBERDCTL, "--ctl-config", str(self.root / "ejabberdctl.cfg"), "--node", self.node, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self) -> None:
        assert EJABBERDCTL is not None
        log = open(self.root / "foreground.log", "wb")
        self.proc = subprocess.Popen(
            [
                EJABBERDCTL,
                "--config-dir",
                str(self.root),
                "--ctl-config",
                str(self.root / "ejabberdctl.cfg"),
                "--logs",
                str(self.root / "logs"),
                "--spool",
                str(self.root / "spool"),
                "--node",
                self.node,
                "foreground",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        wait_port(self.port, timeout=60)

    def register(self, user: str) -> None:
        result = self.ctl("register", user, "localhost", PASSWORD)
        assert result.returncode == 0, result.stdout + result.stderr

    def stop(self) -> None:
        self.ctl("stop")
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def ejabberd() -> Iterator[Ejabberd]:
    # Not under pytest's temp dir: that is root's (mode 0700) and ejabberd drops to its own user.
    root = Path(tempfile.mkdtemp(prefix="evl-ejabberd-"))
    broker = Ejabberd(root)
    broker.start()
    try:
        for user in ("dev-1", "ingest-test", "ops", "w1"):
            broker.register(user)
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "mqtt-password"
    path.write_text(PASSWORD + "\n")
    return path


def test_the_agent_link_and_the_ingest_work_over_mqtt5_on_ejabberd(ejabberd: Ejabberd, tmp_path: Path) -> None:
    secret = password_file(tmp_path)
    config = h.trainer_config(
        tmp_path, ejabberd.port, broker={"protocol": "5", "username": "ingest-test", "password_file": str(secret)}
    )
    link = h.agent_link(tmp_path, ejabberd.port)
    link.config = link.config.model_copy(update={"username": "dev-1", "password_file": secret})
    topics = Topics("edge", "plant-1", "dev-1")
    replies: List[Tuple[str, bytes]] = []
    ops = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ops", protocol=mqtt.MQTTv5)
    ops.username_pw_set("ops", PASSWORD)
    ops.on_message = lambda c, u, m: replies.append((m.topic, bytes(m.payload)))
    ops.connect("127.0.0.1", ejabberd.port, 30)
    ops.loop_start()
    with h.running_service(config) as service:
        link.start()
        try:
            assert link.wait_connected_blocking(20), link.metrics()
            assert link.metrics().protocol == "5"
            topic, payload, meta = h.sample(device="dev-1")
            link.spool.put("sample", topic, payload, message_id=meta.id)
            _, alert_payload, event = h.alert(device="dev-1")
            link.spool.put("alert", topics.alerts, alert_payload, message_id=event.id)
            assert h.wait_until(lambda: len(link.spool) == 0, 20), "the broker did not acknowledge the spool"
            assert h.wait_until(lambda: h.stored_count(config) >= 1, 20), service.client.snapshot()

            ops.subscribe(topics.cmd_reply, 1)
            time.sleep(0.5)
            ops.publish(topics.cmd, json.dumps({"type": "ping", "request_id": "r-ejb"}).encode(), qos=1)
            # no asyncio loop here: the link answers the command itself (`unsupported`), over MQTT 5 too
            assert h.wait_until(lambda: any(b"r-ejb" in p for _, p in replies), 10), replies
        finally:
            link.stop()
            ops.disconnect()
            ops.loop_stop()
    assert service.exit_code == 0


def test_ejabberd_refuses_shared_subscriptions_so_the_ingest_runs_there_as_one_worker(ejabberd: Ejabberd) -> None:
    reasons: List[str] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="w1", protocol=mqtt.MQTTv5)
    client.username_pw_set("w1", PASSWORD)
    client.on_disconnect = lambda c, u, f, rc, p: reasons.append(str(rc))
    client.connect("127.0.0.1", ejabberd.port, 30)
    client.loop_start()
    try:
        client.subscribe("$share/ingest/edge/+/+/samples", 1)
        assert h.wait_until(lambda: bool(reasons), 10)
        assert reasons == ["Shared subscription not supported"]
    finally:
        client.loop_stop()
