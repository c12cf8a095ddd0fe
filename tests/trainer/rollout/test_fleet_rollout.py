"""bench/fleet_rollout.py in a short mode (about a minute): a good release reaches all 101 simulated boxes
stage by stage (canary → wide → fleet) through the real rollout driver and the real registry; a bad one
(5 × the alerts) halts in the canary, which is rolled back, and reaches no box outside it."""

from __future__ import annotations

import json

import pytest

from bench import fleet_rollout

pytestmark = [pytest.mark.trainer, pytest.mark.broker]


def test_a_staged_rollout_on_a_simulated_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    code = fleet_rollout.main(["--boxes", "101", "--watch", "4", "--status-every", "2", "--probation", "2", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("\n{") + 1 : out.index("\n}") + 2])
    good, bad = report["good"], report["bad"]
    assert good["state"] == "completed" and good["running_at_end"] == 101, good
    stages = [kind for _, kind, _ in good["events"]]
    assert stages.count("promoted") == 2 and stages[-1] == "completed", stages
    assert good["committed_by_stage"]["canary"]["last_s"] < good["committed_by_stage"]["wide"]["first_s"]
    assert bad["state"] == "halted" and "alerts per frame" in bad["halt"]["reasons"][0], bad["halt"]
    assert bad["outside_canary_got_it"] == 0 and bad["running_at_end"] == 0
    assert bad["rolled_back"]["boxes"] == 10
    assert code == 0
