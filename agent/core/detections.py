"""Detections of one frame as a small numpy dataclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Detections:
    """Boxes found in one frame, in the frame's own pixel coordinates.

    Attributes:
        xyxy: ``(N, 4)`` float32, ``x1, y1, x2, y2`` in pixels of the original frame, clipped to it.
        confidence: ``(N,)`` float32 in ``[0, 1]``.
        class_id: ``(N,)`` int64.
    """

    xyxy: NDArray[Any]
    confidence: NDArray[Any]
    class_id: NDArray[Any]

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if self.xyxy.shape != (n, 4) or self.confidence.shape != (n,) or self.class_id.shape != (n,):
            raise ValueError(
                "inconsistent detection arrays: "
                f"xyxy {self.xyxy.shape}, confidence {self.confidence.shape}, class_id {self.class_id.shape}"
            )

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    @classmethod
    def from_arrays(cls, xyxy: Any, confidence: Any, class_id: Any) -> Detections:
        """Build from anything array-like, converting to the canonical dtypes."""
        return cls(
            np.asarray(xyxy, np.float32).reshape(-1, 4),
            np.asarray(confidence, np.float32).reshape(-1),
            np.asarray(class_id, np.int64).reshape(-1),
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Select detections with a boolean mask, an index array or a slice."""
        return Detections(
            np.atleast_2d(self.xyxy[index]).reshape(-1, 4),
            np.atleast_1d(self.confidence[index]),
            np.atleast_1d(self.class_id[index]),
        )

    def to_records(self, names: Optional[Mapping[int, str]] = None) -> List[Dict[str, Any]]:
        """One JSON-ready dict per box: ``xyxy`` (rounded to 0.01 px), ``confidence``, ``class_id``, ``class_name``."""
        names = names or {}
        out: List[Dict[str, Any]] = []
        for box, conf, cls in zip(self.xyxy.tolist(), self.confidence.tolist(), self.class_id.tolist()):
            out.append(
                {
                    "xyxy": [round(v, 2) for v in box],
                    "confidence": round(conf, 5),
                    "class_id": cls,
                    "class_name": names.get(cls, str(cls)),
                }
            )
        return out
