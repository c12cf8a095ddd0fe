"""``trainer.yaml``: the cloud services' whole configuration, one pydantic model (unknown keys rejected).

Loaded like the agent's (``agent.config.load_settings``): YAML, then environment overrides
``EDGE_TRAINER__SECTION__KEY=value``, and ``!credential NAME`` tags read from ``$CREDENTIALS_DIRECTORY``
(systemd ``LoadCredential=``). Sections are the packages' own models, each documented next to its code.

::

    ingest:    trainer.ingest.config.IngestConfig      broker, sites, shared subscription, batching, limits
    store:     trainer.store.config.StoreConfig        blobs (local | s3), index, disk budget
    labelling: trainer.labelling.config.LabellingConfig  Label Studio, classes, image URLs
    rounds:    trainer.rounds.config.RoundsConfig      learning rounds: data, training, gate, release
    rollout:   trainer.rollout.config.RolloutConfig    staged rollout: stages, quality bounds, broker
    console:   trainer.fleet_pages.config.CloudConsoleConfig  the fleet pages: bind address, password
    http:      status / metrics endpoint
    logging:   level and format
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal, Mapping, Optional, Union

from pydantic import Field

from agent.config import ConfigError, load_settings
from agent.strict import StrictModel
from trainer.fleet_pages import CloudConsoleConfig
from trainer.ingest import IngestConfig
from trainer.labelling import LabellingConfig
from trainer.rollout import RolloutConfig
from trainer.rounds import RoundsConfig
from trainer.store import StoreConfig

ENV_PREFIX = "EDGE_TRAINER__"
DEFAULT_CONFIG_PATH = Path("/etc/edge-trainer/trainer.yaml")


class HttpConfig(StrictModel):
    """``GET /metrics`` (Prometheus), ``/status`` (JSON) and ``/healthz`` of the running service."""

    enabled: bool = Field(default=True, description="Serve the endpoint.")
    host: str = Field(default="127.0.0.1", description="Address to bind; 0.0.0.0 exposes it on every interface.")
    port: int = Field(default=9110, ge=0, le=65535, description="TCP port (0: any free port, for tests).")


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Lowest level logged.")
    format: Literal["json", "console"] = Field(default="json", description="json (journald) or console.")


class TrainerConfig(StrictModel):
    """The whole of ``trainer.yaml``."""

    state_dir: Path = Field(
        default=Path("/var/lib/edge-trainer"),
        description="Where the running service writes its status file (ingest-<worker>.status.json).",
    )
    ingest: Optional[IngestConfig] = Field(default=None, description="MQTT ingest (`edge-trainer serve`).")
    store: StoreConfig = Field(default_factory=StoreConfig, description="The sample store.")
    labelling: LabellingConfig = Field(default_factory=LabellingConfig, description="Labelling round trip.")
    rounds: Optional[RoundsConfig] = Field(default=None, description="Learning rounds (`edge-trainer round`).")
    rollout: Optional[RolloutConfig] = Field(default=None, description="Staged rollout (`edge-trainer rollout`).")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Status and metrics endpoint.")
    console: Optional[CloudConsoleConfig] = Field(
        default=None, description="The fleet pages (`edge-trainer console`); defaults when absent."
    )
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Structured logs on stderr.")


def load_trainer_config(path: Union[str, Path], environ: Optional[Mapping[str, str]] = None) -> TrainerConfig:
    """Read ``trainer.yaml``. Raises agent.config.ConfigError with every problem's key path."""
    return load_settings(path, TrainerConfig, environ, ENV_PREFIX)


def add_config_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """The one ``--config`` option of every cloud command: $EDGE_TRAINER_CONFIG, else the default path."""
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path(os.environ.get("EDGE_TRAINER_CONFIG", str(DEFAULT_CONFIG_PATH))),
        help=f"trainer.yaml (default: $EDGE_TRAINER_CONFIG or {DEFAULT_CONFIG_PATH})",
    )


__all__ = ["ConfigError", "HttpConfig", "LoggingConfig", "TrainerConfig", "add_config_argument", "load_trainer_config"]
