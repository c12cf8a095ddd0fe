"""Model pushes for the soak (bench/soak.py): real keys, a real signed repository, the box committed on release
1.0.0 of the model it runs, and releases pushed to it in retained chunks over MQTT while faults go on.

Kinds of push:

- ``good``: a faithful re-export of the running model (one metadata character changed, so new bytes, same
  graph): must end ``committed`` (or ``rolled_back`` when the box crashed ``max_crashes`` times during its
  probation, which is what probation is for; reported with its reason);
- ``impostor``: validly signed, the running model's classes and input size, random weights, golden
  expectations recorded from itself (tests/data/ota/tiny-impostor256.onnx): must be refused by the health check;
- ``foreign``: a complete, self-consistent release signed with someone else's keys: must be refused by
  verification.

A bad push must never reach ``switching``, ``probation`` or ``committed``; the outcome of each push is read
from the box's own ``ota/state`` reports as the observer received them.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
IMPOSTOR = REPO / "tests" / "data" / "ota" / "tiny-impostor256.onnx"
RELEASE_NAME = "widget"
TERMINAL_GOOD = ("committed", "rolled_back")
INSTALLED = ("switching", "probation", "committed")


@dataclass
class Push:
    """One push and what became of it."""

    kind: str  # good | impostor | foreign
    version: str
    at: float  # monotonic, when publishing began
    published_at: Optional[float] = None
    publish_attempts: int = 0
    phases: List[str] = field(default_factory=list)
    details: List[str] = field(default_factory=list)

    @property
    def bad(self) -> bool:
        return self.kind != "good"

    @property
    def settled(self) -> bool:
        if self.bad:
            return "failed" in self.phases or any(p in INSTALLED for p in self.phases)
        return any(p in TERMINAL_GOOD for p in self.phases)

    @property
    def outcome(self) -> str:
        if self.bad:
            if any(p in INSTALLED for p in self.phases):
                return "INSTALLED"  # the one thing that must never happen
            return "rejected" if "failed" in self.phases else "pending"
        for phase in ("rolled_back", "committed"):
            if phase in self.phases:
                return phase
        return "pending"

    def as_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "outcome": self.outcome,
            "publish_attempts": self.publish_attempts,
            "phases": self.phases,
            "detail": next((d for d in reversed(self.details) if d), ""),
        }


class ReleaseKit:
    """Keys, repository, golden images and the box's OTA configuration, committed on 1.0.0 of ``model``."""

    def __init__(self, root: Path, model: Path, ota_state: Path, broker_port: int, site: str) -> None:
        import cv2

        from agent.ota import DeviceConfig, HealthCheckConfig, Installer, OtaConfig, ProbationConfig
        from agent.synthetic.render import render_frame
        from trainer.release.keys import KeyRing, init_keys
        from trainer.release.repo import Repository

        self.root = root
        self.model = model
        self.port = broker_port
        self.topic = f"edge/{site}/fleet/models"
        init_keys(root / "keys")
        self.ring = KeyRing.load(root / "keys")
        self.repo_path = root / "repo"
        Repository(self.repo_path, self.ring).init()
        Repository(self.repo_path, self.ring, offline=True).init()
        init_keys(root / "foreign-keys")
        self.foreign_ring = KeyRing.load(root / "foreign-keys")
        self.foreign_repo = root / "foreign-repo"
        Repository(self.foreign_repo, self.foreign_ring).init()
        golden_dir = root / "golden"
        golden_dir.mkdir(parents=True)
        self.golden = []
        for i in range(3):
            path = golden_dir / f"factory-{i}.png"
            cv2.imwrite(str(path), render_frame("factory", 7, i).image)
            self.golden.append(path)
        self.config = OtaConfig(
            state_dir=ota_state,
            trusted_root=self.repo_path / "metadata" / "1.root.json",
            offline_root=self.repo_path / "offline" / "metadata" / "1.root.json",
            device=DeviceConfig(device_type="x86-cpu"),
            probation=ProbationConfig(max_crashes=2, period_s=45),
            health=HealthCheckConfig(intra_op_threads=1, latency_repeats=1),
        )
        self._sign(self.repo_path, self.ring, "1.0.0", model)
        Installer(self.config).install_path(self._bundle(self.repo_path, self.ring, "r1.0.0", trust="offline"))
        self.minor = 0
        self.pushes: List[Push] = []
        self._threads: List[threading.Thread] = []

    def ota_section(self) -> Dict[str, Any]:
        return json.loads(self.config.model_dump_json())  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ building releases

    def _sign(self, repo: Path, ring: Any, version: str, model: Path, counter: Optional[int] = None) -> None:
        from trainer.release.build import ReleaseSpec, build_release
        from trainer.release.repo import Repository

        spec = ReleaseSpec(
            name=RELEASE_NAME,
            version=version,
            channel="stable",
            files={"onnx": model},
            golden=self.golden,
            conf=0.25,
            counter=counter,
        )
        build_release(Repository(repo, ring), spec)

    def _bundle(self, repo: Path, ring: Any, name: str, trust: str = "online") -> Path:
        from trainer.release.build import build_bundle

        return build_bundle(repo, ring, self.root / "bundles" / f"{name}.tar", "stable", trust=trust)

    def _twin(self, version: str) -> Path:
        """The running model with one metadata string changed (same length: the protobuf stays valid)."""
        data = self.model.read_bytes()
        old = b"trained on /work/data"
        assert data.count(old) == 1, f"{self.model}: no metadata string to vary"
        new = f"trained on /w{version.replace('.', '-'):>7}"[: len(old)].encode()
        out = self.root / "models" / f"twin-{version}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data.replace(old, new.ljust(len(old), b"_")))
        return out

    def build(self, kind: str) -> Tuple[Push, Path]:
        self.minor += 1
        if kind == "good":
            version = f"1.{self.minor}.0"
            self._sign(self.repo_path, self.ring, version, self._twin(version))
            bundle = self._bundle(self.repo_path, self.ring, version)
        elif kind == "impostor":
            version = f"2.{self.minor}.0"
            self._sign(self.repo_path, self.ring, version, IMPOSTOR)
            bundle = self._bundle(self.repo_path, self.ring, version)
        else:
            version = f"9.{self.minor}.0"
            self._sign(self.foreign_repo, self.foreign_ring, version, self.model, counter=1000 + self.minor)
            bundle = self._bundle(self.foreign_repo, self.foreign_ring, f"foreign-{version}")
        return Push(kind, version, time.monotonic()), bundle

    # ------------------------------------------------------------------ pushing

    def push(self, kind: str) -> Push:
        """Build and publish (retained chunks, then the push) in the background: the broker may be down."""
        push, bundle = self.build(kind)
        self.pushes.append(push)
        thread = threading.Thread(target=self._publish, args=(push, bundle), name=f"push-{push.version}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return push

    def _publish(self, push: Push, bundle: Path) -> None:
        from trainer.release.push import Publisher, PushError, build_push, publish

        publication = build_push(self.topic, "stable", bundle=bundle, chunk_size=256 * 1024)
        for _ in range(30):
            push.publish_attempts += 1
            try:
                publisher = Publisher("127.0.0.1", self.port, timeout_s=15)
                try:
                    publish(publisher, publication)
                finally:
                    publisher.close()
                push.published_at = time.monotonic()
                return
            except (PushError, OSError):
                time.sleep(3)  # the broker restarting: publish again, as an operator's retry would

    def busy(self, timeout_s: float = 240.0) -> bool:
        """A push is still under way (not settled and younger than ``timeout_s``)."""
        return any(not p.settled and time.monotonic() - p.at < timeout_s for p in self.pushes)

    def update(self, reports: List[Dict[str, Any]]) -> None:
        """Give each push the phases the box reported for its version (in order, repeats collapsed)."""
        by_version: Dict[str, List[Tuple[str, str]]] = {}
        for report in reports:
            release = report.get("release") or {}
            version = release.get("version")
            if version:
                by_version.setdefault(version, []).append((str(report.get("phase")), str(report.get("detail") or "")))
        for push in self.pushes:
            phases: List[str] = []
            details: List[str] = []
            for phase, detail in by_version.get(push.version, []):
                if not phases or phases[-1] != phase:
                    phases.append(phase)
                details.append(detail)
            push.phases, push.details = phases, details

    def close(self) -> None:
        for thread in self._threads:
            thread.join(1)


def ota_reports(observer: Any) -> List[Dict[str, Any]]:
    out = []
    for _, _, payload in observer.on("/ota/state"):
        try:
            out.append(json.loads(payload))
        except ValueError:
            pass
    return out
