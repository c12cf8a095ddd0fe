"""A signed release announced to a site's devices over MQTT, its bytes carried along (``edge-trainer push``, whose
command line is trainer/commands/push.py)::

    edge-trainer push --broker HOST:PORT --site S [--group G] --channel C
                      (--bundle OUT.tar [--chunk-size N] | --url REPO_URL --repo REPO) [--url ...]
                      [--tls-ca CA [--tls-cert CERT --tls-key KEY]] [--username U --password-file F]

- ``--bundle``: an online bundle (``edge-trainer usb-bundle OUT.tar --online``) is published as retained
  chunks on ``{push}/chunks/{counter}/{i}`` (framed ``ModelChunkHeader`` + bytes), then the retained
  ``ModelPush`` naming them. Chunks go first, so a device that sees the push finds every chunk.
- ``--url``: the push names HTTP(S) repositories; the release is read from ``--repo`` (the repository that
  the URL serves). ``bundle_sha256`` / ``bundle_size`` then describe the release manifest (the release's
  identity: devices dedupe on it). ``--url`` and ``--bundle`` together offer both; devices try URLs first.

Retained chunks of the release the push replaces are cleared (empty retained payloads). QoS 1 throughout;
the command returns once the broker acknowledged every message. The push is a notification only: devices
verify everything against their pinned TUF root.
"""

from __future__ import annotations

import hashlib
import json
import math
import ssl
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.core.release import ReleaseManifest, parse_manifest
from agent.protocol import (
    ChunkPlan,
    ModelChunkHeader,
    ModelPush,
    ProtocolError,
    ProtocolLimits,
    ReleaseRef,
    Topics,
    check_segment,
    encode_framed,
    encode_json,
    parse_model_push,
)
from trainer.release.build import channel_path
from trainer.release.repo import Repository

DEFAULT_CHUNK = 256 * 1024


class PushError(Exception):
    """The push could not be built or published."""


@dataclass
class Publication:
    """What :func:`build_push` produced: the push and its chunk payloads (topic, payload)."""

    topic: str
    push: ModelPush
    chunks: List[Tuple[str, bytes]]


def push_topic(prefix: str, site: str, group: Optional[str]) -> str:
    topics = f"{prefix}/{check_segment('site', site)}"
    return f"{topics}/groups/{check_segment('group', group)}/models" if group else f"{topics}/fleet/models"


def bundle_manifest(bundle: Path) -> Tuple[ReleaseManifest, bytes]:
    """Read the release manifest out of a bundle tar (publisher side: our own file)."""
    try:
        with tarfile.open(bundle, "r") as tar:
            info = json.loads(_member(tar, "bundle.json"))
            target = str(info["manifest"])
            directory, _, name = target.rpartition("/")
            prefix = f"targets/{directory}/"
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(prefix) and member.name.endswith("." + name):
                    data = _member(tar, member.name)
                    return parse_manifest(data), data
    except (OSError, tarfile.TarError, KeyError, ValueError) as exc:
        raise PushError(f"{bundle}: not a release bundle ({exc})") from exc
    raise PushError(f"{bundle}: manifest {target} missing")


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    if f is None:
        raise KeyError(name)
    return f.read()


def repo_manifest(repo: Path, channel: str) -> bytes:
    return Repository(repo, None).target_bytes(channel_path(channel))  # type: ignore[arg-type]  # reading needs no keys


def chunk_bundle(
    topic: str, release: ReleaseRef, data: bytes, chunk_size: int = DEFAULT_CHUNK
) -> Tuple[ChunkPlan, List[Tuple[str, bytes]]]:
    """The chunk plan and the framed, retained chunk messages of bundle ``data`` below push ``topic``."""
    digest = hashlib.sha256(data).hexdigest()
    total = math.ceil(len(data) / chunk_size)
    chunks = []
    for index in range(total):
        body = data[index * chunk_size : (index + 1) * chunk_size]
        header = ModelChunkHeader(
            release=release,
            bundle_sha256=digest,
            index=index,
            total=total,
            offset=index * chunk_size,
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
        )
        chunks.append((Topics.chunk_topic(topic, release.counter, index), encode_framed(header, body)))
    return ChunkPlan(topic=f"{topic}/chunks/{release.counter}", total=total, chunk_size=chunk_size), chunks


def build_push(
    topic: str,
    channel: str,
    bundle: Optional[Path] = None,
    urls: Sequence[str] = (),
    repo: Optional[Path] = None,
    chunk_size: int = DEFAULT_CHUNK,
    now: Optional[datetime] = None,
) -> Publication:
    """Build the ModelPush (and chunk payloads for ``bundle``)."""
    if bundle is None and not urls:
        raise PushError("give --bundle or --url")
    chunks: List[Tuple[str, bytes]] = []
    plan: Optional[ChunkPlan] = None
    if bundle is not None:
        manifest, _ = bundle_manifest(bundle)
        data = Path(bundle).read_bytes()
        if not data:
            raise PushError(f"{bundle} is empty")
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        release = ReleaseRef(name=manifest.name, version=str(manifest.version), counter=manifest.counter)
        plan, chunks = chunk_bundle(topic, release, data, chunk_size)
    else:
        if repo is None:
            raise PushError("--url without --bundle needs --repo (the repository the URL serves)")
        raw = repo_manifest(repo, channel)
        manifest = parse_manifest(raw)
        digest, size = hashlib.sha256(raw).hexdigest(), len(raw)
    if manifest.channel != channel:
        raise PushError(f"the release is on channel {manifest.channel!r}, not {channel!r}")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise PushError(f"{url}: only http(s) URLs")
    push = ModelPush(
        release=ReleaseRef(name=manifest.name, version=str(manifest.version), counter=manifest.counter),
        channel=channel,
        bundle_sha256=digest,
        bundle_size=size,
        urls=list(urls),
        chunks=plan,
        published_at=now or datetime.now(timezone.utc),
    )
    return Publication(topic, push, chunks)


class Publisher:
    """A short-lived paho client that publishes retained QoS 1 messages and waits for every PUBACK."""

    def __init__(
        self,
        host: str,
        port: int,
        tls_ca: Optional[Path] = None,
        tls_cert: Optional[Path] = None,
        tls_key: Optional[Path] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"edge-trainer-push-{uuid.uuid4().hex[:12]}",
            protocol=mqtt.MQTTv5,
        )
        if tls_ca is not None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls_ca))
            if tls_cert is not None and tls_key is not None:
                context.load_cert_chain(str(tls_cert), str(tls_key))
            self.client.tls_set_context(context)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(32)
        self._connected = threading.Event()
        self._refused: Optional[str] = None
        self._retained: List[Tuple[str, bytes]] = []
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise PushError(f"cannot reach the broker at {host}:{port}: {exc}") from exc
        self.client.loop_start()
        if not self._connected.wait(timeout_s) or self._refused:
            self.close()
            raise PushError(f"broker {host}:{port} refused the connection: {self._refused or 'no CONNACK'}")

    @classmethod
    def for_broker(cls, broker: Any, timeout_s: float = 30.0) -> Publisher:
        """A publisher connected as ``broker`` (an ``agent.link.config.BrokerConnection``) says."""
        tls = broker.tls
        return cls(
            broker.host,
            broker.port,
            tls_ca=tls.ca_file if tls else None,
            tls_cert=tls.cert_file if tls else None,
            tls_key=tls.key_file if tls else None,
            username=broker.username,
            password=broker.read_password(),
            timeout_s=timeout_s,
        )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = str(reason)
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._retained.append((message.topic, bytes(message.payload)))

    def current(self, topic: str, wait_s: float = 1.0) -> Optional[bytes]:
        """The retained payload on ``topic`` now (None when there is none)."""
        self.client.subscribe(topic, qos=1)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not any(t == topic for t, _ in self._retained):
            time.sleep(0.02)
        self.client.unsubscribe(topic)
        found = [p for t, p in self._retained if t == topic]
        return found[-1] if found and found[-1] else None

    def publish(self, messages: Iterable[Tuple[str, bytes]], retain: bool = True) -> int:
        infos = []
        for topic, payload in messages:
            info = self.client.publish(topic, payload, qos=1, retain=retain)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise PushError(f"publish to {topic} failed: rc {info.rc}")
            infos.append((topic, info))
        for topic, info in infos:
            info.wait_for_publish(self.timeout_s)
            if not info.is_published():
                raise PushError(f"no PUBACK for {topic} within {self.timeout_s} s")
        return len(infos)

    def request(
        self, topic: str, payload: bytes, reply_topic: str, matches: Callable[[bytes], bool], wait_s: float
    ) -> Optional[bytes]:
        """Publish ``payload`` (QoS 1, not retained) once subscribed to ``reply_topic``; the first message there
        that ``matches`` within ``wait_s`` (None when none came: the device is offline or busy)."""
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.subscribe(reply_topic, qos=1)
        if not subscribed.wait(self.timeout_s):
            raise PushError(f"no SUBACK for {reply_topic} within {self.timeout_s} s")
        seen = len(self._retained)
        self.publish([(topic, payload)], retain=False)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for message_topic, body in self._retained[seen:]:
                if message_topic == reply_topic and matches(body):
                    return body
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def clear_superseded(publisher: Publisher, topic: str, keep_counter: int) -> int:
    """Clear the retained chunks of the release currently pushed on ``topic`` unless it is ``keep_counter``."""
    old = publisher.current(topic)
    if old is None:
        return 0
    try:
        previous = parse_model_push(topic, old, ProtocolLimits())
    except ProtocolError:
        return 0
    if previous.chunks is None or previous.release.counter == keep_counter:
        return 0
    clears = [(Topics.chunk_topic(topic, previous.release.counter, i), b"") for i in range(previous.chunks.total)]
    return publisher.publish(clears)


def publish(publisher: Publisher, publication: Publication, clear_old: bool = True) -> int:
    """Chunks first, then the push; returns the number of messages published (clears included)."""
    count = 0
    if clear_old:
        count += clear_superseded(publisher, publication.topic, publication.push.release.counter)
    count += publisher.publish(publication.chunks)
    count += publisher.publish([(publication.topic, encode_json(publication.push))])
    return count
