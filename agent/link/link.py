"""The MQTT link: one network thread that owns the paho client, the spool publisher and the inbound router.

Why our own loop and not ``loop_forever``: every connection attempt, refusal and backoff is counted and
logged, a CONNACK with a failure reason is treated as a failure (not a connection), and all paho calls
stay on one thread.

Per connection::

    connect (MQTT 5, clean_start=False, session expiry) ──refused 0x84──► 3.1.1 (auto mode)
       │ CONNACK ok                      └─refused (other) / socket error──► backoff ──► connect
       ▼
    subscribe all filters again (never trusting the broker's session) → retained "online" status →
    retained topics → pump: spool.take(window) → publish QoS 1 → PUBACK ok: spool.ack
                                                               PUBACK >= 0x80: spool.reject → quarantine

Threads: ``mqtt-link`` (this loop). Callbacks given to the link run on it; keep them short. With an
asyncio loop (``start(loop)``) commands and pushes go to ``link.commands`` / ``link.pushes`` queues
instead. Replies go through the spool, so they survive disconnects.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.link.backoff import Backoff
from agent.link.config import MqttConfig
from agent.link.metrics import LinkMetrics
from agent.link.session import begin_connect, connect_properties, drop_socket, tls_context, wait_connack
from agent.protocol.errors import ProtocolError
from agent.protocol.models import Command, CommandReply, DeviceStatus, ModelPush, PingCommand
from agent.protocol.parse import encode_json, parse_command, parse_model_push
from agent.protocol.topics import Topics
from agent.spool.errors import SpoolError
from agent.spool.store import Spool
from agent.threads import SIDE_TASK, Supervisor, Worker

log = structlog.get_logger("agent.link")

CommandHandler = Callable[[Command], Optional[CommandReply]]
PushHandler = Callable[[str, ModelPush], None]
RawHandler = Callable[[str, bytes], None]

_UNSUPPORTED_PROTOCOL = 0x84


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _reason_value(reason: Any) -> int:
    if isinstance(reason, ReasonCode):
        return int(reason.value)
    return int(reason)


class MqttLink:
    """Keeps the device connected, drains the spool, routes inbound messages.

    Args:
        config: connection settings.
        spool: outbound queue; the link publishes what is in it and acks on PUBACK.
        status: builds the device status; published retained ``online`` on every connect and as the
            ``offline`` last will (its ``state`` is overridden).
        on_command: called on the link thread with each valid command; may return a reply (sent for it).
            Without it (and without an asyncio loop) commands are answered ``unsupported``.
        on_push: called with (topic, ModelPush) for fleet/group pushes.
        supervisor: the daemon's (:mod:`agent.threads`); the ``mqtt-link`` worker is restarted if it dies.
    """

    def __init__(
        self,
        config: MqttConfig,
        spool: Spool,
        status: Callable[[], DeviceStatus],
        on_command: Optional[CommandHandler] = None,
        on_push: Optional[PushHandler] = None,
        supervisor: Optional[Supervisor] = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.topics = Topics(config.topic_prefix, config.site, config.device)
        self._status = status
        self._on_command = on_command
        self._on_push = on_push
        self._metrics = LinkMetrics()
        self._metrics_lock = threading.Lock()
        self._backoff = Backoff(config.backoff)
        self._stop = threading.Event()
        self._connected = threading.Event()
        # set once connected AND every subscription of this connection is acknowledged
        self._ready = threading.Event()
        self._suback_pending: Set[int] = set()
        self._supervisor = supervisor
        self._worker: Optional[Worker] = None
        # the last death of the thread (a bug outside every guard); the supervisor restarts it
        self.failure: Optional[BaseException] = None
        self._client: Optional[mqtt.Client] = None
        self._protocol = mqtt.MQTTv5 if config.protocol in ("auto", "5") else mqtt.MQTTv311
        self._connack: Optional[Tuple[int, str]] = None
        self._mid_to_id: Dict[int, str] = {}
        self._acks: List[str] = []
        self._rejects: List[Tuple[str, str]] = []
        self._boundary = 0
        self._window = config.window
        self._subscriptions: Dict[str, Optional[RawHandler]] = dict.fromkeys(self.topics.subscriptions(config.groups))
        self._retained: Dict[str, bytes] = {}
        self._retained_dirty: Deque[str] = collections.deque()
        self._pending_subs: Deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._aloop: Optional[asyncio.AbstractEventLoop] = None
        self.commands: Optional[asyncio.Queue[Command]] = None
        self.pushes: Optional[asyncio.Queue[Tuple[str, ModelPush]]] = None

    # ------------------------------------------------------------------ public surface

    def start(self, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        """Start the ``mqtt-link`` thread. With ``loop`` (call from that loop's thread), commands and
        pushes without a callback are delivered to ``self.commands`` / ``self.pushes``."""
        if self._worker is not None:
            raise RuntimeError("link already started")
        if loop is not None:
            self._aloop = loop
            self.commands = asyncio.Queue()
            self.pushes = asyncio.Queue()
        self._worker = Worker("mqtt-link", self._run, SIDE_TASK, self._supervisor).start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the retained ``offline`` status, disconnect and join the thread (bounded by timeout)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.cancel_restarts()
            self._worker.join(timeout)
            self._worker = None

    @property
    def connected(self) -> bool:
        """Whether a CONNACK with success arrived and the connection is still up."""
        return self._connected.is_set()

    def wait_connected_blocking(self, timeout: Optional[float] = None) -> bool:
        """Block until connected and subscribed (or timeout); True when ready."""
        return self._ready.wait(timeout)

    async def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Await "connected and subscribed" without blocking the event loop; True when ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def metrics(self) -> LinkMetrics:
        """A copy of the counters."""
        with self._metrics_lock:
            return dataclasses.replace(self._metrics)

    def reply(self, reply: CommandReply) -> None:
        """Queue a command reply (through the spool, so it survives a disconnect). Thread-safe."""
        try:
            self.spool.put("reply", self.topics.cmd_reply, encode_json(reply))
        except SpoolError as exc:
            self._count("spool_errors")
            log.error("reply_not_queued", request_id=reply.request_id, error=str(exc))

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained on ``topic`` now (if connected) and again after every connect,
        so retained state is restored even when the broker restarted without persistence. Latest wins."""
        with self._lock:
            self._retained[topic] = payload
            self._retained_dirty.append(topic)

    def add_subscription(self, topic_filter: str, handler: RawHandler) -> None:
        """Subscribe to ``topic_filter`` (now and after every reconnect); ``handler(topic, payload)`` runs
        on the link thread for each message (e.g. model chunks)."""
        with self._lock:
            self._subscriptions[topic_filter] = handler
            self._pending_subs.append(topic_filter)

    def remove_subscription(self, topic_filter: str) -> None:
        """Stop re-subscribing to ``topic_filter`` (and unsubscribe now if connected)."""
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
            client = self._client
        if client is not None and self.connected:
            client.unsubscribe(topic_filter)

    # ------------------------------------------------------------------ counters and logging

    def _count(self, name: str, amount: int = 1) -> None:
        with self._metrics_lock:
            setattr(self._metrics, name, getattr(self._metrics, name) + amount)

    def _set(self, **values: Any) -> None:
        with self._metrics_lock:
            for name, value in values.items():
                setattr(self._metrics, name, value)

    # ------------------------------------------------------------------ client construction

    def _status_payload(self, state: str) -> bytes:
        status = self._status().model_copy(update={"state": state, "ts": _now()})
        return encode_json(status)

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        v5 = self._protocol == mqtt.MQTTv5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.device,
            protocol=self._protocol,
            # 3.1.1: persistent session; v5 takes clean_start at connect instead.
            clean_session=None if v5 else False,
            reconnect_on_failure=False,
        )
        client.connect_timeout = cfg.connect_timeout_s
        client.max_inflight_messages_set(cfg.window)
        client.max_queued_messages_set(0)
        if cfg.tls is not None:
            client.tls_set_context(tls_context(cfg.tls))
        client.will_set(self.topics.status, self._status_payload("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # ------------------------------------------------------------------ paho callbacks (link thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connack = (_reason_value(reason), str(reason))
        if props is not None and hasattr(props, "ReceiveMaximum"):
            self._window = max(1, min(self.config.window, int(props.ReceiveMaximum)))
        else:
            self._window = self.config.window

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected.is_set():
            self._connected.clear()
            self._ready.clear()
            self._count("disconnects")
            self._set(connected=False)
            log.warning("mqtt_disconnected", reason=str(reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        message_id = self._mid_to_id.pop(mid, None)
        if message_id is None:
            return  # a retained status or other direct publish
        code = _reason_value(reason)
        if code >= 0x80:
            self._rejects.append((message_id, f"0x{code:02x} {reason}"))
        else:
            self._acks.append(message_id)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._suback_pending.discard(mid)
        if not self._suback_pending and self._connected.is_set():
            self._ready.set()
        for reason in reasons:
            if _reason_value(reason) >= 0x80:
                self._count("subscribe_failures")
                log.error("mqtt_subscribe_refused", reason=str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        payload = bytes(message.payload)
        try:
            if topic == self.topics.cmd:
                self._handle_command(topic, payload)
                return
            with self._lock:
                routes = list(self._subscriptions.items())
            for topic_filter, handler in routes:
                if handler is not None and mqtt.topic_matches_sub(topic_filter, topic):
                    handler(topic, payload)
                    return
            if topic == self.topics.fleet_models or mqtt.topic_matches_sub(
                f"{self.topics.site_base}/groups/+/models", topic
            ):
                self._handle_push(topic, payload)
                return
            log.warning("mqtt_unrouted_message", topic=topic, size=len(payload))
        except Exception:  # a handler bug must not kill the network thread
            self._count("command_handler_errors")
            log.exception("mqtt_message_handler_failed", topic=topic)

    # ------------------------------------------------------------------ inbound

    def _handle_command(self, topic: str, payload: bytes) -> None:
        self._count("commands")
        try:
            command = parse_command(topic, payload, self.config.limits)
        except ProtocolError as exc:
            self._count("commands_malformed")
            log.warning(
                "mqtt_command_malformed",
                topic=topic,
                reason=exc.reason.value,
                detail=exc.detail,
                size=len(payload),
            )
            self.reply(CommandReply.failure(exc.request_id, self.config.device, _now(), exc.reason.value, exc.detail))
            return
        log.info("mqtt_command", type=command.type, request_id=command.request_id)
        if isinstance(command, PingCommand):
            self.reply(CommandReply.ok(command.request_id, self.config.device, _now(), {"pong": True}))
            return
        if self._on_command is not None:
            try:
                answer = self._on_command(command)
            except Exception as exc:
                self._count("command_handler_errors")
                log.exception("mqtt_command_handler_failed", request_id=command.request_id)
                answer = CommandReply.failure(
                    command.request_id, self.config.device, _now(), "internal", f"{type(exc).__name__}: {exc}"
                )
            if answer is not None:
                self.reply(answer)
        elif self._aloop is not None and self.commands is not None:
            self._aloop.call_soon_threadsafe(self.commands.put_nowait, command)
        else:
            self.reply(
                CommandReply.failure(
                    command.request_id, self.config.device, _now(), "unsupported", "no command handler"
                )
            )

    def _handle_push(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained push
        self._count("pushes")
        try:
            push = parse_model_push(topic, payload, self.config.limits)
        except ProtocolError as exc:
            self._count("pushes_malformed")
            log.warning("mqtt_push_malformed", topic=topic, reason=exc.reason.value, detail=exc.detail)
            return
        log.info("mqtt_model_push", topic=topic, release=push.release.name, counter=push.release.counter)
        if self._on_push is not None:
            self._on_push(topic, push)
        elif self._aloop is not None and self.pushes is not None:
            self._aloop.call_soon_threadsafe(self.pushes.put_nowait, (topic, push))

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            self._run_guarded()
        except BaseException as exc:  # a bug outside every guard of the loop: the worker reports and restarts
            self.failure = exc
            try:
                self._abandon_connection()  # a restart starts from a fresh client
            except Exception:
                log.exception("mqtt_link_abandon_failed")
            raise

    @property
    def alive(self) -> bool:
        """Whether the ``mqtt-link`` thread runs (False before start, after stop, and after it died for good;
        True while it waits to be restarted)."""
        return self._worker is not None and self._worker.alive

    def _run_guarded(self) -> None:
        log.info("mqtt_link_started", host=self.config.host, port=self.config.port, device=self.config.device)
        while not self._stop.is_set():
            try:
                connected = self._connect_once()
            except Exception:
                self._count("connect_errors")
                log.exception("mqtt_connect_crashed")
                connected = False
            if connected:
                self._backoff.reset()
                try:
                    self._serve()
                except Exception:
                    # e.g. building the status payload, or paho's publish: drop this connection and reconnect
                    # with backoff (a fresh client; the spool hands its in-flight messages out again)
                    self._count("serve_errors")
                    log.exception("mqtt_serve_failed")
                    self._abandon_connection()
                if self._stop.is_set():
                    break
            if self._fallback_pending:
                continue
            delay = self._backoff.next_delay()
            self._set(last_backoff_s=delay)
            log.info("mqtt_backoff", delay_s=round(delay, 3), failures=self._backoff.failures)
            self._stop.wait(delay)
        self._shutdown()

    _fallback_pending = False

    def _mark_disconnected(self) -> bool:
        """The connection is gone: clear the flags and count it once. True when it had been up."""
        was_up = self._connected.is_set()
        if was_up:
            self._connected.clear()
            self._count("disconnects")
        self._ready.clear()
        self._set(connected=False)
        return was_up

    def _abandon_connection(self) -> None:
        self._mark_disconnected()
        client, self._client = self._client, None
        if client is not None:
            try:
                drop_socket(client)
            except Exception:
                log.exception("mqtt_drop_socket_failed")

    def _discard_client(self, client: mqtt.Client) -> None:
        """A connection attempt failed: the next one builds a new client, so that it reads the TLS files again
        (a rotated device certificate or CA is picked up without a restart; found by the rotation test in
        tests/deploy/test_device_identity.py: the old client kept offering the revoked certificate)."""
        try:
            drop_socket(client)
        finally:
            self._client = None

    def _connect_once(self) -> bool:
        self._fallback_pending = False
        cfg = self.config
        if self._client is None:
            self._client = self._make_client()
            self._mid_to_id.clear()
            self.spool.release()  # a new client has no in-flight messages: hand them out again
        client = self._client
        self._connack = None
        self._count("connect_attempts")
        v5 = self._protocol == mqtt.MQTTv5
        try:
            # clean_start=False (v5) / clean_session=False (3.1.1): the broker keeps our session and queued
            # QoS 1 commands while we are away; we still re-subscribe after every connect.
            begin_connect(client, cfg, v5, connect_properties(cfg.session_expiry_s) if v5 else None)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self._count("connect_errors")
            log.warning("mqtt_connect_failed", error=f"{type(exc).__name__}: {exc}")
            self._discard_client(client)
            return False
        connack = wait_connack(client, self._current_connack, cfg.connect_timeout_s, self._stop)
        if connack is None:
            self._count("connect_errors")
            log.warning("mqtt_no_connack", timeout_s=cfg.connect_timeout_s)
            self._discard_client(client)
            return False
        code, text = connack
        self._set(last_connack=text)
        if code != 0:
            self._count("refused")
            self._discard_client(client)
            if code == _UNSUPPORTED_PROTOCOL and v5 and cfg.protocol == "auto":
                log.warning("mqtt_v5_refused_falling_back", reason=text)
                self._count("protocol_fallbacks")
                self._protocol = mqtt.MQTTv311
                self._client = None
                self._fallback_pending = True
            else:
                log.error("mqtt_connect_refused", reason=text, code=code)
            return False
        self._connected.set()
        self._count("connects")
        self._set(connected=True, protocol="5" if v5 else "3.1.1", window=self._window)
        log.info("mqtt_connected", protocol="5" if v5 else "3.1.1", window=self._window)
        return True

    def _current_connack(self) -> Optional[Tuple[int, str]]:
        # set by _on_connect during client.loop(); a method so the type checker does not assume it constant
        return self._connack

    def _on_connected(self, client: mqtt.Client) -> None:
        with self._lock:
            filters = list(self._subscriptions)
            self._pending_subs.clear()
            self._retained_dirty.clear()
            self._retained_dirty.extend(self._retained)
        self._suback_pending.clear()
        for topic_filter in filters:
            rc, mid = client.subscribe(topic_filter, qos=1)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._suback_pending.add(mid)
        if not self._suback_pending:
            self._ready.set()
        client.publish(self.topics.status, self._status_payload("online"), qos=1, retain=True)
        self._boundary = self.spool.boundary()

    def _serve(self) -> None:
        client = self._client
        assert client is not None
        self._on_connected(client)
        while not self._stop.is_set():
            rc = client.loop(timeout=self.config.loop_interval_s)
            if rc != mqtt.MQTT_ERR_SUCCESS or not self._connected.is_set():
                if self._mark_disconnected():
                    log.warning("mqtt_connection_lost", rc=str(rc))
                self._settle()
                return
            self._settle()
            self._pump(client)

    def _pump(self, client: mqtt.Client) -> None:
        with self._lock:
            subs = list(self._pending_subs)
            self._pending_subs.clear()
            dirty = list(dict.fromkeys(self._retained_dirty))
            self._retained_dirty.clear()
            retained = {topic: self._retained[topic] for topic in dirty if topic in self._retained}
        for topic_filter in subs:
            client.subscribe(topic_filter, qos=1)
        for topic, payload in retained.items():
            client.publish(topic, payload, qos=1, retain=True)
            self._count("retained_published")
        try:
            items = self.spool.take(self._window, self._boundary)
        except SpoolError as exc:
            self._count("spool_errors")
            log.error("spool_take_failed", error=str(exc))
            return
        v5 = self._protocol == mqtt.MQTTv5
        for item in items:
            properties = None
            if v5:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = [("id", item.message_id), *sorted(item.properties.items())]
            info = client.publish(item.topic, item.payload, qos=1, retain=item.retain, properties=properties)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # not queued by paho at all (e.g. payload too large): hand it back, count as a refusal
                self._rejects.append((item.message_id, f"publish rc {info.rc}"))
                continue
            self._mid_to_id[info.mid] = item.message_id
            self._count("published")

    def _settle(self) -> None:
        """Commit PUBACKs to the spool in one transaction, and process refusals."""
        if self._acks:
            acks, self._acks = self._acks, []
            try:
                self.spool.ack(acks)
                self._count("acked", len(acks))
            except SpoolError as exc:
                # the items stay queued and will be sent again: at-least-once, never lost
                self._count("spool_errors")
                self.spool.release(acks)
                log.error("spool_ack_failed", error=str(exc))
        while self._rejects:
            message_id, reason = self._rejects.pop()
            self._count("rejected")
            try:
                if self.spool.reject(message_id, reason, self.config.max_rejects):
                    self._count("quarantined")
                    log.error("mqtt_message_quarantined", message_id=message_id, reason=reason)
                else:
                    log.warning("mqtt_message_rejected", message_id=message_id, reason=reason)
            except SpoolError as exc:
                self._count("spool_errors")
                log.error("spool_reject_failed", error=str(exc))

    def _shutdown(self) -> None:
        client = self._client
        if client is not None and self._connected.is_set():
            try:
                info = client.publish(self.topics.status, self._status_payload("offline"), qos=1, retain=True)
                deadline = time.monotonic() + 2.0
                while not info.is_published() and time.monotonic() < deadline:
                    client.loop(timeout=0.05)
                self._settle()
                client.disconnect()
                client.loop(timeout=0.05)
            except Exception:
                log.exception("mqtt_shutdown_failed")
        self._connected.clear()
        self._ready.clear()
        self._set(connected=False)
        log.info("mqtt_link_stopped")
