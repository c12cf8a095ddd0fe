"""Model metadata: class names, input size and stride, parsed from the strings Ultralytics stores.

Ultralytics writes ``str(value)`` of Python objects into the ONNX ``metadata_props`` (``names`` is a dict
literal, ``imgsz`` a list literal). We parse them with :func:`ast.literal_eval` (literals only, never code)
and check them against the graph's real input shape.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

Dim = Union[int, str, None]


class MetadataError(ValueError):
    """Metadata missing, malformed, or inconsistent with the graph."""


@dataclass(frozen=True)
class ModelMetadata:
    """What the engine needs to know about a detection model.

    Attributes:
        names: class id -> class name, ids ``0 .. nc-1``.
        imgsz: model input ``(height, width)``.
        stride: largest feature-map stride (32 for YOLOv8).
        task: Ultralytics task; only ``"detect"`` is served.
        batch: static batch size of the input, ``-1`` when dynamic.
        end2end: the model emits final boxes (NMS-free head), not raw candidates.
        extra: every metadata string as read, for lineage and ``status``.
    """

    names: Dict[int, str]
    imgsz: Tuple[int, int]
    stride: int = 32
    task: str = "detect"
    batch: int = 1
    end2end: bool = False
    extra: Dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def class_names(self) -> Tuple[str, ...]:
        """The names in id order (ids are ``0 .. nc-1``, checked when parsed)."""
        return tuple(self.names[i] for i in range(len(self.names)))


def _literal(props: Mapping[str, str], key: str) -> Any:
    try:
        return ast.literal_eval(props[key])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise MetadataError(f"metadata {key!r} is not a Python literal: {props[key][:80]!r}") from exc


def _parse_names(raw: Any) -> Dict[int, str]:
    if isinstance(raw, (list, tuple)):
        raw = dict(enumerate(raw))
    if not isinstance(raw, dict) or not raw:
        raise MetadataError("metadata 'names' must be a non-empty dict {id: name} or list of names")
    names: Dict[int, str] = {}
    for key, value in raw.items():
        if not isinstance(key, int) or isinstance(key, bool) or not isinstance(value, str):
            raise MetadataError(f"metadata 'names' entry {key!r}: {value!r} is not int: str")
        names[key] = value
    if sorted(names) != list(range(len(names))):
        raise MetadataError(f"metadata 'names' ids must be 0..{len(names) - 1}, got {sorted(names)}")
    return names


def _parse_imgsz(raw: Any) -> Tuple[int, int]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = [raw, raw]
    if (
        not isinstance(raw, (list, tuple))
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in raw)
    ):
        raise MetadataError(f"metadata 'imgsz' must be [height, width] of positive ints, got {raw!r}")
    return int(raw[0]), int(raw[1])


def parse_model_metadata(props: Mapping[str, str], input_dims: Sequence[Dim]) -> ModelMetadata:
    """Build :class:`ModelMetadata` from metadata strings and the graph's input dimensions.

    Args:
        props: the model's metadata key/value strings.
        input_dims: the image input's dimensions ``(B, C, H, W)``; symbolic dims are strings or None.

    Raises:
        MetadataError: names missing or malformed, image size missing where the graph is dynamic,
            or metadata contradicting the graph.
    """
    if len(input_dims) != 4:
        raise MetadataError(f"image input must be 4-D (B, 3, H, W), the graph has {len(input_dims)} dims")
    batch_dim, channels, graph_h, graph_w = input_dims
    if isinstance(channels, int) and channels != 3:
        raise MetadataError(f"image input must have 3 channels, the graph has {channels}")
    if "names" not in props:
        raise MetadataError(
            "model has no 'names' metadata (class names): export it with Ultralytics or `edge-trainer export`"
        )
    names = _parse_names(_literal(props, "names"))
    graph_hw: Optional[Tuple[int, int]] = None
    if isinstance(graph_h, int) and isinstance(graph_w, int) and graph_h > 0 and graph_w > 0:
        graph_hw = (graph_h, graph_w)
    if "imgsz" in props:
        imgsz = _parse_imgsz(_literal(props, "imgsz"))
        if graph_hw is not None and graph_hw != imgsz:
            raise MetadataError(f"metadata imgsz {list(imgsz)} contradicts the graph's input {list(graph_hw)}")
    elif graph_hw is not None:
        imgsz = graph_hw
    else:
        raise MetadataError("the input size is dynamic and the metadata has no 'imgsz'")
    stride = 32
    if "stride" in props:
        stride_raw = _literal(props, "stride")
        if not isinstance(stride_raw, int) or isinstance(stride_raw, bool) or stride_raw <= 0:
            raise MetadataError(f"metadata 'stride' must be a positive int, got {stride_raw!r}")
        stride = stride_raw
    if imgsz[0] % stride or imgsz[1] % stride:
        raise MetadataError(f"input size {list(imgsz)} is not a multiple of the stride {stride}")
    task = props.get("task", "detect")
    if task != "detect":
        raise MetadataError(f"model task is {task!r}; this engine serves 'detect' models only")
    end2end = props.get("end2end", "False").strip() == "True"
    batch = int(batch_dim) if isinstance(batch_dim, int) and batch_dim > 0 else -1
    return ModelMetadata(
        names=names, imgsz=imgsz, stride=stride, task=task, batch=batch, end2end=end2end, extra=dict(props)
    )
