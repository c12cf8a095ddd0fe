"""Recovery after the release host's online keys (trainer, snapshot, timestamp) were stolen, end to end.

The attacker signs with the stolen keys, pushes the versions far ahead (timestamp and snapshot 50 versions on)
and a release with counter 1000; a box that reached the attacker's server caches that metadata, installs the
release and raises its anti-rollback floor to 1000. The documented procedure (docs/OPERATIONS.md, Recover):
`edge-trainer keys rotate online` on the offline signing machine (root and targets keys: a new root names new
online keys; the delegation names a new trainer key), then a release with a counter above every box's floor.
The box then accepts the real repository again; on the way its messages say what is wrong."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from agent.ota import ReleaseRejected, VerificationError
from tests.agent.ota.conftest import World, serve_directory
from trainer.commands.release import main as release_main
from trainer.release.keys import KeyRing
from trainer.release.repo import Repository


def test_a_box_that_cached_the_attackers_metadata_accepts_the_real_repository_after_the_procedure(
    world: World, tmp_path: Path, model_b: Path
) -> None:
    world.release("1.0.0")
    inst = world.installer()
    with serve_directory(world.repo_path) as real:
        assert inst.install_url(real).version == "1.0.0"
    if inst.state().trial:
        inst.commit()

    # the attacker: a copy of the published repository and the stolen online keys
    attacker_repo = tmp_path / "attacker"
    shutil.copytree(world.repo_path, attacker_repo)
    attacker = dataclasses.replace(world, repo_path=attacker_repo, ring=KeyRing.load(world.ring.directory))
    for _ in range(50):
        Repository(attacker_repo, attacker.ring).bump_timestamp()
    attacker.release("6.6.6", counter=1000, model=model_b)
    with serve_directory(attacker_repo) as evil:
        assert inst.install_url(evil).version == "6.6.6"  # signed with keys the box trusts: it cannot tell
    inst.commit()
    assert inst.state().floor == 1000

    # the operator finds out; before anything is rotated the box refuses the real repository and says why
    world.release("1.1.0")
    with serve_directory(world.repo_path) as real:
        with pytest.raises(VerificationError) as info:
            inst.install_url(real)
    assert info.value.reason == "replayed"
    assert "metadata timestamp.json (timestamp role)" in str(info.value)
    assert "keys rotate online" in str(info.value)

    # step 1: rotate the online keys (root and targets keys sign the handover)
    keys = str(world.ring.directory)
    assert release_main(["keys", "rotate", "online", "--keys", keys, "--repo", str(world.repo_path)]) == 0
    world.ring = KeyRing.load(world.ring.directory)
    world.release("1.2.0")
    with serve_directory(world.repo_path) as real:
        with pytest.raises(ReleaseRejected) as rejected:
            inst.install_url(real)  # the metadata verifies again; the counter is below the attacker's
    assert "1000" in str(rejected.value)

    # step 2: a release above every box's floor (the fleet's OTA reports and `ota status` show it)
    world.release("1.3.0", counter=1001)
    with serve_directory(world.repo_path) as real:
        assert inst.install_url(real).version == "1.3.0"
    assert inst.state().active.counter == 1001

    # and the attacker's metadata is worthless now: its server is refused, the box stays on 1.3.0
    inst.commit()
    attacker.release("6.6.7", counter=2000, model=model_b)
    with serve_directory(attacker_repo) as evil:
        with pytest.raises(VerificationError) as info:
            inst.install_url(evil)
    assert info.value.reason in ("unsigned", "replayed")
    assert inst.state().active.version == "1.3.0"
