"""OTA errors an operator can act on: they name the target path or the metadata file and its role, never a
staging file name, and end in words, not in dangling punctuation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from agent.ota import VerificationError
from agent.ota.trust import metadata_subject
from tests.agent.ota.conftest import World, flip_byte, serve_directory


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with serve_directory(world.repo_path) as url:
        yield url


def check_readable(message: str) -> None:
    assert message == message.strip() and message[-1] not in ":;,(", message
    assert ": :" not in message and "  " not in message, message


def test_a_tampered_target_is_named_by_its_target_path(world: World, server: str) -> None:
    world.release("1.0.0")
    [model] = world.repo_path.glob("targets/models/widget/1/*.model.onnx")
    flip_byte(model)
    with pytest.raises(VerificationError) as info:
        world.installer().install_url(server)
    message = str(info.value)
    assert info.value.reason == "hash_mismatch"
    assert "target models/widget/1/model.onnx" in message, message
    assert model.name not in message  # the staging / hash-prefixed file name means nothing to an operator
    check_readable(message)


def test_an_oversized_timestamp_names_the_metadata_file(world: World, server: str) -> None:
    world.release("1.0.0")
    timestamp = world.repo_path / "metadata" / "timestamp.json"
    document = json.loads(timestamp.read_text())
    document["signed"]["padding"] = "x" * 100_000  # past ngclient's timestamp length cap
    timestamp.write_text(json.dumps(document))
    with pytest.raises(VerificationError) as info:
        world.installer().install_url(server)
    assert info.value.reason == "too_large"
    assert "metadata timestamp.json (timestamp role)" in str(info.value), str(info.value)
    check_readable(str(info.value))


@pytest.mark.parametrize(
    ("url", "subject"),
    [
        ("http://h/metadata/timestamp.json", "metadata timestamp.json (timestamp role)"),
        ("http://h/metadata/12.snapshot.json", "metadata 12.snapshot.json (snapshot role)"),
        ("file:///m/3.root.json", "metadata 3.root.json (root role)"),
        ("http://h/metadata/4.trainer.json", "metadata 4.trainer.json (trainer role)"),
        (None, "metadata refresh"),
    ],
)
def test_metadata_subject(url: str, subject: str) -> None:
    assert metadata_subject(url) == subject


def test_a_pushed_bundle_is_named_by_its_release(tmp_path: Path) -> None:
    from agent.ota import StagedFile

    staged = StagedFile(tmp_path / "bundle.tar", 4, "0" * 64, label="pushed bundle of demo 1.1.0")
    with pytest.raises(
        VerificationError, match=r"too_large: pushed bundle of demo 1\.1\.0: more than the 4 signed bytes$"
    ):
        staged.append(0, b"12345")


def test_a_missing_metadata_version_says_what_it_may_mean() -> None:
    from tuf.api.exceptions import DownloadHTTPError

    from agent.ota.trust import map_tuf_error

    error = map_tuf_error(
        DownloadHTTPError("http://h/metadata/1000.trainer.json", 404),
        "target models/channels/stable.json, metadata 1000.trainer.json (trainer role)",
        metadata=True,
    )
    assert error.reason == "not_found"
    assert "lacks the version this box's trusted metadata names" in str(error)
    check_readable(str(error))
