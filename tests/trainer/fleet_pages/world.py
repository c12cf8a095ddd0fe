"""A small fleet for the fleet pages' tests: real store (ingest's decoder and writer), real round reports
(trainer.rounds.report.write_report and its plots), a real rollout driver over real signed bundles with its
MQTT seam recorded (RecordedActions, a stand-in for the broker named as such)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict

from agent.protocol import ModelRef, OtaPhase
from agent.synthetic import CLASS_NAMES
from tests.trainer import helpers as h
from trainer.rollout.driver import Rollout, release_of_bundle
from trainer.settings import TrainerConfig
from trainer.store import open_reader

OLD_SHA = "0" * 64
OLD = ModelRef(name="demo", version="1.0.0", sha256=OLD_SHA)
DEVICES = {
    "c1": ("plant-1", ["canary"]),
    "w1": ("plant-1", ["wide"]),
    "f1": ("plant-1", []),
    "d7": ("plant-2", ["dock"]),
}


def quality(sha: str, frames: int = 1000, alerts: int = 20, since_s: float = 100.0) -> Dict[str, Any]:
    from datetime import datetime, timezone

    return {
        "model_sha256": sha,
        "since": datetime.fromtimestamp(time.time() - since_s, timezone.utc).isoformat(),
        "frames": frames,
        "detections": frames * 3,
        "confidence_sum": frames * 3 * 0.8,
        "alerts": alerts,
        "uncertain_frames": frames // 20,
    }


def _scores(base: float, new: float) -> Dict[str, Any]:
    per_class = {name: {"map50_95": round(min(0.95, new + 0.03 * (i - 2)), 3)} for i, name in enumerate(CLASS_NAMES)}
    curve = {"recall": [0.0, 0.5, 0.9], "precision": [1.0, 0.9, 0.5]}
    return {"map50_95": new, "per_class": per_class, "pr_curves": {CLASS_NAMES[0]: curve}, "base": base}


def write_round(workdir: Path, round_id: str, state: str, before: float, after: float, history: list) -> Dict[str, Any]:
    from trainer.rounds.history import write_record
    from trainer.rounds.report import write_report

    scores = {
        "base_before": _scores(0.6, 0.60),
        "base_after": _scores(0.6, 0.61),
        "new_before": _scores(0.6, before),
        "new_after": _scores(0.6, after),
    }
    record: Dict[str, Any] = {
        "id": round_id,
        "state": state,
        "started_at": time.time() - 600,
        "finished_at": time.time() - 60,
        "from": {"name": "demo", "version": "1.0.0"},
        "candidate": {"name": "demo", "version": "1.1.0"},
        "scores": scores,
        "split": {
            "train": 80,
            "holdout": 20,
            "new_labelled": 100,
            "by_reason": {"uncertain": 70, "flagged": 30},
            "by_device": {"c1": 60, "w1": 40},
        },
        "gate": {
            "passed": state == "published",
            "reasons": [] if state == "published" else ["base holdout fell"],
            "figures": {
                "base_before": 0.60,
                "base_after": 0.61,
                "base_delta": 0.01,
                "new_domain_before": before,
                "new_domain_after": after,
                "new_domain_delta": after - before,
            },
        },
        "reasons": [] if state == "published" else ["base holdout fell by 0.02 (bound 0.01)"],
        "steps": [],
    }
    record["report"] = write_report(record, history, workdir / round_id / "report")
    write_record(workdir / round_id / "round.json", record)
    return record


def build(tmp_path: Path, bundles: Dict[str, Path]) -> SimpleNamespace:
    config, _ = h.store_config(tmp_path, label_studio={"url": "http://label-studio.example:8080"})
    messages = []
    for device, (site, groups) in DEVICES.items():
        messages.append(h.device_status(device, site=site, model=OLD, groups=groups, quality=quality(OLD_SHA)))
        messages.append(h.camera_status(device, site=site, camera="line-1"))
        messages.append(
            h.ota_report(
                device, site=site, phase=OtaPhase.COMMITTED, release={"name": "demo", "version": "1.0.0", "counter": 1}
            )
        )
        for _ in range(3):
            topic, payload, _ = h.alert(device=device, site=site)
            messages.append((topic, payload))
    for i in range(8):
        topic, payload, _, _ = h.synthetic_sample(seed=3 + i, index=i, device="c1" if i % 2 else "w1")
        messages.append((topic, payload))
    h.fill_store(config, messages)
    # two samples were sent to Label Studio (project 7, tasks 101 and 102), as the export records them
    from trainer.store.labels import record_export

    db = sqlite3.connect(str(config.store.index_path))
    sids = [r[0] for r in db.execute("SELECT sid FROM samples ORDER BY sid LIMIT 2")]
    record_export(db, "exp-1", "label-studio", list(CLASS_NAMES), [(sids[0], 101), (sids[1], 102)], project="7")
    db.close()
    rounds_dir = tmp_path / "rounds"
    first = write_round(rounds_dir, "round-0001", "published", 0.31, 0.52, [])
    write_round(rounds_dir, "round-0002", "rejected", 0.52, 0.55, [first])
    rollout_config = h.three_stage_rollout(tmp_path / "rollouts")
    full = TrainerConfig.model_validate(
        {
            **config.model_dump(mode="json"),
            "rollout": rollout_config.model_dump(mode="json"),
            "rounds": {
                "workdir": str(rounds_dir),
                "base_data": str(tmp_path / "b.yaml"),
                "base_holdout": str(tmp_path / "h.yaml"),
            },
            "console": {"port": 0},
        }
    )
    actions = h.RecordedActions({"edge/plant-1/fleet/models": b'{"previous": "the 1.0.0 push"}'})

    def make_rollout() -> Rollout:
        return Rollout(full.rollout, lambda: open_reader(full.store.index_path), lambda: actions)

    new = release_of_bundle(bundles["1.1.0"])
    new_ref = ModelRef(name="demo", version="1.1.0", sha256=new["model_sha256s"][-1])
    make_rollout().start(bundles["1.1.0"])
    # the canary took the new release and commits it; its figures under it are fine
    time.sleep(0.01)
    h.fill_store(
        config,
        [
            h.ota_report(
                "c1", phase=OtaPhase.COMMITTED, release={"name": "demo", "version": "1.1.0", "counter": new["counter"]}
            ),
            h.device_status("c1", model=new_ref, groups=["canary"], quality=quality(new_ref.sha256, alerts=24)),
        ],
    )
    make_rollout().tick()
    return SimpleNamespace(config=full, actions=actions, make_rollout=make_rollout, new_ref=new_ref)
