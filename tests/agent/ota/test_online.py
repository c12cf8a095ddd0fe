"""HTTP transport against a real local web server; root and trainer key rotation; a revoked trainer key."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from tuf.api.exceptions import DownloadHTTPError

from agent.ota import HttpFetcher, MemoryFetcher, StagedFile, TransportError, VerificationError
from agent.ota.fetchers import DirectoryFetcher
from tests.agent.ota.conftest import QuietHandler, World, serve_directory
from trainer.release.keys import KeyRing, rotate_keys
from trainer.release.repo import Repository


class _Handler(QuietHandler):
    """Static files with Range support (like nginx / S3); counts ranged requests."""

    ranged = 0

    def send_head(self):  # type: ignore[no-untyped-def]
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not path.is_file():
            return super().send_head()
        type(self).ranged += 1
        start = int(rng.split("=")[1].rstrip("-"))
        data = path.read_bytes()[start:]
        self.send_response(206)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        import io

        return io.BytesIO(data)


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with serve_directory(world.repo_path, _Handler) as url:
        yield url


def test_http_install_and_resume(world: World, server: str) -> None:
    world.release("1.0.0")
    inst = world.installer()
    assert inst.install_url(server).version == "1.0.0"
    world.release("1.1.0")
    # a partial download left by a power cut is resumed with a Range request
    client_model = next(world.repo_path.glob("targets/models/widget/2/*.model.onnx"))
    part = inst.staging_dir / "files" / (client_model.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_bytes(client_model.read_bytes()[:5000])
    _Handler.ranged = 0
    assert inst.install_url(server).version == "1.1.0"
    assert _Handler.ranged == 1


def test_http_404_and_unreachable(server: str) -> None:
    with pytest.raises(DownloadHTTPError) as info:
        list(HttpFetcher().fetch_range(server + "/metadata/99.root.json", 0))
    assert info.value.status_code == 404
    staged = StagedFile(Path("/nonexistent/x"), 10, "0" * 64)
    with pytest.raises(TransportError):
        staged.fill(HttpFetcher(timeout_s=2), "http://127.0.0.1:9/x")


def test_directory_fetcher_refuses_escape(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret").write_text("s")
    f = DirectoryFetcher(tmp_path / "root")
    with pytest.raises(Exception, match="outside"):
        list(f.fetch_range("file://" + str(tmp_path / "secret"), 0))
    with pytest.raises(DownloadHTTPError):
        list(f.fetch_range(f.url("missing.json"), 0))


def test_staged_file_length_cap(tmp_path: Path) -> None:
    fetcher = MemoryFetcher({"mem://a": b"x" * 100})
    staged = StagedFile(tmp_path / "a", 50, "0" * 64)
    with pytest.raises(VerificationError) as info:
        staged.fill(fetcher, "mem://a")
    assert info.value.reason == "too_large"
    assert staged.offset <= 50


def test_root_rotation_accepted(world: World, server: str) -> None:
    world.release("1.0.0")
    inst = world.installer()
    inst.install_url(server)
    rotate_keys(world.ring, "root")
    repo = Repository(world.repo_path, world.ring)
    repo.rotate_root()
    repo.bump_timestamp()
    world.release("1.1.0")
    assert inst.install_url(server).version == "1.1.0"  # device pinned root v1, walked to v2
    assert (inst.config.state_dir / "metadata" / "online" / "root.json").read_text().count('"version": 2') == 1


def test_revoked_trainer_key_refused(world: World, server: str) -> None:
    world.release("1.0.0")
    inst = world.installer()
    inst.install_url(server)
    old_ring = KeyRing.load(world.ring.directory)
    old_trainer = dict(old_ring.roles["trainer"].__dict__)
    rotate_keys(world.ring, "trainer")
    Repository(world.repo_path, world.ring).rotate_trainer()
    world.release("1.1.0")
    inst.commit() if inst.state().trial else None
    assert inst.install_url(server).version == "1.1.0"  # the new trainer key is trusted
    inst.commit()
    # the attacker still holds the revoked trainer key and signs a release with it
    world.ring.roles["trainer"].keys = old_trainer["keys"]
    world.release("6.6.6")
    with pytest.raises(VerificationError) as info:
        inst.install_url(server)
    assert info.value.reason == "unsigned"
    assert inst.state().active.version == "1.1.0"
