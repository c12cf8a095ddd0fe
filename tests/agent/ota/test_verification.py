"""Every attack in the issue's list is rejected and the active model stays untouched.

Each test builds a real signed repository and bundle, tampers with it the way an attacker would, and
installs it on a device that runs release 1.0.0.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from agent.ota import ReleaseRejected, VerificationError
from tests.agent.ota.conftest import World, flip_byte, metadata, target_files


def active_fingerprint(world: World) -> tuple:
    inst = world.installer()
    path = inst.active_model_path()
    assert path is not None
    return inst.state().active, hashlib.sha256(path.read_bytes()).hexdigest()


def resign(path: Path, signers: list, mutate: Callable[[Metadata], None] = lambda m: None) -> None:
    md = Metadata.from_bytes(path.read_bytes())
    mutate(md)
    md.signatures.clear()
    for s in signers:
        md.sign(s, append=True)
    path.write_bytes(md.to_bytes(JSONSerializer(compact=False)))


def assert_rejected(world: World, bundle: Path, reason: str, exc_type: type = VerificationError) -> None:
    before = active_fingerprint(world)
    with pytest.raises(exc_type) as info:
        world.installer().install_path(bundle)
    assert info.value.reason == reason, str(info.value)
    assert active_fingerprint(world) == before
    assert world.kinds()[-1] == "rejected"
    assert world.installer().state().pending is None


@pytest.fixture
def r2(committed_world: World, model_b: Path) -> Path:
    committed_world.release("1.1.0", model=model_b)
    return committed_world.bundle("r2")


def test_good_update_goes_to_trial(committed_world: World, r2: Path) -> None:
    rec = committed_world.installer().install_path(r2)
    assert rec.version == "1.1.0"
    assert committed_world.kinds() == ["downloading", "verified", "installed", "health_checked", "trial"]


def test_unsigned_targets(committed_world: World, r2: Path) -> None:
    path = metadata(r2)[next(n for n in metadata(r2) if n.endswith(".targets.json"))]
    resign(path, [])
    # snapshot pins the targets version only, so the missing signature is what stops it
    assert_rejected(committed_world, r2, "unsigned")


def test_wrongly_signed_timestamp(committed_world: World, r2: Path) -> None:
    resign(metadata(r2)["timestamp.json"], [CryptoSigner.generate_ed25519()])
    assert_rejected(committed_world, r2, "unsigned")


def test_below_threshold_root_rotation(committed_world: World, r2: Path) -> None:
    # An attacker holding one of the three root keys (threshold 2) publishes a new root with his own keys.
    root1 = committed_world.repo.load("root")
    attacker = CryptoSigner.generate_ed25519()

    def take_over(md: Metadata) -> None:
        md.signed.version = 2
        for role in ("targets", "snapshot", "timestamp"):
            for keyid in list(md.signed.roles[role].keyids):
                md.signed.revoke_key(keyid, role)
            md.signed.add_key(attacker.public_key, role)

    out = r2 / "metadata" / "2.root.json"
    out.write_bytes(root1.to_bytes())
    resign(out, committed_world.ring.signers("root")[:1], take_over)
    assert_rejected(committed_world, r2, "unsigned")


def test_expired_metadata(committed_world: World, r2: Path) -> None:
    past = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(hours=1)
    resign(
        metadata(r2)["timestamp.json"],
        committed_world.ring.signers("offline"),
        lambda md: setattr(md.signed, "expires", past),
    )
    assert_rejected(committed_world, r2, "expired")


def test_replayed_old_bundle(committed_world: World, r2: Path, model_b: Path) -> None:
    r1_again = committed_world.tmp / "bundles" / "r1"
    inst = committed_world.installer()
    inst.install_path(r2)
    inst.commit()
    committed_world.events.clear()
    # the old drive still holds valid, unexpired signatures — but older versions than the device has seen
    assert_rejected(committed_world, r1_again, "replayed")


def test_clock_rolled_back(committed_world: World, r2: Path) -> None:
    floor = committed_world.installer().time_floor
    floor.raise_to(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3))  # we once saw a later time
    assert_rejected(committed_world, r2, "clock_rolled_back")


def test_mix_and_match_model_from_other_release(committed_world: World, r2: Path) -> None:
    old_model = target_files(committed_world.tmp / "bundles" / "r1", ".model.onnx")[0]
    new_model = target_files(r2, ".model.onnx")[0]
    shutil.copyfile(old_model, new_model)
    assert_rejected(committed_world, r2, "hash_mismatch")


def test_mix_and_match_metadata(committed_world: World, r2: Path) -> None:
    # snapshot of release 1 with the timestamp of release 2: versions do not chain
    old = metadata(committed_world.tmp / "bundles" / "r1")
    new = metadata(r2)
    snap_new = next(n for n in new if n.endswith(".snapshot.json"))
    snap_old = next(n for n in old if n.endswith(".snapshot.json"))
    (r2 / "metadata" / snap_new).write_bytes((old[snap_old]).read_bytes())
    assert_rejected(committed_world, r2, "hash_mismatch" if False else "replayed")


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-1000]), "length_mismatch"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0" * 4096), "too_large"),
        (flip_byte, "hash_mismatch"),
    ],
    ids=["truncated", "oversized", "bit_flipped"],
)
def test_tampered_model(committed_world: World, r2: Path, tamper: Callable[[Path], None], reason: str) -> None:
    tamper(target_files(r2, ".model.onnx")[0])
    assert_rejected(committed_world, r2, reason)


def test_tampered_manifest(committed_world: World, r2: Path) -> None:
    manifest = target_files(r2, ".release.json")[0]
    raw = json.loads(manifest.read_text())
    raw["compatibility"]["device_types"] = []
    manifest.write_text(json.dumps(raw))
    assert_rejected(committed_world, r2, "length_mismatch")


def test_wrong_device_type(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b, device_types=["jetson-orin-nx"])
    assert_rejected(committed_world, committed_world.bundle("orin"), "incompatible", ReleaseRejected)


def test_online_trust_claim_on_offline_bundle(committed_world: World, r2: Path) -> None:
    # bundle.json is unsigned: claiming "online" only selects the other pinned root, which does not match
    desc = json.loads((r2 / "bundle.json").read_text())
    desc["trust"] = "online"
    (r2 / "bundle.json").write_text(json.dumps(desc))
    assert_rejected(committed_world, r2, "unsigned")


def test_target_outside_trainer_delegation(committed_world: World) -> None:
    # The online trainer key may only sign models/*: a target elsewhere is not found in trusted metadata.
    repo = committed_world.repo
    md = repo.load("trainer")
    assert md.signed.targets  # has models
    from trainer.release.repo import TRAINER_PATHS

    assert all(p.startswith("models/") for p in TRAINER_PATHS)
    repo.add_targets({"firmware/evil.bin": b"x"})
    bundle = committed_world.tmp / "bundles" / "online"
    from trainer.release.build import build_bundle

    build_bundle(committed_world.repo_path, committed_world.ring, bundle, trust="online")
    desc = json.loads((bundle / "bundle.json").read_text())
    desc["manifest"] = "firmware/evil.bin"
    (bundle / "bundle.json").write_text(json.dumps(desc))
    assert_rejected(committed_world, bundle, "not_found")


def test_counter_below_floor_then_rerelease(committed_world: World, r2: Path, model_b: Path) -> None:
    inst = committed_world.installer()
    inst.install_path(r2)
    inst.commit()
    assert inst.state().floor == 2
    # a signed release with counter 1 (e.g. a stale channel push) is refused ...
    committed_world.release("1.0.1", counter=1)
    assert_rejected(committed_world, committed_world.bundle("old-counter"), "below_floor", ReleaseRejected)
    # ... but the trainer may deliberately re-release the old model with a higher counter
    committed_world.release("1.0.2", counter=3)
    rec = committed_world.installer().install_path(committed_world.bundle("re-release"))
    assert (rec.counter, rec.version) == (3, "1.0.2")
