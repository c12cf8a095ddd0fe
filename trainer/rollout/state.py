"""A rollout's state on disk: one JSON file per rollout plus ``current`` naming the running one, each
replaced atomically. Every decision is written *before* it is acted on (push, halt), and acting again is
harmless (retained pushes are replaced, rollbacks name the release to leave), so a trainer killed at any
point resumes where it was: it never promotes twice and never forgets a halt."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

RUNNING, HALTED, COMPLETED = "running", "halted", "completed"


def _write(path: Path, document: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RolloutStore:
    """The rollouts under ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)

    def path(self, rollout_id: str) -> Path:
        return self.dir / f"{rollout_id}.json"

    def load(self, rollout_id: str) -> Dict[str, Any]:
        return dict(json.loads(self.path(rollout_id).read_text()))

    def save(self, state: Dict[str, Any]) -> None:
        state["updated_at"] = time.time()
        _write(self.path(state["id"]), state)

    def current(self) -> Optional[Dict[str, Any]]:
        """The rollout that is running or halted (the newest one), None when there is none."""
        pointer = self.dir / "current"
        if not pointer.is_file():
            return None
        rollout_id = pointer.read_text().strip()
        return self.load(rollout_id) if self.path(rollout_id).is_file() else None

    def set_current(self, rollout_id: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / ".current.tmp"
        tmp.write_text(rollout_id + "\n")
        os.replace(tmp, self.dir / "current")

    def all(self) -> List[Dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        return sorted((json.loads(p.read_text()) for p in self.dir.glob("r*.json")), key=lambda s: s["started_at"])


def new_state(
    release: Dict[str, Any], stages: List[Dict[str, Any]], site: str, snapshots: Dict[str, str]
) -> Dict[str, Any]:
    now = time.time()
    return {
        "id": time.strftime("r%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4],
        "started_at": now,
        "site": site,
        "release": release,
        "stages": [
            {**stage, "pushed": False, "pushed_at": None, "ready_since": None, "promoted_at": None} for stage in stages
        ],
        "stage": 0,
        "state": RUNNING,
        "snapshots": snapshots,  # topic -> base64 of its retained push before the rollout ("" = none)
        "halt": None,
        "events": [{"at": now, "event": "started", "detail": f"{release['name']} {release['version']}"}],
    }


def event(state: Dict[str, Any], name: str, detail: str = "") -> None:
    state["events"].append({"at": time.time(), "event": name, "detail": detail})
    del state["events"][:-500]  # bounded
