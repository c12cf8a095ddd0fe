"""Configuration of ``edge-trainer serve``'s ingest: the broker connection, the sites, batching, limits."""

from __future__ import annotations

from typing import List, Literal, Optional

from pydantic import Field, field_validator

from agent.link.config import BrokerConnection
from agent.protocol import ProtocolLimits
from agent.protocol.topics import check_segment
from agent.strict import StrictModel
from trainer.ingest.topics import check_prefix


class BrokerConfig(BrokerConnection):
    """The MQTT broker (or cluster) the fleet publishes to, and this worker's identity on it (address, TLS,
    credentials, timeouts and backoff as the agent's link: ``agent.link.config.BrokerConnection``)."""

    client_id: str = Field(
        default="edge-ingest-1",
        description="MQTT client id of this worker; unique per worker, stable across restarts (the broker keeps "
        "the persistent session, and the messages not yet acknowledged, under it).",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto",
        description="MQTT version; auto tries 5 and falls back to 3.1.1 (then no shared subscription: one worker).",
    )
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=0,
        description="MQTT 5 session expiry: how long the broker keeps this worker's session and queued messages "
        "while it is down (a week: a long weekend's outage loses nothing).",
    )
    receive_maximum: int = Field(
        default=512,
        ge=1,
        le=65535,
        description="MQTT 5 Receive Maximum: unacknowledged messages the broker may have in flight to us. Bounds "
        "memory (about this many payloads) and must cover one batch's commit time at the target rate. For "
        "3.1.1 the broker's own max_inflight_messages applies.",
    )

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        return check_segment("client id", value)


class IngestConfig(StrictModel):
    """What ``edge-trainer serve`` reads and how it batches its writes."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="Broker connection.")
    topic_prefix: str = Field(default="edge", description="First topic level(s), as configured on the devices.")
    sites: List[str] = Field(min_length=1, description="Sites whose devices this service ingests.")
    share_group: Optional[str] = Field(
        default=None,
        description="MQTT 5 shared-subscription group: workers with the same group split the fleet's events "
        "($share/<group>/...). null (default): one worker with a plain persistent subscription. Mind that "
        "mosquitto 2.0 does not restore shared subscriptions after a broker restart: what devices publish "
        "before the workers subscribe again is dropped (docs/CLOUD.md, measured on 2.0.11).",
    )
    worker: Optional[str] = Field(
        default=None, description="Name recorded with every stored sample (default: the broker client id)."
    )
    batch_max_messages: int = Field(
        default=256, ge=1, le=65535, description="Most messages stored per transaction (one fsync round)."
    )
    batch_max_delay_s: float = Field(
        default=0.02,
        ge=0,
        le=5,
        description="How long a batch waits for more messages after its first; bounds the added PUBACK latency.",
    )
    intake_window: Optional[int] = Field(
        default=None,
        ge=1,
        description="Most messages received and not yet stored before the worker stops reading from the broker "
        "(TCP backpressure; bounds memory even where a broker ignores Receive Maximum). Default: "
        "broker.receive_maximum.",
    )
    loop_interval_s: float = Field(
        default=0.01, gt=0, le=1, description="Longest wait of the network loop; bounds acknowledgement latency."
    )
    drain_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="On SIGTERM: how long to finish storing and acknowledging what was received before leaving.",
    )
    retry_initial_s: float = Field(
        default=0.5, gt=0, description="First wait before retrying a batch whose storage failed (then doubling)."
    )
    retry_max_s: float = Field(default=30.0, gt=0, description="Longest wait between storage retries.")
    trim_memory: bool = Field(
        default=True,
        description="Hand freed memory back to the system after each batch (glibc malloc_trim): batches of "
        "~50 kB images otherwise stay in the allocator's arenas and the resident set only grows.",
    )
    limits: ProtocolLimits = Field(default_factory=ProtocolLimits, description="Inbound payload limits.")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("sites")
    @classmethod
    def _sites(cls, value: List[str]) -> List[str]:
        for site in value:
            check_segment("site", site)
        if len(set(value)) != len(value):
            raise ValueError("sites are listed twice")
        return value

    @field_validator("share_group")
    @classmethod
    def _group(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_segment("share group", value)

    @property
    def worker_name(self) -> str:
        return self.worker or self.broker.client_id
