"""Label Studio's task and annotation format, both ways. Pure: dicts in, dicts out, :class:`TaskError` on
anything that does not fit.

A task names its image by URL and carries the model's predictions as pre-annotations, so the reviewer
corrects boxes rather than drawing them. Label Studio keeps rectangles in percent of the image
(``x, y, width, height`` in 0..100, top-left origin); the store keeps pixels of the sample's JPEG.

Every task we export carries our ids in its data (``evl_export``, ``evl_sample``, ``evl_sha256``), which is
how an import recognises its own tasks and refuses anything else.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple
from xml.sax.saxutils import quoteattr

FROM_NAME = "label"
TO_NAME = "image"


class TaskError(ValueError):
    """A task or annotation that is not ours, or not a set of rectangles of known classes."""


def label_config(classes: Sequence[str]) -> str:
    """The project's labelling interface: one image, rectangles of ``classes``."""
    labels = "".join(f"<Label value={quoteattr(name)}/>" for name in classes)
    return (
        f'<View><Image name="{TO_NAME}" value="$image" zoom="true"/>'
        f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels></View>'
    )


def to_region(box: Dict[str, Any], width: int, height: int, classes: Sequence[str]) -> Dict[str, Any]:
    """A box in pixels (``x1, y1, x2, y2``, ``class_id`` or ``class_name``) as a Label Studio rectangle."""
    name = box.get("class_name")
    if name not in classes:
        class_id = box.get("class_id")
        if not isinstance(class_id, int) or not 0 <= class_id < len(classes):
            raise TaskError(f"box of unknown class {name!r} / {class_id!r}")
        name = classes[class_id]
    x1, y1 = max(0.0, float(box["x1"])), max(0.0, float(box["y1"]))
    x2, y2 = min(float(width), float(box["x2"])), min(float(height), float(box["y2"]))
    region: Dict[str, Any] = {
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100.0 * x1 / width,
            "y": 100.0 * y1 / height,
            "width": 100.0 * max(0.0, x2 - x1) / width,
            "height": 100.0 * max(0.0, y2 - y1) / height,
            "rotation": 0,
            "rectanglelabels": [name],
        },
    }
    if "confidence" in box:
        region["score"] = float(box["confidence"])
    return region


def from_region(region: Dict[str, Any], width: int, height: int, classes: Sequence[str]) -> Dict[str, Any]:
    """A Label Studio rectangle as a box in pixels of a ``width`` x ``height`` image."""
    if region.get("type") != "rectanglelabels":
        raise TaskError(f"region of type {region.get('type')!r}: only rectangles are labels here")
    value = region.get("value")
    if not isinstance(value, dict):
        raise TaskError("region without a value")
    if float(value.get("rotation", 0) or 0) % 360:
        raise TaskError("rotated rectangles are not supported (the detector's boxes are axis-aligned)")
    names = value.get("rectanglelabels") or []
    if len(names) != 1 or names[0] not in classes:
        raise TaskError(f"rectangle labelled {names!r}; classes are {list(classes)}")
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError) as exc:
        raise TaskError(f"rectangle without x/y/width/height: {exc}") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise TaskError(f"rectangle with impossible geometry {x, y, w, h}")
    x1, y1 = max(0.0, x) * width / 100.0, max(0.0, y) * height / 100.0
    x2, y2 = min(100.0, x + w) * width / 100.0, min(100.0, y + h) * height / 100.0
    return {
        "class_id": classes.index(names[0]),
        "class_name": names[0],
        "x1": round(x1, 2),
        "y1": round(y1, 2),
        "x2": round(x2, 2),
        "y2": round(y2, 2),
    }


def sample_task(sample: Any, image_url: str, export_id: str, classes: Sequence[str]) -> Dict[str, Any]:
    """The task of one stored sample (a ``SampleRow``): image, our ids, lineage a reviewer wants to see, and
    the model's predictions as the pre-annotation."""
    regions = [to_region(box, sample.width, sample.height, classes) for box in sample.predictions]
    scores = [float(box.get("confidence", 0.0)) for box in sample.predictions]
    return {
        "data": {
            "image": image_url,
            "evl_export": export_id,
            "evl_sample": sample.sid,
            "evl_sha256": sample.image_sha256,
            "device": sample.device,
            "camera": sample.camera,
            "reason": sample.reason,
            "model": f"{sample.model_name} {sample.model_version}",
        },
        "predictions": [
            {
                "model_version": f"{sample.model_name} {sample.model_version}",
                "score": min(scores) if scores else 0.0,
                "result": regions,
            }
        ],
    }


def task_identity(task: Dict[str, Any]) -> Tuple[str, int, str]:
    """(export id, sample id, image digest) of one of our tasks. Raises TaskError for a task we did not make."""
    data = task.get("data")
    if not isinstance(data, dict):
        raise TaskError("task without data")
    export_id, sid, sha = data.get("evl_export"), data.get("evl_sample"), data.get("evl_sha256")
    if not isinstance(export_id, str) or not isinstance(sid, int) or isinstance(sid, bool) or not isinstance(sha, str):
        raise TaskError(f"task {task.get('id')!r} was not exported by edge-trainer (no evl_export / evl_sample)")
    return export_id, sid, sha


def final_annotation(task: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The reviewer's verdict: the newest submitted annotation (drafts are not verdicts); None if none yet."""
    annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
    if not annotations:
        return None
    return max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def annotation_boxes(
    annotation: Dict[str, Any], width: int, height: int, classes: Sequence[str]
) -> List[Dict[str, Any]]:
    """The boxes of an annotation (relations, text areas and other non-rectangles are refused, not ignored)."""
    result = annotation.get("result") or []
    if not isinstance(result, list):
        raise TaskError("annotation result is not a list")
    return [from_region(region, width, height, classes) for region in result]
