"""Fixtures: real keys, a real signed repository (online + offline), real bundles, a real tiny ONNX model."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import http.server
import shutil
import socketserver
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Dict, Iterator, List, Optional, Type

import pytest

warnings.filterwarnings("ignore", message=".*Python 3.8 is no longer supported.*")

from agent.ota import DeviceConfig, HealthCheckConfig, Installer, OtaConfig, OtaEvent, ProbationConfig  # noqa: E402
from trainer.release.build import ReleaseSpec, build_bundle, build_release, default_golden_images  # noqa: E402
from trainer.release.keys import KeyRing, init_keys  # noqa: E402
from trainer.release.repo import Repository  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "ota"
TINY_MODEL = DATA / "tiny-yolo64.onnx"
DEMO_MODEL = Path(__file__).resolve().parents[3] / "models" / "demo" / "demo.onnx"


@pytest.fixture(scope="session")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model with different bytes (one metadata character changed; same graph and behaviour)."""
    data = TINY_MODEL.read_bytes()
    assert data.count(b"Ultralytics tiny model") == 1
    out = tmp_path_factory.mktemp("model-b") / "model-b.onnx"
    out.write_bytes(data.replace(b"Ultralytics tiny model", b"Ultralytics tinz model"))
    return out


@pytest.fixture(scope="session")
def model_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A third model with other bytes (same graph and behaviour)."""
    out = tmp_path_factory.mktemp("model-c") / "model-c.onnx"
    out.write_bytes(TINY_MODEL.read_bytes().replace(b"Ultralytics tiny model", b"Ultralytics tinx model"))
    return out


@dataclass
class World:
    """Keys, repository, device config and helpers for one test."""

    tmp: Path
    ring: KeyRing
    repo_path: Path
    config: OtaConfig
    events: List[OtaEvent] = field(default_factory=list)
    golden: List[Path] = field(default_factory=list)

    @property
    def repo(self) -> Repository:
        return Repository(self.repo_path, self.ring)

    def release(
        self,
        version: str,
        counter: Optional[int] = None,
        model: Path = TINY_MODEL,
        now: Optional[dt.datetime] = None,
        **kw: Any,
    ) -> Any:
        """Sign a release (``now``: the repository's clock, for simulated time)."""
        spec = ReleaseSpec(
            name="widget",
            version=version,
            channel="stable",
            files={"onnx": model},
            golden=self.golden,
            counter=counter,
            conf=0.001,
            iou=0.7,
            **kw,
        )
        return build_release(Repository(self.repo_path, self.ring, now=now), spec)

    def bundle(self, name: str, trust: str = "offline", tar: bool = False) -> Path:
        out = self.tmp / "bundles" / (name + (".tar" if tar else ""))
        return build_bundle(self.repo_path, self.ring, out, "stable", trust=trust)

    def installer(self, **kw: Any) -> Installer:
        return Installer(self.config, on_event=self.events.append, **kw)

    def kinds(self) -> List[str]:
        return [e.kind for e in self.events]


def make_config(tmp: Path, repo_path: Path, **kw: Any) -> OtaConfig:
    return OtaConfig(
        state_dir=tmp / "device",
        trusted_root=repo_path / "metadata" / "1.root.json",
        offline_root=repo_path / "offline" / "metadata" / "1.root.json",
        device=DeviceConfig(device_type="x86-cpu"),
        probation=ProbationConfig(max_crashes=2, period_s=600),
        health=HealthCheckConfig(intra_op_threads=1, latency_repeats=1),
        **kw,
    )


@pytest.fixture(scope="session")
def _keys_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys-template")
    init_keys(d / "keys")
    return d / "keys"


@pytest.fixture
def world(tmp_path: Path, _keys_template: Path) -> World:
    """A fresh repository signed with (copied) keys, golden images, and a device config pinned to it."""
    keys = tmp_path / "keys"
    shutil.copytree(_keys_template, keys)
    ring = KeyRing.load(keys)
    repo_path = tmp_path / "repo"
    Repository(repo_path, ring).init()
    Repository(repo_path, ring, offline=True).init()
    gdir = tmp_path / "golden"
    gdir.mkdir()
    golden = default_golden_images(gdir, count=2)
    return World(tmp_path, ring, repo_path, make_config(tmp_path, repo_path), golden=golden)


@pytest.fixture
def committed_world(world: World) -> World:
    """A device on release 1.0.0 (#1), committed (first install commits at once)."""
    world.release("1.0.0")
    world.installer().install_path(world.bundle("r1"))
    assert world.installer().state().known_good is not None
    world.events.clear()
    return world


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def target_files(bundle: Path, suffix: str) -> List[Path]:
    return sorted(p for p in (bundle / "targets").rglob(f"*{suffix}") if p.is_file())


def metadata(bundle: Path) -> Dict[str, Path]:
    return {p.name: p for p in (bundle / "metadata").iterdir()}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, without a log line per request."""

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[str]:
    """Run ``server`` (bound to a loopback port) in a thread; yields its base URL (no trailing slash)."""
    thread = threading.Thread(target=server.serve_forever, name="test-http-repo", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_directory(directory: Path, handler: Type[QuietHandler] = QuietHandler) -> ContextManager[str]:
    """Serve ``directory`` over HTTP on a free loopback port; yields the base URL (no trailing slash)."""
    return serving(
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    )
