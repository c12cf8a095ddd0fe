"""A round's data: the labelled field samples from the store, split once and for all into training and the
new-domain holdout, written as YOLO sets, plus the replayed share of the base set.

The split is by image digest, so a sample lands on the same side in every round: holdout samples are never
trained on, whichever round looks at them. A tenth of the training side (again by digest) is Ultralytics'
validation split, for its checkpoint choice; the holdout plays no part in training at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

from trainer.labelling import LabelledImage, write_yolo
from trainer.store import SampleRow, list_samples


class RoundRefused(Exception):
    """A round cannot start: too few labelled samples, an empty new-domain holdout, nothing new."""


def in_holdout(sha256: str, fraction: float) -> bool:
    """Whether a sample belongs to the new-domain holdout (stable: by its image digest)."""
    bucket = int(hashlib.sha256(("holdout:" + sha256).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


@dataclass
class FieldSplit:
    """Which labelled field samples train and which are held out (sids), and how many are new."""

    train: List[SampleRow] = field(default_factory=list)
    holdout: List[SampleRow] = field(default_factory=list)
    new_labelled: int = 0
    by_reason: Dict[str, int] = field(default_factory=dict)
    by_device: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "train_sids": [r.sid for r in self.train],
            "holdout_sids": [r.sid for r in self.holdout],
            "train": len(self.train),
            "holdout": len(self.holdout),
            "new_labelled": self.new_labelled,
            "by_reason": self.by_reason,
            "by_device": self.by_device,
        }


def split_field_samples(
    reader: Any, sources: Sequence[str], holdout_fraction: float, labelled_after: float = 0.0
) -> FieldSplit:
    """Every sample with ground truth from ``sources``, split by digest; ``new_labelled`` counts those whose
    label is newer than ``labelled_after`` (the previous round's start)."""
    split = FieldSplit()
    for row in list_samples(reader, limit=None, newest_first=False):
        truth = row.ground_truth(sources)
        if truth is None:
            continue
        (split.holdout if in_holdout(row.image_sha256, holdout_fraction) else split.train).append(row)
        if truth.created_at > labelled_after:
            split.new_labelled += 1
        split.by_reason[row.reason] = split.by_reason.get(row.reason, 0) + 1
        split.by_device[row.device] = split.by_device.get(row.device, 0) + 1
    return split


def check_split(split: FieldSplit, min_train: int, min_holdout: int, first_round: bool) -> None:
    """Raise RoundRefused (with what to do) when the round cannot learn or cannot be judged."""
    if split.new_labelled == 0 and not first_round:
        raise RoundRefused("no sample was labelled since the last round: nothing new to learn")
    if len(split.train) < min_train:
        raise RoundRefused(
            f"{len(split.train)} labelled training samples, at least {min_train} needed "
            "(label more with `edge-trainer label export/import` or `label oracle`)"
        )
    if len(split.holdout) < min_holdout:
        raise RoundRefused(
            f"{len(split.holdout)} labelled samples in the new-domain holdout, at least {min_holdout} needed to "
            "judge the candidate (the holdout is never trained on; label more samples)"
        )


def write_field_sets(
    split: FieldSplit, blobs: Any, classes: Sequence[str], sources: Sequence[str], out: Path
) -> Dict[str, Path]:
    """YOLO sets of the split: ``field-train`` (a tenth as Ultralytics' val) and ``field-holdout`` (all val)."""

    def images(rows: Sequence[SampleRow]) -> List[LabelledImage]:
        result = []
        for row in rows:
            truth = row.ground_truth(sources)
            assert truth is not None
            result.append(LabelledImage.from_row(row, truth, blobs.get(row.image_sha256)))
        return result

    train_yaml = write_yolo(out / "field-train", images(split.train), classes, val_fraction=0.1)
    holdout_yaml = write_yolo(out / "field-holdout", images(split.holdout), classes, val_fraction=1.0)
    if not any((out / "field-train" / "images" / "val").iterdir()):
        # a tiny set: let one training image double as validation (Ultralytics needs a val split)
        first = next((out / "field-train" / "images" / "train").iterdir())
        (out / "field-train" / "images" / "val" / first.name).write_bytes(first.read_bytes())
        label = out / "field-train" / "labels" / "train" / f"{first.stem}.txt"
        (out / "field-train" / "labels" / "val" / label.name).write_bytes(label.read_bytes())
    return {"train": train_yaml, "holdout": holdout_yaml}


def load_rows(reader: Any, sids: Sequence[int]) -> List[SampleRow]:
    return list_samples(reader, sids=list(sids), limit=None)
