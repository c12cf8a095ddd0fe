"""Size limits for inbound payloads, in one object (checked before any decoding)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProtocolLimits(BaseModel):
    """Upper bounds on inbound payloads; anything larger is rejected as ``oversize`` before decoding."""

    model_config = ConfigDict(extra="forbid")

    max_command_bytes: int = Field(default=16 * 1024, ge=64, description="Largest accepted command payload, in bytes.")
    max_push_bytes: int = Field(
        default=64 * 1024, ge=256, description="Largest accepted model push notification, in bytes."
    )
    max_frame_header_bytes: int = Field(
        default=64 * 1024, ge=256, description="Largest accepted JSON header of a framed payload, in bytes."
    )
    max_chunk_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest accepted framed model chunk (header and body), in bytes.",
    )
    max_report_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="Largest accepted JSON message from a device (status, camera status, alert, OTA report; for "
        "ingest), in bytes.",
    )
    max_sample_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest accepted framed sample (for ingest), in bytes."
    )
