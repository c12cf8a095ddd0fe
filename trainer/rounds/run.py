"""One learning round, start to end::

    preparing  labelled field samples from the store → split (train | new-domain holdout, by digest) →
               refuse if too few (RoundRefused) → YOLO sets + the base set's replay share
    training   fine-tune the running model's weights (trainer.train: Ultralytics, DDP/AMP on GPUs)
    exporting  exactly what ships: ONNX FP32 + INT8 (the project's recipe), calibration images drawn from
               the field samples and the base set
    gating     the candidate's INT8 and the running INT8 through the agent's engine, scored by Ultralytics'
               metrics, on the base holdout and the new-domain holdout → trainer.rounds.gate.decide
    releasing  a passing candidate is signed into the repository (trainer.release) with an online bundle
               for MQTT pushes
    published | rejected (with the gate's reasons) | failed (with the error)

Every step rewrites ``round.json``; the report (JSON + Markdown + plots) is written at the end, whatever the
outcome, and copied beside the release it produced.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

from trainer.evaluate import evaluate
from trainer.export import export_all
from trainer.release import KeyRing, ReleaseSpec, Repository, build_bundle, build_release
from trainer.rounds.config import RoundsConfig
from trainer.rounds.dataset import FieldSplit, RoundRefused, check_split, split_field_samples, write_field_sets
from trainer.rounds.gate import GateVerdict, HoldoutScores, decide
from trainer.rounds.history import last_started, list_rounds, next_version, running_model, write_record
from trainer.rounds.report import write_report
from trainer.train import _images_of, train

Progress = Callable[[str], None]


def _say(message: str) -> None:
    print(f"round: {message}", file=sys.stderr, flush=True)


class Round:
    """State of one round; see the module docstring."""

    def __init__(self, config: RoundsConfig, classes: List[str], progress: Progress = _say) -> None:
        self.config = config
        self.classes = list(classes)
        self.progress = progress
        self.id = time.strftime("r%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]
        self.dir = Path(config.workdir) / self.id
        self.record: Dict[str, Any] = {"id": self.id, "started_at": time.time(), "state": "preparing", "steps": []}
        self._step_started = time.monotonic()

    # ------------------------------------------------------------------ bookkeeping

    def _save(self) -> None:
        write_record(self.dir / "round.json", self.record)

    def _step(self, state: str) -> None:
        now = time.monotonic()
        if self.record["steps"]:
            self.record["steps"][-1]["seconds"] = round(now - self._step_started, 1)
        self._step_started = now
        self.record["state"] = state
        self.record["steps"].append({"state": state, "at": time.time()})
        self._save()
        self.progress(f"{self.id}: {state}")

    # ------------------------------------------------------------------ the steps

    def prepare(self, reader: Any, blobs: Any) -> FieldSplit:
        cfg = self.config
        first = not any(r.get("state") in ("published", "rejected") for r in list_rounds(cfg.workdir))
        split = split_field_samples(reader, cfg.label_sources, cfg.holdout_fraction, last_started(cfg.workdir))
        check_split(split, cfg.min_train_samples, cfg.min_holdout_samples, first)
        running = running_model(cfg.workdir, cfg.baseline)
        self.record["from"] = running.as_dict()
        self.record["split"] = split.as_dict()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save()
        sets = write_field_sets(split, blobs, self.classes, cfg.label_sources, self.dir / "data")
        self.record["data"] = {"field_train": str(sets["train"]), "field_holdout": str(sets["holdout"])}
        self.progress(
            f"{len(split.train)} field samples to train on ({split.new_labelled} newly labelled), "
            f"{len(split.holdout)} held out; replay {cfg.training.replay_fraction:.0%} of {cfg.base_data}"
        )
        return split

    def train(self) -> Dict[str, Any]:
        t = self.config.training
        running = self.record["from"]
        summary = train(
            data=Path(self.record["data"]["field_train"]),
            model=running["weights"],
            out=self.dir / "train",
            epochs=t.epochs,
            imgsz=t.imgsz,
            batch=t.batch,
            devices=t.devices,
            amp=t.amp,
            workers=t.workers,
            seed=t.seed,
            replay_data=self.config.base_data,
            replay_fraction=t.replay_fraction,
            extra={
                "optimizer": t.optimizer,
                "lr0": t.lr0,
                "lrf": t.lrf,
                "warmup_epochs": t.warmup_epochs,
                "close_mosaic": t.close_mosaic,
                **({"freeze": t.freeze} if t.freeze is not None else {}),
            },
        )
        self.record["training"] = summary
        return summary

    def export(self, weights: Path) -> Dict[str, Any]:
        cfg = self.config
        calib = self.dir / "calibration-source"
        self._calibration_mix(calib)
        version = next_version(self.record["from"]["version"])
        name = self.record["from"]["name"]
        report = export_all(
            weights=weights,
            out_dir=self.dir / "export",
            imgsz=cfg.training.imgsz,
            version=version,
            calib_dirs=[calib],
            calib_count=cfg.calib_count,
            holdout=None,
            name="model",
            training_data=f"learning round {self.id}: {self.record['split']['train']} field samples + replay of "
            f"{cfg.base_data}",
        )
        files = report["files"]
        self.record["candidate"] = {
            "name": name,
            "version": version,
            "weights": str(weights),
            "onnx": files["onnx_fp32"],
            "onnx_int8": files["onnx_int8"],
            "calibration_images": files["calibration_images"],
        }
        self.record["export"] = report
        return report

    def _calibration_mix(self, out: Path) -> None:
        """Calibration images: ``calib_field_share`` from the field training images, the rest from the base set."""
        cfg = self.config
        field_images = _images_of(Path(self.record["data"]["field_train"]), "train")
        base_images = _images_of(cfg.base_data, "train")
        rng = random.Random(cfg.training.seed)
        n_field = min(len(field_images), round(cfg.calib_count * cfg.calib_field_share))
        n_base = min(len(base_images), cfg.calib_count - n_field)
        out.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(rng.sample(field_images, n_field) + rng.sample(base_images, n_base)):
            shutil.copyfile(path, out / f"{i:05d}{path.suffix.lower()}")
        self.record["calibration"] = {"field": n_field, "base": n_base}

    def gate(self) -> GateVerdict:
        cfg = self.config
        running, candidate = self.record["from"], self.record["candidate"]
        field = Path(self.record["data"]["field_holdout"])
        scores: Dict[str, Dict[str, Any]] = {}
        for key, model, data in (
            ("base_before", running["onnx_int8"], cfg.base_holdout),
            ("base_after", candidate["onnx_int8"], cfg.base_holdout),
            ("new_before", running["onnx_int8"], field),
            ("new_after", candidate["onnx_int8"], field),
            ("base_after_fp32", candidate["onnx"], cfg.base_holdout),
        ):
            scores[key] = evaluate(Path(model), Path(data), "val", threads=0, progress=False)
            self.progress(
                f"  {key:<16} mAP50-95 {scores[key]['map50_95']:.4f} ({Path(model).name} on {Path(data).parent.name})"
            )
        verdict = decide(
            HoldoutScores(scores["base_before"]["map50_95"], scores["base_after"]["map50_95"]),
            HoldoutScores(scores["new_before"]["map50_95"], scores["new_after"]["map50_95"]),
            cfg.gate.min_new_domain_gain,
            cfg.gate.max_base_regression,
            candidate_fp32_base=scores["base_after_fp32"]["map50_95"],
            max_int8_loss=cfg.gate.max_int8_loss,
        )
        self.record["scores"] = scores
        self.record["gate"] = {"passed": verdict.passed, "reasons": verdict.reasons, "figures": verdict.figures}
        return verdict

    def release(self) -> Dict[str, Any]:
        target = self.config.release
        assert target is not None
        candidate = self.record["candidate"]
        ring = KeyRing.load(target.keys)
        manifest = build_release(
            Repository(target.repo, ring),
            ReleaseSpec(
                name=candidate["name"],
                version=candidate["version"],
                channel=target.channel,
                files={
                    "onnx": Path(candidate["onnx"]),
                    "onnx_int8": Path(candidate["onnx_int8"]),
                    "calibration_images": Path(candidate["calibration_images"]),
                },
                golden=target.golden,
                device_types=target.device_types,
                health_role=target.health_role,
            ),
        )
        bundle = build_bundle(
            target.repo, ring, self.dir / "release" / "online-bundle.tar", target.channel, trust="online"
        )
        release = {
            "name": manifest.name,
            "version": manifest.version,
            "counter": manifest.counter,
            "channel": manifest.channel,
            "repo": str(target.repo),
            "bundle": str(bundle),
        }
        self.record["release"] = release
        return release

    # ------------------------------------------------------------------ all of it

    def run(self, reader: Any, blobs: Any) -> Dict[str, Any]:
        """Run every step; returns the final record. Raises RoundRefused before anything is written."""
        self.prepare(reader, blobs)  # RoundRefused escapes: nothing to record
        try:
            self._step("training")
            summary = self.train()
            self._step("exporting")
            self.export(Path(summary["best"]))
            self._step("gating")
            verdict = self.gate()
            if not verdict.passed:
                self.record["reasons"] = verdict.reasons
                self._step("rejected")
            elif self.config.release is None:
                self.record["reasons"] = ["passed the gate; no release target configured (rounds.release)"]
                self._step("rejected")
            else:
                self._step("releasing")
                self.release()
                self._step("published")
        except Exception as exc:  # a failed round is recorded, never half-published
            self.record["error"] = f"{type(exc).__name__}: {exc}"
            self.record["traceback"] = traceback.format_exc()[-4000:]
            self._step("failed")
        self.record["finished_at"] = time.time()
        self._save()

        try:
            self.record["report"] = write_report(self.record, list_rounds(self.config.workdir), self.dir / "report")
            if self.record.get("release"):
                keep = (
                    Path(self.record["release"]["repo"])
                    / "reports"
                    / f"{self.record['release']['name']}-{self.record['release']['version']}"
                )
                shutil.copytree(self.dir / "report", keep, dirs_exist_ok=True)
                self.record["report"]["kept_with_release"] = str(keep)
        except Exception as exc:  # the report must never turn a published round into a failed one
            self.record["report_error"] = f"{type(exc).__name__}: {exc}"
        self._save()
        return self.record


__all__ = ["Round", "RoundRefused"]
