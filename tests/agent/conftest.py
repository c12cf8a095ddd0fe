"""Fixtures of the agent's tests: the model the daemon, app and box-page tests run (real ONNX Runtime); a real
mosquitto comes from tests.agent.broker_fixtures (a plugin of the root conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def daemon_model(request: pytest.FixtureRequest) -> Path:
    """The INT8 demo model (fast on CPU). ``EDGE_AGENT_TEST_MODEL`` points elsewhere while models/demo is
    being produced."""
    override = os.environ.get("EDGE_AGENT_TEST_MODEL")
    if override:
        return Path(override)
    return Path(request.getfixturevalue("demo_int8_model_path"))
