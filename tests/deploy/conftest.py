"""Fixtures of the deploy tests: the shipped site broker, run for real."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.agent.broker import MOSQUITTO, wait_port
from tests.deploy.test_broker_acl import SiteBroker


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SiteBroker]:
    """deploy/mosquitto as shipped (paths and ports rewritten), with a site PKI from `edge-trainer devices`."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("needs mosquitto")
    s = SiteBroker(tmp_path)
    s.broker.start()
    # start() waits for the TLS listener only; mosquitto opens the ops listener after it (a CI run lost that race)
    wait_port(s.ops_port)
    try:
        yield s
    finally:
        s.broker.close()
