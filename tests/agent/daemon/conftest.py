"""Fixtures of the daemon tests. A real mosquitto (tests.agent.broker), real ONNX Runtime, real SQLite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.agent.broker_fixtures import broker, broker_factory  # noqa: F401 - fixtures


@pytest.fixture(scope="session")
def daemon_model(request: pytest.FixtureRequest) -> Path:
    """The INT8 demo model (fast on CPU). ``EDGE_AGENT_TEST_MODEL`` points elsewhere while models/demo is
    being produced."""
    override = os.environ.get("EDGE_AGENT_TEST_MODEL")
    if override:
        return Path(override)
    return Path(request.getfixturevalue("demo_int8_model_path"))
