"""MQTT link to the site broker (paho-mqtt 2.x): connection, spool publisher, inbound router."""

from __future__ import annotations

from agent.link.backoff import Backoff
from agent.link.config import BackoffConfig, MqttConfig, TlsConfig, credential_path
from agent.link.link import CommandHandler, MqttLink, PushHandler, RawHandler
from agent.link.metrics import LinkMetrics

__all__ = [
    "Backoff",
    "BackoffConfig",
    "CommandHandler",
    "LinkMetrics",
    "MqttConfig",
    "MqttLink",
    "PushHandler",
    "RawHandler",
    "TlsConfig",
    "credential_path",
]
