"""The oracle labeller: a STAND-IN FOR HUMAN REVIEW, for the synthetic domains only.

A sample from the ``synthetic`` camera carries its render identity (domain, seed, frame index, size:
``SampleMeta.synthetic``). Rendering that frame again gives the exact ground-truth boxes, which is what a
careful reviewer would draw. Before trusting it, the oracle checks that the re-rendered frame is the
sample's image, so a wrong identity never becomes a label: inside the parts' boxes (where frames differ;
the belt around them hardly changes) the decoded JPEG must be clearly closer to the claimed frame than to
its neighbours in the stream (mean absolute difference below ``MATCH_RATIO`` of the nearer neighbour's).
Measured at JPEG quality 70 on the three domains: the right frame scores 0.63-0.78 of its neighbours, a
frame off by one 1.29-1.61, a frame far off about 1.0. It refuses every sample of a real camera: there is no
ground truth to read there, only a person's judgement. Its labels are stored with source ``oracle`` and
author ``oracle (stand-in for human review)``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

AUTHOR = "oracle (stand-in for human review)"
MATCH_RATIO = 0.9
"""The claimed frame's difference to the image must be below this share of its nearer neighbour's."""


class OracleRefused(ValueError):
    """The oracle cannot label this sample (a real camera, an unknown domain, or an identity that does not
    reproduce the image)."""


def _difference(image: np.ndarray, frame: Any) -> float:
    """Mean absolute difference inside the frame's part boxes (the whole image when it has none)."""
    diff = np.abs(image.astype(np.int16) - frame.image.astype(np.int16))
    mask = np.zeros(diff.shape[:2], bool)
    for x1, y1, x2, y2 in frame.boxes.astype(int).tolist():
        mask[max(0, y1) : y2, max(0, x1) : x2] = True
    return float(diff[mask].mean()) if mask.any() else float(diff.mean())


def oracle_boxes(sample: Any, jpeg: bytes, classes: Sequence[str]) -> List[Dict[str, Any]]:
    """Ground-truth boxes of a synthetic sample (a ``SampleRow``) in its image's pixels.

    Raises:
        OracleRefused: see the class.
    """
    identity = sample.synthetic
    if not identity:
        raise OracleRefused(
            f"sample {sample.sid} comes from a real camera ({sample.device}/{sample.camera}): the oracle only "
            "knows rendered frames; it needs human review"
        )
    import cv2  # noqa: PLC0415 (OpenCV: heavy, and the edge install may have its own build)

    from agent.synthetic import CLASS_NAMES, UnknownDomainError, render_stream_frame  # noqa: PLC0415 (agent.synthetic imports OpenCV)

    try:
        frame = render_stream_frame(
            identity["domain"],
            int(identity["seed"]),
            int(identity["index"]),
            size=(int(identity["height"]), int(identity["width"])),
        )
    except (UnknownDomainError, ValueError, KeyError) as exc:
        raise OracleRefused(f"sample {sample.sid}: cannot re-render {identity}: {exc}") from None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape != frame.image.shape:
        shape = None if image is None else image.shape
        raise OracleRefused(f"sample {sample.sid}: image {shape} is not the rendered frame {frame.image.shape}")
    index = int(identity["index"])
    neighbours = (index + 1, index + 2) if index == 0 else (index - 1, index + 1)
    claimed = _difference(image, frame)
    nearest = min(
        _difference(image, render_stream_frame(frame.domain, frame.seed, n, size=image.shape[:2])) for n in neighbours
    )
    if not claimed < MATCH_RATIO * nearest:
        raise OracleRefused(
            f"sample {sample.sid}: the image is not frame {index} of {frame.domain}/{frame.seed} (difference "
            f"{claimed:.1f}, its neighbours' {nearest:.1f}): its identity is wrong"
        )
    boxes = []
    for (x1, y1, x2, y2), class_id in zip(frame.boxes.tolist(), frame.class_ids.tolist()):
        name = CLASS_NAMES[class_id]
        if name not in classes:
            raise OracleRefused(f"the scene's class {name!r} is not among the task's classes {list(classes)}")
        boxes.append(
            {
                "class_id": list(classes).index(name),
                "class_name": name,
                "x1": round(x1, 2),
                "y1": round(y1, 2),
                "x2": round(x2, 2),
                "y2": round(y2, 2),
            }
        )
    return boxes
