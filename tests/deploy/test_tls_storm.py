"""bench/tls_storm.py kept working: a small storm over two client processes on the shipped broker config."""

from __future__ import annotations

import pytest

from bench import tls_storm

pytestmark = pytest.mark.broker


def test_a_small_storm_over_two_processes_connects_every_box_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls_storm, "PER_PROCESS", 12)
    figures = tls_storm.storm(20)
    assert figures["client_processes"] == 2
    for phase in ("cold", "after_restart"):
        assert figures[phase]["connected"] == 20 and figures[phase]["refused"] == 0, figures
        assert figures[phase]["all_in_s"] is not None
    assert "20" in tls_storm.render({"machine": "test", "rows": [figures]})
