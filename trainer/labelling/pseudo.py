"""Pseudo-labels from a bigger teacher model: its detections above a confidence floor, stored with source
``pseudo`` and the teacher named as author. Never ground truth unless asked for: exports and the learning
round take human, oracle and imported labels by default, pseudo-labels only with ``--sources ...,pseudo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from agent.engine import DecodeParams, Detector


class Teacher:
    """A teacher ONNX model run through the agent's own engine (same pre/post-processing as the boxes)."""

    def __init__(self, path: Path, min_confidence: float) -> None:
        self.detector = Detector.open(path)
        self.params = DecodeParams(conf=min_confidence)
        self.min_confidence = min_confidence
        self.author = f"teacher {Path(path).name} sha256 {self.detector.model.sha256[:12]}"

    def boxes(self, jpeg: bytes, classes: Sequence[str]) -> List[Dict[str, Any]]:
        import cv2  # noqa: PLC0415 (OpenCV: heavy, and the edge install may have its own build)

        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the sample's JPEG does not decode")
        detections = self.detector.detect([image], self.params)[0]
        names = self.detector.names
        out = []
        for (x1, y1, x2, y2), score, class_id in zip(
            detections.xyxy.tolist(), detections.confidence.tolist(), detections.class_id.tolist()
        ):
            name = names.get(int(class_id), str(class_id))
            if score < self.min_confidence or name not in classes:
                continue
            out.append(
                {
                    "class_id": list(classes).index(name),
                    "class_name": name,
                    "confidence": round(float(score), 4),
                    "x1": round(x1, 2),
                    "y1": round(y1, 2),
                    "x2": round(x2, 2),
                    "y2": round(y2, 2),
                }
            )
        return out
