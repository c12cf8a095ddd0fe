"""Counters of the MQTT link, as a plain snapshot dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class LinkMetrics:
    """Everything the link counts. ``MqttLink.metrics()`` returns a copy."""

    connect_attempts: int = 0
    connects: int = 0
    connect_errors: int = 0
    """TCP/TLS failures and CONNACK timeouts."""
    refused: int = 0
    """CONNACKs with a failure reason code (bad credentials, not authorised, ...)."""
    protocol_fallbacks: int = 0
    disconnects: int = 0
    subscribe_failures: int = 0
    published: int = 0
    acked: int = 0
    rejected: int = 0
    """PUBACKs with a failure reason code."""
    quarantined: int = 0
    retained_published: int = 0
    commands: int = 0
    commands_malformed: int = 0
    command_handler_errors: int = 0
    serve_errors: int = 0
    """Exceptions while serving a connection (the connection is dropped and made again with backoff)."""
    pushes: int = 0
    pushes_malformed: int = 0
    spool_errors: int = 0
    connected: bool = False
    protocol: Optional[str] = None
    last_connack: Optional[str] = None
    last_backoff_s: float = 0.0
    window: int = 0
