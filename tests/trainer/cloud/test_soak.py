"""bench/soak.py in its short mode (about 2 minutes): a real agent with 4 cameras, the real ingest and
mosquitto under broker restarts, network cuts and stalls, SIGKILLs of agent and ingest; nothing the broker
delivered may be missing from the store, no sample may be corrupted (the 30-minute run: docs/BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest

from bench import soak

pytestmark = pytest.mark.broker


def test_a_short_soak_with_faults_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code = soak.main(["--minutes", "1", "--fault-every", "6", "--seed", "3", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    assert report["drained"], report
    assert report["alerts"]["lost"] == 0 and report["samples_"]["lost"] == 0, report
    assert report["corrupted"] == 0 and report["spool_left"] == 0
    assert report["alerts"]["unique"] > 0 and report["samples_"]["unique"] > 0
    kinds = {kind for _, kind in report["events"]}
    assert len(report["events"]) >= 5 and len(kinds) >= 3, report["events"]
    assert code == 0
