"""The labelled set as files other tools read and write: YOLO (Ultralytics, CVAT, Roboflow) and COCO JSON.

Image files are named ``s<sid>-<first 12 hex of the image digest>.jpg``: unique in the store, and an import
checks both parts, so labels never attach to the wrong image (or to another store's sample 12).

YOLO: ``images/{train,val}/NAME.jpg``, ``labels/{train,val}/NAME.txt`` (``class cx cy w h``, normalised),
``data.yaml``. COCO: ``images/NAME.jpg`` and ``annotations.json`` (``bbox`` = ``[x, y, w, h]`` in pixels,
category ids = class id + 1).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import yaml

_NAME = re.compile(r"^s(\d+)-([0-9a-f]{12})$")


class FormatError(ValueError):
    """A YOLO or COCO file that cannot be read as a labelled set of this store's samples."""


def image_name(sid: int, sha256: str) -> str:
    return f"s{sid}-{sha256[:12]}"


def parse_image_name(stem: str) -> Tuple[int, str]:
    """(sid, digest prefix) from an exported image's file stem. Raises FormatError for other names."""
    match = _NAME.match(stem)
    if not match:
        raise FormatError(f"{stem!r} is not an exported sample image name (s<sid>-<sha12>)")
    return int(match.group(1)), match.group(2)


@dataclass(frozen=True)
class LabelledImage:
    name: str
    width: int
    height: int
    boxes: List[Dict[str, Any]]
    jpeg: bytes

    @classmethod
    def from_row(cls, row: Any, label: Any, jpeg: bytes) -> LabelledImage:
        return cls(image_name(row.sid, row.image_sha256), row.width, row.height, list(label.boxes), jpeg)


def _split(name: str, val_fraction: float) -> str:
    """Deterministic train/val split by the name's hash (the same image always lands on the same side)."""
    if val_fraction <= 0:
        return "train"
    bucket = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def write_yolo(out: Path, images: Sequence[LabelledImage], classes: Sequence[str], val_fraction: float = 0.0) -> Path:
    """Write a YOLO data set; returns the data.yaml path."""
    out = Path(out)
    for split in ("train", "val"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for image in images:
        split = _split(image.name, val_fraction)
        (out / "images" / split / f"{image.name}.jpg").write_bytes(image.jpeg)
        lines = []
        for box in image.boxes:
            x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
            lines.append(
                f"{classes.index(box['class_name'])} {(x1 + x2) / 2 / image.width:.6f} "
                f"{(y1 + y2) / 2 / image.height:.6f} {(x2 - x1) / image.width:.6f} {(y2 - y1) / image.height:.6f}"
            )
        (out / "labels" / split / f"{image.name}.txt").write_text("".join(line + "\n" for line in lines))
    data = {"path": str(out.resolve()), "train": "images/train", "val": "images/val", "names": dict(enumerate(classes))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def write_coco(out: Path, images: Sequence[LabelledImage], classes: Sequence[str]) -> Path:
    """Write images and a COCO annotations.json; returns its path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco: Dict[str, Any] = {
        "info": {"description": "edge-vision-loop labelled samples"},
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(classes)],
    }
    for number, image in enumerate(images, 1):
        (out / "images" / f"{image.name}.jpg").write_bytes(image.jpeg)
        coco["images"].append(
            {"id": number, "file_name": f"{image.name}.jpg", "width": image.width, "height": image.height}
        )
        for box in image.boxes:
            x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": number,
                    "category_id": classes.index(box["class_name"]) + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "iscrowd": 0,
                }
            )
    path = out / "annotations.json"
    path.write_text(json.dumps(coco, indent=1))
    return path


def _box(
    class_name: str, classes: Sequence[str], x1: float, y1: float, x2: float, y2: float, w: int, h: int
) -> Dict[str, Any]:
    if class_name not in classes:
        raise FormatError(f"class {class_name!r} is not one of {list(classes)}")
    return {
        "class_id": list(classes).index(class_name),
        "class_name": class_name,
        "x1": round(max(0.0, x1), 2),
        "y1": round(max(0.0, y1), 2),
        "x2": round(min(float(w), x2), 2),
        "y2": round(min(float(h), y2), 2),
    }


def read_yolo(
    root: Path, classes: Sequence[str], sizes: Dict[int, Tuple[int, int]]
) -> Dict[Tuple[int, str], List[Dict[str, Any]]]:
    """Labels of a YOLO set: (sid, digest prefix) -> boxes in pixels. ``sizes``: sid -> (width, height) of the
    store's images (YOLO coordinates are fractions of them). ``names`` in data.yaml, when present, must match
    ``classes``."""
    root = Path(root)
    data_yaml = root / "data.yaml"
    if data_yaml.is_file():
        names = yaml.safe_load(data_yaml.read_text()).get("names")
        listed = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
        if listed and list(listed) != list(classes):
            raise FormatError(f"data.yaml names {listed} are not the classes {list(classes)}")
    found: Dict[Tuple[int, str], List[Dict[str, Any]]] = {}
    for txt in sorted(root.glob("labels/**/*.txt")):
        sid, prefix = parse_image_name(txt.stem)
        if sid not in sizes:
            raise FormatError(f"{txt.name}: sample {sid} is not in the store")
        width, height = sizes[sid]
        boxes = []
        for number, line in enumerate(txt.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                class_id = int(parts[0])
                cx, cy, bw, bh = (float(v) for v in parts[1:5])
            except (ValueError, IndexError):
                raise FormatError(f"{txt.name}:{number}: not 'class cx cy w h'") from None
            if len(parts) != 5 or not 0 <= class_id < len(classes) or not all(0 <= v <= 1 for v in (cx, cy, bw, bh)):
                raise FormatError(f"{txt.name}:{number}: {line!r} is out of range")
            boxes.append(
                _box(
                    classes[class_id],
                    classes,
                    (cx - bw / 2) * width,
                    (cy - bh / 2) * height,
                    (cx + bw / 2) * width,
                    (cy + bh / 2) * height,
                    width,
                    height,
                )
            )
        found[(sid, prefix)] = boxes
    return found


def read_coco(path: Path, classes: Sequence[str]) -> Dict[Tuple[int, str], List[Dict[str, Any]]]:
    """Labels of a COCO annotations file: (sid, digest prefix) -> boxes in pixels (categories by name)."""
    try:
        coco = json.loads(Path(path).read_text())
        categories = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        images = {int(i["id"]): i for i in coco["images"]}
        annotations = coco.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not a COCO annotations file: {exc}") from None
    found: Dict[Tuple[int, str], List[Dict[str, Any]]] = {}
    for image in images.values():
        found[parse_image_name(Path(str(image["file_name"])).stem)] = []
    for ann in annotations:
        try:
            image = images[int(ann["image_id"])]
            x, y, w, h = (float(v) for v in ann["bbox"])
            name = categories[int(ann["category_id"])]
        except (KeyError, ValueError, TypeError) as exc:
            raise FormatError(f"{path}: annotation {ann.get('id')!r}: {exc}") from None
        key = parse_image_name(Path(str(image["file_name"])).stem)
        found[key].append(_box(name, classes, x, y, x + w, y + h, int(image["width"]), int(image["height"])))
    return found
