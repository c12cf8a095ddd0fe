"""Installs made by another process while the daemon runs (issue 31, defects 6 and 9): ``edge-agent ota
install`` by hand or from the USB unit. The real CLI in a subprocess, a daemon in process, real signed
bundles (trainer/release), real ONNX Runtime health checks and hot swaps, a real mosquitto.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests.agent.broker import MosquittoBroker
from tests.agent.daemon.helpers import REPO, Collector, InProcessDaemon, wait_for
from tests.agent.daemon.test_model_push import FAST, daemon_config, model_version, phases, reports
from tests.agent.ota import conftest as ota_fixtures
from tests.agent.ota.conftest import World

pytestmark = pytest.mark.broker

_keys_template = ota_fixtures._keys_template
world = ota_fixtures.world
committed_world = ota_fixtures.committed_world
model_b = ota_fixtures.model_b
model_c = ota_fixtures.model_c


def edge_agent_ota(config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``edge-agent ota ARGV --config CONFIG``, as the USB unit or a person at the box runs it."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "ota", *argv, "--config", str(config)],
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _probation_reports(collector: Collector) -> List[Dict[str, Any]]:
    return [r for r in reports(collector) if r["phase"] == "probation"]


def test_an_install_by_the_cli_is_served_by_the_running_daemon(
    committed_world: World, model_b: Path, broker: MosquittoBroker
) -> None:
    w = committed_world
    w.release("1.1.0", model=model_b)
    bundle = w.bundle("r2")
    config = daemon_config(w, broker)
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with InProcessDaemon(config, model_updates=FAST) as d:
            assert model_version(d) == "1.0.0"
            done = edge_agent_ota(config, "install", str(bundle))
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[-1].startswith("trial widget 1.1.0")
            # was: still 1.0.0 45 s later, until a restart
            wait_for(lambda: model_version(d) == "1.1.0", 15, "the daemon serving the release the CLI installed")
            installer = d.daemon.parts.installer
            assert installer is not None
            wait_for(lambda: installer.state().trial.serving_since is not None, 10, "probation begun")  # type: ignore[union-attr]
            trial = installer.state().trial
            assert trial is not None
            # probation from when the daemon serves it, as a run of the daemon: a crash now counts
            switched = dt.datetime.fromisoformat(trial.since)
            assert trial.serving_since is not None and dt.datetime.fromisoformat(trial.serving_since) >= switched
            assert (trial.starts, trial.running, trial.crashes) == (1, True, 0) and trial.boot_id
            wait_for(
                lambda: any("another process" in (r["detail"] or "") for r in _probation_reports(collector)),
                10,
                "the fleet told of the local install",
            )
            report = _probation_reports(collector)[-1]
            assert report["release"]["version"] == "1.1.0" and report["active"]["version"] == "1.1.0"
            wait_for(lambda: (d.status()["model_updates"].get("probation") or {}).get("served_by_daemon"), 10, "view")
            probation = d.status()["model_updates"]["probation"]
            assert probation["release"]["version"] == "1.1.0" and probation["period_s"] == 600.0
        trial = w.installer().state().trial
        assert trial is not None and not trial.running and trial.served_s > 0  # a clean stop keeps its time
    finally:
        collector.close()


def test_a_drive_plugged_in_during_probation_installs_after_the_commit(
    committed_world: World, model_b: Path, model_c: Path, broker: MosquittoBroker
) -> None:
    w = committed_world
    w.release("1.1.0", model=model_b)
    first = w.bundle("r2")
    w.release("1.2.0", model=model_c)
    drive = w.tmp / "drive" / "edge-ota" / "r3"
    shutil.copytree(w.bundle("r3"), drive)
    config = daemon_config(w, broker, period_s=3.0)
    collector = Collector(broker.port, "edge/site1/dev1/#")
    try:
        with InProcessDaemon(config, model_updates=FAST) as d:
            assert edge_agent_ota(config, "install", str(first)).returncode == 0
            wait_for(lambda: model_version(d) == "1.1.0", 15, "serving 1.1.0")
            plugged = edge_agent_ota(config, "install", "--json", str(drive))
            assert plugged.returncode == 0, plugged.stderr  # was: exit 4, "commit or roll back first"
            assert '"event": "queued"' in plugged.stdout.splitlines()[-1]
            shutil.rmtree(drive.parents[1])  # the drive is unplugged
            queued: Optional[Dict[str, Any]] = wait_for(
                lambda: d.status()["model_updates"].get("queued") or model_version(d) == "1.2.0", 10, "queued"
            )
            if isinstance(queued, dict):
                assert queued["release"]["version"] == "1.2.0"
            wait_for(lambda: model_version(d) == "1.2.0", 60, "the queued release served after the commit")
            installer = d.daemon.parts.installer
            assert installer is not None
            state = installer.state()
            assert state.active is not None and state.active.version == "1.2.0" and state.trial is not None
            assert state.known_good is not None and state.known_good.version == "1.1.0" and state.queued is None
            wait_for(lambda: "committed" in phases(collector) and phases(collector)[-1] == "probation", 15, "reports")
            seen = phases(collector)
            assert seen.index("staging") < seen.index("committed") < len(seen) - 1
            staged = [r for r in reports(collector) if r["phase"] == "staging" and "queued" in (r["detail"] or "")]
            assert staged and staged[0]["release"]["version"] == "1.2.0"
            assert d.status()["model_updates"]["queued"] is None
    finally:
        collector.close()
