"""Round records on disk: ``<workdir>/<round id>/round.json``, rewritten (atomically) after every step, so a
crashed round shows where it stopped. The model the fleet runs is the newest published round's candidate,
else the configured baseline."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.core.release import parse_semver
from trainer.rounds.config import BaselineModel

STATES = ("preparing", "training", "exporting", "gating", "releasing", "published", "rejected", "failed")
FINAL = ("published", "rejected", "failed")


def write_record(path: Path, record: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def list_rounds(workdir: Path) -> List[Dict[str, Any]]:
    """Every round record, oldest first."""
    if not Path(workdir).is_dir():
        return []
    records = []
    for path in sorted(Path(workdir).glob("*/round.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(records, key=lambda r: r.get("started_at", 0))


@dataclass(frozen=True)
class RunningModel:
    """The model a round starts from and is compared against."""

    name: str
    version: str
    weights: Path
    onnx: Path
    onnx_int8: Path
    round_id: Optional[str] = None  # None: the baseline
    counter: Optional[int] = None

    def as_dict(self) -> Dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def running_model(workdir: Path, baseline: BaselineModel) -> RunningModel:
    for record in reversed(list_rounds(workdir)):
        if record.get("state") == "published":
            c = record["candidate"]
            release = record.get("release") or {}
            return RunningModel(
                c["name"],
                c["version"],
                Path(c["weights"]),
                Path(c["onnx"]),
                Path(c["onnx_int8"]),
                record["id"],
                release.get("counter"),
            )
    return RunningModel(baseline.name, baseline.version, baseline.weights, baseline.onnx, baseline.onnx_int8)


def last_started(workdir: Path) -> float:
    """When the newest round that got past preparation started (0 when none): labels newer than this are new."""
    times = [r.get("started_at", 0.0) for r in list_rounds(workdir) if r.get("state") in FINAL and r.get("split")]
    return max(times, default=0.0)


def next_version(version: str) -> str:
    """The next minor version: 1.0.0 -> 1.1.0 (a round is a feature release of the model)."""
    parsed = parse_semver(version)
    return f"{parsed.major}.{parsed.minor + 1}.0"
