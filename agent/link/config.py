"""Configuration of the MQTT link."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.protocol.config import ProtocolLimits
from agent.protocol.topics import check_segment


class TlsConfig(BaseModel):
    """TLS towards the broker; client certificate optional (username/password may be used instead)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path = Field(description="CA certificate(s) that signed the broker's certificate (PEM).")
    cert_file: Optional[Path] = Field(default=None, description="Device certificate (PEM), for mutual TLS.")
    key_file: Optional[Path] = Field(
        default=None,
        description="Device private key (PEM). A relative path is looked up in $CREDENTIALS_DIRECTORY.",
    )
    check_hostname: bool = Field(default=True, description="Verify the broker's name against its certificate.")

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BackoffConfig(BaseModel):
    """Capped exponential backoff with jitter between connection attempts."""

    model_config = ConfigDict(extra="forbid")

    initial_s: float = Field(default=0.5, gt=0, description="Delay after the first failure, seconds.")
    max_s: float = Field(default=60.0, gt=0, description="Upper bound of the delay, seconds.")
    multiplier: float = Field(default=2.0, ge=1.0, description="Growth factor per consecutive failure.")
    jitter: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Fraction of the delay drawn at random (0: none, 1: full)."
    )


def credential_path(value: Path) -> Path:
    """Resolve a relative secret path against systemd's ``$CREDENTIALS_DIRECTORY`` (LoadCredential=)."""
    if value.is_absolute():
        return value
    base = os.environ.get("CREDENTIALS_DIRECTORY")
    if not base:
        raise ValueError(f"{value} is relative but $CREDENTIALS_DIRECTORY is not set")
    return Path(base) / value


class BrokerConnection(BaseModel):
    """How to reach a broker: address, TLS, credentials, timeouts and reconnect backoff. Shared by the agent's
    link (:class:`MqttConfig`) and the cloud ingest's broker settings."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(default=8883, ge=1, le=65535, description="Broker port (8883: TLS, 1883: plain).")
    tls: Optional[TlsConfig] = Field(default=None, description="TLS settings; plain TCP when absent.")
    username: Optional[str] = Field(default=None, description="Username (when not using client certs).")
    password_file: Optional[Path] = Field(
        default=None,
        description="File holding the password; a relative path is looked up in $CREDENTIALS_DIRECTORY.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive, seconds.")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP/TLS connect and CONNACK timeout.")
    backoff: BackoffConfig = Field(default_factory=BackoffConfig, description="Reconnect backoff.")

    @model_validator(mode="after")
    def _auth(self) -> BrokerConnection:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self

    def read_password(self) -> Optional[str]:
        """The password from ``password_file`` (trailing newline stripped), or None."""
        if self.password_file is None:
            return None
        return credential_path(self.password_file).read_text(encoding="utf-8").rstrip("\r\n")


class MqttConfig(BrokerConnection):
    """Connection to the site broker and the device's identity on it."""

    site: str = Field(description="Site id (topic level).")
    device: str = Field(description="Device id (topic level, MQTT client id, TLS identity).")
    topic_prefix: str = Field(default="edge", description="First topic level(s).")
    groups: List[str] = Field(default_factory=list, description="Device groups whose model pushes apply.")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        default="auto", description="MQTT version; auto tries 5 and falls back to 3.1.1 when refused."
    )
    session_expiry_s: int = Field(
        default=86400, ge=0, description="MQTT 5 session expiry: how long the broker keeps our session."
    )
    window: int = Field(
        default=64,
        ge=1,
        le=65535,
        description="Most spool messages in flight (capped by the broker's limit).",
    )
    max_rejects: int = Field(
        default=3,
        ge=1,
        description="Broker refusals (PUBACK reason >= 0x80) before a message is quarantined.",
    )
    loop_interval_s: float = Field(
        default=0.02,
        gt=0,
        le=1.0,
        description="Longest wait of the network loop; bounds spool pick-up latency.",
    )
    limits: ProtocolLimits = Field(default_factory=ProtocolLimits, description="Inbound payload limits.")

    @field_validator("site", "device")
    @classmethod
    def _level(cls, value: str) -> str:
        return check_segment("id", value)
