"""bench/fleet_sim.py in its short mode: a small simulated fleet against a real mosquitto and a real
`edge-trainer serve` loses nothing, registers every box, and a chunked release reaches every box (the full
run and its figures: docs/BENCHMARKS.md, docs/SCALING.md)."""

from __future__ import annotations

import json

import pytest

from bench import fleet_sim

pytestmark = pytest.mark.broker


def test_a_small_fleet_loses_nothing_and_every_box_gets_the_release(capsys: pytest.CaptureFixture[str]) -> None:
    code = fleet_sim.main(["--sizes", "12", "--seconds", "12", "--fanout", "12", "--bundle-mb", "0.6", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    (row,) = report["ingest"]
    assert code == 0, row
    assert row["connected"] == 12 and row["devices_registered"] == 12
    assert row["lost"] == {"alert": 0, "sample": 0} and row["unacked"] == 0
    assert row["published"]["status"] >= 12  # every box published its status at least once
    (fanout,) = report["fanout"]
    assert fanout["mqtt"]["bad_chunks"] == 0 and fanout["mqtt"]["shares_s"]["p100"] is not None
    assert fanout["url"]["failed"] == 0 and fanout["url"]["shares_s"]["p100"] is not None
