"""bench/soak.py in its short mode (about 2 minutes): a real agent with 4 cameras (one an MJPEG IP camera),
the real ingest, mosquitto and 10 simulated boxes, with every kind of fault in turn (broker restart, network
cut and stall, SIGKILL of agent and ingest, IP camera stalled and lost, the agent's disk full, model pushes);
nothing the broker delivered may be missing from the store, no sample corrupted, no bad push installed,
nothing a simulated box published missing (the 30-minute run: docs/BENCHMARKS.md)."""

from __future__ import annotations

import json
import os

import pytest

from bench import soak

pytestmark = pytest.mark.broker


def test_a_short_soak_with_every_fault_loses_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    code = soak.main(["--minutes", "1.5", "--fault-every", "6", "--seed", "3", "--fleet", "10", "--cycle", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    assert report["drained"], report
    assert report["alerts"]["lost"] == 0 and report["samples_"]["lost"] == 0, report
    assert report["corrupted"] == 0 and report["spool_left"] == 0
    assert report["alerts"]["unique"] > 0 and report["samples_"]["unique"] > 0
    kinds = {kind for _, kind in report["events"]}
    expected = {"broker_restart", "network_cut", "network_stall", "kill_agent", "kill_ingest", "camera_stall"}
    expected |= {"camera_loss"} | ({"disk_full"} if os.geteuid() == 0 else set())
    assert expected <= kinds, report["events"]
    assert report["pushes"], "no model push was made"
    for push in report["pushes"]:
        assert push["outcome"] != "INSTALLED", push  # a bad release never reaches switching/probation/commit
        assert push["outcome"] == ("committed" if push["kind"] == "good" else "rejected"), push
    assert all(f["back_after_s"] is not None for f in report["camera_faults"]), report["camera_faults"]
    fleet = report["fleet"]
    assert fleet["unacked"] == 0 and fleet["lost"] == {"alert": 0, "sample": 0}, fleet
    assert fleet["stored"]["alert"] > 0 and fleet["stored"]["sample"] > 0
    assert report["watchdog"]["pings"] > 0
    assert soak.failures(report) == [], soak.failures(report)
    assert code == 0
