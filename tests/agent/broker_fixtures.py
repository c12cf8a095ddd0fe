"""pytest fixtures around :class:`tests.agent.broker.MosquittoBroker`.

Use from a conftest with ``pytest_plugins = ["tests.agent.broker_fixtures"]`` or import the fixtures.
Tests that use them get skipped (loudly) when mosquitto is not installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from tests.agent.broker import MOSQUITTO, MosquittoBroker


def _require_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"mosquitto is not installed ({MOSQUITTO}); apt-get install mosquitto")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A running anonymous mosquitto on a free 127.0.0.1 port, without persistence."""
    _require_mosquitto()
    instance = MosquittoBroker(tmp_path / "broker")
    instance.start()
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Make more brokers (custom config, persistence); each is stopped at teardown. Not started."""
    _require_mosquitto()
    made: List[MosquittoBroker] = []

    def make(**kwargs: object) -> MosquittoBroker:
        instance = MosquittoBroker(tmp_path / f"broker{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(instance)
        return instance

    try:
        yield make
    finally:
        for instance in made:
            instance.close()
