"""`edge-trainer repo refresh|check` against a box: the online timestamp lives one day, and only a refresh keeps
the box updating; the refresh never touches targets, never signs with a key root no longer trusts, and two at
once run one after the other."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import threading
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from agent.ota import VerificationError
from tests.agent.ota.conftest import World, serve_directory
from trainer.commands.release import main as release_main
from trainer.release.keys import KeyRing
from trainer.release.refresh import RepositoryBusy, expiries, refresh, repository_lock
from trainer.release.repo import Expiry, Repository, RepositoryError

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
CADENCE = dt.timedelta(hours=6)  # systemd/edge-trainer-repo-refresh.timer (tests/deploy checks the timer says so)


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with serve_directory(world.repo_path) as url:
        yield url


def signed_files(repo: Path) -> Dict[str, str]:
    """Digest of every root, targets and trainer metadata file (what a refresh must leave alone)."""
    out = {}
    for path in sorted(repo.rglob("*.json")):
        if path.name.split(".")[-2] in ("root", "targets", "trainer"):
            out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_a_box_refuses_a_day_old_timestamp_and_updates_again_after_a_refresh(world: World, server: str) -> None:
    # The last release was signed 30 hours ago and nothing re-signed since: the timestamp expired 6 hours ago.
    world.release("1.0.0", now=NOW - dt.timedelta(hours=30))
    inst = world.installer()
    with pytest.raises(VerificationError) as info:
        inst.install_url(server)
    assert info.value.reason == "expired"
    assert inst.state().active is None

    before = signed_files(world.repo_path)
    [result] = refresh(world.repo_path, world.ring)
    assert result.part == "online" and result.timestamp_expires > NOW + dt.timedelta(hours=23)
    assert signed_files(world.repo_path) == before  # snapshot and timestamp only
    assert inst.install_url(server).version == "1.0.0"


def test_the_timer_cadence_keeps_the_timestamp_valid_and_warns_before_it_expires(world: World) -> None:
    """A simulated week on the release host: the refresh runs every 6 hours, except for a stretch where it
    fails; at every hour the timestamp must be valid, and `repo check --within 12h` must warn before it is not."""
    world.release("1.0.0")
    start = NOW
    failing = (start + dt.timedelta(days=3), start + dt.timedelta(days=3, hours=17))  # two runs lost, a third late
    warned_at = None
    last_refresh = start
    for hour in range(7 * 24 + 1):
        t = start + dt.timedelta(hours=hour)
        if t - last_refresh >= CADENCE and not (failing[0] <= t < failing[1]):
            refresh(world.repo_path, world.ring, now=t)
            last_refresh = t
        found = {(e.part, e.role): e for e in expiries(world.repo_path)}
        timestamp = found[("online", "timestamp")]
        assert timestamp.remaining(t) > dt.timedelta(0), f"timestamp expired at simulated {t}"
        assert found[("online", "snapshot")].remaining(t) > dt.timedelta(days=5)
        if timestamp.remaining(t) <= dt.timedelta(hours=12) and warned_at is None:
            warned_at = t
    assert warned_at is not None and failing[0] < warned_at < failing[1]  # warned during the outage, in time
    assert Expiry().timestamp >= 3 * CADENCE  # three refreshes may fail before a box sees an expired timestamp


def test_refresh_refuses_a_key_ring_from_before_a_rotation(world: World, tmp_path: Path) -> None:
    stale = tmp_path / "stale-keys"
    shutil.copytree(world.ring.directory, stale)
    assert (
        release_main(
            ["keys", "rotate", "timestamp", "--keys", str(world.ring.directory), "--repo", str(world.repo_path)]
        )
        == 0
    )
    timestamp = (world.repo_path / "metadata" / "timestamp.json").read_bytes()
    with pytest.raises(RepositoryError, match="not one root v2 trusts for timestamp"):
        refresh(world.repo_path, KeyRing.load(stale))
    assert (world.repo_path / "metadata" / "timestamp.json").read_bytes() == timestamp
    refresh(world.repo_path, KeyRing.load(world.ring.directory))  # the current ring signs


def test_refresh_waits_for_the_repository_lock(world: World) -> None:
    with repository_lock(world.repo_path):
        with pytest.raises(RepositoryBusy, match="holds .repository.lock"):
            refresh(world.repo_path, world.ring, lock_timeout_s=0.2)
    version = Repository(world.repo_path, world.ring).latest_version("timestamp")
    errors: List[BaseException] = []

    def refresher() -> None:
        try:
            for _ in range(5):
                refresh(world.repo_path, world.ring, offline=True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=refresher) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    repo = Repository(world.repo_path, world.ring)
    assert repo.latest_version("timestamp") == version + 10
    assert repo.load("timestamp").signed.snapshot_meta.version == repo.latest_version("snapshot")


def test_repo_check_and_refresh_commands(world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(world.repo_path)
    assert release_main(["repo", "check", "--repo", repo, "--within", "12h"]) == 0
    out = capsys.readouterr().out
    assert "online   timestamp" in out and "offline  root" in out
    assert release_main(["repo", "check", "--repo", repo, "--within", "2d"]) == 1  # the timestamp lives 1 day
    assert "online timestamp" in capsys.readouterr().err
    metrics = tmp_path / "metrics" / "repo.prom"
    assert (
        release_main(
            ["repo", "refresh", "--repo", repo, "--keys", str(world.ring.directory), "--metrics-file", str(metrics)]
        )
        == 0
    )
    text = metrics.read_text()
    assert "edge_trainer_repo_refresh_success 1" in text
    assert 'edge_trainer_repo_metadata_expiry_timestamp_seconds{part="online",role="timestamp"}' in text
    assert (
        release_main(
            ["repo", "refresh", "--repo", repo, "--keys", str(tmp_path / "no-keys"), "--metrics-file", str(metrics)]
        )
        == 1
    )
    assert "edge_trainer_repo_refresh_success 0" in metrics.read_text()
    assert "error:" in capsys.readouterr().err
