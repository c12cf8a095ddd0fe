"""The ``mqtt-ingest`` thread: owns the paho client, hands every message to the store writer, and sends each
PUBACK only when the writer says the message is stored.

::

    connect (MQTT 5, clean_start=False, session expiry, Receive Maximum) ──refused 0x84──► 3.1.1 (auto)
       │ CONNACK ok                 └─ refused / socket error ──► jittered backoff ──► connect
       ▼
    subscribe every filter again (QoS 1; events through $share/<group>/ on MQTT 5)
       ▼
    loop: paho network I/O → on_message: Delivery(generation, mid) → writer
          acks from the writer → PUBACK, but only for deliveries of *this* connection

Why the generation: a packet id (mid) names a message on one connection only. When the connection drops, the
broker re-sends every unacknowledged message on the next one (persistent session); a PUBACK for an old mid on
the new connection would acknowledge the wrong message. So late acks of a previous connection are dropped
(counted ``stale_acks``): the broker re-delivers those messages, and the store recognises them by id.

paho is created with ``manual_ack=True``: nothing is acknowledged behind our back. All paho calls happen on
this thread; the writer only appends to a deque.

Flow control: the broker should never have more than Receive Maximum unacknowledged messages in flight to
us, but mosquitto 2.0.11 sends a resumed session's whole queue at once (measured: 5,000 of 6,000 queued
messages in flight within a second, the resident set past 700 MB). So the thread also stops *reading* while
``intake_window`` messages are handed over and not yet acknowledged: TCP then holds the broker back, and
memory stays bounded whatever the broker does. It still reads at least every half keepalive, so the
connection's PINGRESPs are seen.
"""

from __future__ import annotations

import collections
import dataclasses
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.link.backoff import Backoff
from agent.link.session import begin_connect, connect_properties, drop_socket, tls_context, wait_connack
from trainer.ingest.config import IngestConfig
from trainer.ingest.topics import subscription_filters

log = structlog.get_logger("trainer.ingest.client")

_UNSUPPORTED_PROTOCOL = 0x84


class AckToken(NamedTuple):
    """What it takes to acknowledge one message: the connection it came on and its packet id there."""

    generation: int
    mid: int
    qos: int


@dataclass(frozen=True)
class Delivery:
    """One message as it came off the wire, with what it takes to acknowledge it."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    received_at: float

    @property
    def token(self) -> AckToken:
        return AckToken(self.generation, self.mid, self.qos)


@dataclass(frozen=True)
class ClientSnapshot:
    """The network thread's counters and state, published for other threads to read."""

    connected: bool = False
    subscribed: bool = False  # every subscription of this connection acknowledged
    protocol: Optional[str] = None
    shared_subscription: bool = False
    filters: Tuple[str, ...] = ()
    generation: int = 0
    connect_attempts: int = 0
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    subscribe_failures: int = 0
    received: int = 0
    received_while_closed: int = 0
    outstanding: int = 0  # handed to the writer and not yet acknowledged
    paused_reads: int = 0  # loop turns without reading because the intake window was full
    acked: int = 0
    stale_acks: int = 0
    last_error: str = ""
    last_backoff_s: float = 0.0
    iterations: int = 0


def _reason(value: Any) -> int:
    return int(value.value) if isinstance(value, ReasonCode) else int(value)


class IngestClient:
    """See the module docstring. ``deliver`` is called on this thread for every message; keep it short."""

    def __init__(self, config: IngestConfig, deliver: Callable[[Delivery], None]) -> None:
        self.config = config
        self._deliver = deliver
        self._backoff = Backoff(config.broker.backoff)
        self._protocol = mqtt.MQTTv311 if config.broker.protocol == "3.1.1" else mqtt.MQTTv5
        self._acks: Deque[AckToken] = collections.deque()
        self._stop = threading.Event()
        self._intake_open = threading.Event()
        self._intake_open.set()
        self._ready = threading.Event()
        self._client: Optional[mqtt.Client] = None
        self._connack: Optional[Tuple[int, str]] = None
        self._suback_pending: Dict[int, List[str]] = {}
        self._snapshot = ClientSnapshot()
        self._state: Dict[str, Any] = dataclasses.asdict(self._snapshot)  # owned by this thread
        self._fallback = False
        self._outstanding = 0  # handed to the writer, not yet acknowledged (this thread)
        self._ack_ready = threading.Event()

    # ------------------------------------------------------------------ other threads

    def snapshot(self) -> ClientSnapshot:
        """The latest published state (an immutable object; replaced, never changed)."""
        return self._snapshot

    def ack(self, tokens: Sequence[AckToken]) -> None:
        """Acknowledge stored messages (thread-safe: queued for the network thread)."""
        for token in tokens:
            if token.qos > 0:
                self._acks.append(token)
        self._ack_ready.set()

    def close_intake(self) -> None:
        """Stop handing over new messages (draining): they stay unacknowledged and are re-delivered later."""
        self._intake_open.clear()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Block until connected and every subscription is acknowledged."""
        return self._ready.wait(timeout)

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ counters (this thread)

    def _count(self, name: str, amount: int = 1) -> None:
        self._state[name] += amount

    def _publish(self, **values: Any) -> None:
        self._state.update(values)
        self._snapshot = ClientSnapshot(**self._state)

    # ------------------------------------------------------------------ paho

    def _make_client(self) -> mqtt.Client:
        cfg = self.config.broker
        v5 = self._protocol == mqtt.MQTTv5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=self._protocol,
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.connect_timeout = cfg.connect_timeout_s
        client.max_queued_messages_set(0)
        if cfg.tls is not None:
            client.tls_set_context(tls_context(cfg.tls))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack = (_reason(reason), str(reason))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._state["connected"]:
            self._ready.clear()
            self._count("disconnects")
            self._publish(connected=False, subscribed=False, last_error=f"disconnected: {reason}")
            log.warning("mqtt_disconnected", reason=str(reason))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        filters = self._suback_pending.pop(mid, [])
        for topic_filter, code in zip(filters, reasons):
            if _reason(code) >= 0x80:
                self._count("subscribe_failures")
                self._publish(last_error=f"subscription {topic_filter} refused: {code}")
                log.error("mqtt_subscribe_refused", filter=topic_filter, reason=str(code))
        if not self._suback_pending:
            self._ready.set()
            self._publish(subscribed=True)
            log.info("mqtt_subscribed", filters=len(self._state["filters"]))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._intake_open.is_set():
            self._count("received_while_closed")  # not acknowledged: the broker delivers it again later
            return
        self._count("received")
        if message.qos > 0:
            self._outstanding += 1
        self._deliver(
            Delivery(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                mid=message.mid,
                generation=self._state["generation"],
                received_at=time.time(),
            )
        )

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Thread target (``mqtt-ingest``). Returns after :meth:`request_stop`; other exceptions escape to the
        supervisor, which reports the thread's death."""
        broker = self.config.broker
        log.info("mqtt_ingest_started", host=broker.host, port=broker.port, client_id=broker.client_id)
        while not self._stop.is_set():
            connected = self._connect_once()
            if connected:
                self._backoff.reset()
                self._serve()
                if self._stop.is_set():
                    break
            if self._fallback:
                self._fallback = False
                continue
            delay = self._backoff.next_delay()
            self._publish(last_backoff_s=delay)
            log.info("mqtt_backoff", delay_s=round(delay, 3), failures=self._backoff.failures)
            self._wait(delay)
        self._shutdown()

    def _wait(self, delay: float) -> None:
        """Back off in one-second turns: the thread shows it is alive (the watchdog), and stops at once."""
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.wait(min(1.0, left)):
                return
            self._count("iterations")
            self._publish()

    def _connect_once(self) -> bool:
        cfg = self.config.broker
        if self._client is None:
            self._client = self._make_client()
        client = self._client
        v5 = self._protocol == mqtt.MQTTv5
        self._connack = None
        self._count("connect_attempts")
        try:
            properties = connect_properties(cfg.session_expiry_s, cfg.receive_maximum) if v5 else None
            begin_connect(client, cfg, v5, properties)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._count("connect_failures")
            self._publish(last_error=f"connect: {type(exc).__name__}: {exc}")
            log.warning("mqtt_connect_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        wait_connack(client, self._connack_now, cfg.connect_timeout_s, self._stop)
        connack = self._connack_now()
        if connack is None or connack[0] != 0:
            self._count("connect_failures")
            drop_socket(client)
            text = "no CONNACK" if connack is None else connack[1]
            self._publish(last_error=f"connect: {text}")
            if connack is not None and connack[0] == _UNSUPPORTED_PROTOCOL and v5 and cfg.protocol == "auto":
                log.warning("mqtt_v5_refused_falling_back_to_311", reason=text)
                self._protocol = mqtt.MQTTv311
                self._client = None
                self._fallback = True
            else:
                log.error("mqtt_connect_refused", reason=text)
            return False
        shared = v5 and self.config.share_group is not None
        filters = subscription_filters(
            self.config.topic_prefix, self.config.sites, self.config.share_group if shared else None
        )
        self._count("connects")
        self._count("generation")
        self._publish(
            connected=True, protocol="5" if v5 else "3.1.1", shared_subscription=shared, filters=tuple(filters)
        )
        if not v5:
            log.warning(
                "mqtt_311_single_worker",
                detail="MQTT 3.1.1 has no shared subscriptions: this worker receives every message; run one worker",
            )
        log.info("mqtt_connected", protocol="5" if v5 else "3.1.1", shared=shared, generation=self._state["generation"])
        return True

    def _connack_now(self) -> Optional[Tuple[int, str]]:
        return self._connack

    def _subscribe(self, client: mqtt.Client) -> None:
        self._ready.clear()
        self._suback_pending.clear()
        filters = list(self._state["filters"])
        if self._protocol == mqtt.MQTTv5:
            rc, mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in filters])
        else:
            rc, mid = client.subscribe([(f, 1) for f in filters])
        if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
            self._suback_pending[mid] = filters

    def _serve(self) -> None:
        client = self._client
        assert client is not None
        self._subscribe(client)
        interval = self.config.loop_interval_s
        window = self.config.intake_window or self.config.broker.receive_maximum
        read_at_least_every = self.config.broker.keepalive_s / 2
        published = last_read = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if self._outstanding >= window and now - last_read < read_at_least_every:
                # intake window full: acknowledge, keep the connection alive, but let TCP hold the broker back
                self._ack_ready.wait(interval)
                self._ack_ready.clear()
                self._count("paused_reads")
                rc = client.loop_write() if client.want_write() else mqtt.MQTT_ERR_SUCCESS
                if rc == mqtt.MQTT_ERR_SUCCESS:
                    rc = client.loop_misc()
            else:
                last_read = now
                rc = client.loop(timeout=interval)
                # paho's loop() reads one packet per call: keep reading while messages keep coming (bounded,
                # so the acks below go out at least every few hundred messages)
                for _ in range(256):
                    if rc != mqtt.MQTT_ERR_SUCCESS or self._outstanding >= window:
                        break
                    before = self._state["received"] + self._state["received_while_closed"]
                    rc = client.loop_read()
                    if self._state["received"] + self._state["received_while_closed"] == before:
                        break
            self._count("iterations")
            if self._flush_acks(client) and rc == mqtt.MQTT_ERR_SUCCESS:
                rc = client.loop_write()
            if rc != mqtt.MQTT_ERR_SUCCESS or not self._state["connected"]:
                if self._state["connected"]:
                    self._count("disconnects")
                    self._publish(
                        connected=False, subscribed=False, last_error=f"connection lost: {mqtt.error_string(rc)}"
                    )
                    log.warning("mqtt_connection_lost", rc=mqtt.error_string(rc))
                self._ready.clear()
                drop_socket(client)
                self._client = None  # a fresh client: paho's per-connection state (mids, inflight) starts clean
                return
            now = time.monotonic()
            if now - published >= 0.05:
                published = now
                self._publish(outstanding=self._outstanding)

    def _flush_acks(self, client: mqtt.Client) -> int:
        generation = self._state["generation"]
        sent = stale = 0
        while self._acks:
            ack_generation, mid, qos = self._acks.popleft()
            self._outstanding -= 1
            if ack_generation != generation or not self._state["connected"]:
                stale += 1
                continue
            client.ack(mid, qos)
            sent += 1
        if sent:
            self._count("acked", sent)
        if stale:
            self._count("stale_acks", stale)
        return sent

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._state["connected"]:
            try:
                self._flush_acks(client)
                deadline = time.monotonic() + 2.0
                while client.want_write() and time.monotonic() < deadline:
                    client.loop_write()
                # a normal DISCONNECT keeps the session (expiry set at connect): unacknowledged messages wait
                client.disconnect()
                client.loop(timeout=0.05)
            except Exception:
                log.exception("mqtt_shutdown_failed")
        self._ready.clear()
        self._publish(connected=False, subscribed=False)
        log.info("mqtt_ingest_stopped", acked=self._state["acked"], received=self._state["received"])
