"""Opening one MQTT connection with paho, the same way for every long-lived client of the project (the agent's
link, the cloud ingest): TLS from the configuration, credentials read on every attempt (a rotated password is
picked up without a restart), a persistent session (MQTT 5 ``clean_start=False`` with a session expiry;
3.1.1 ``clean_session=False`` set when the client is made), and a CONNACK awaited with a deadline.

The caller owns the client and its thread; these functions only run on that thread.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from typing import Any, Callable, Optional, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.link.config import BrokerConnection, TlsConfig, credential_path

Connack = Tuple[int, str]
"""(reason code, its text) of a CONNACK."""


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client TLS context: the broker's CA, hostname checking as configured, a client certificate if given
    (its key read from ``$CREDENTIALS_DIRECTORY`` when relative)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(credential_path(tls.key_file)))
    return context


def connect_properties(session_expiry_s: int, receive_maximum: Optional[int] = None) -> Any:
    """MQTT 5 CONNECT properties: how long the broker keeps the session, how many messages it may send
    unacknowledged."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        properties.ReceiveMaximum = receive_maximum
    return properties


def begin_connect(client: mqtt.Client, config: BrokerConnection, v5: bool, properties: Any = None) -> None:
    """Send CONNECT, resuming the session. Raises OSError / ssl.SSLError / ValueError when the socket cannot be
    opened (the caller backs off)."""
    if config.username is not None:
        client.username_pw_set(config.username, config.read_password())
    client.connect(
        config.host,
        config.port,
        config.keepalive_s,
        clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties if v5 else None,
    )


def wait_connack(
    client: mqtt.Client, received: Callable[[], Optional[Connack]], timeout_s: float, stop: threading.Event
) -> Optional[Connack]:
    """Run the network loop until the CONNACK that the client's ``on_connect`` records (``received()`` returns
    it) arrives, the connection fails, ``timeout_s`` passes or ``stop`` is set; the CONNACK or None."""
    deadline = time.monotonic() + timeout_s
    while received() is None and time.monotonic() < deadline and not stop.is_set():
        if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS and received() is None:
            break
    return received()


def drop_socket(client: mqtt.Client) -> None:
    """Close a connection that is being abandoned (refused, timed out, lost), whatever state it is in."""
    with contextlib.suppress(Exception):
        client.disconnect()
        client.loop(timeout=0.01)
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
