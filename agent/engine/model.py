"""A model file read, hashed and parsed, before any runtime touches it (:func:`read_model`).

Its own module so that the backends (``onnxruntime.py``, ``tensorrt.py``) and the pipeline
(``detector.py``) all depend on it, and not on one another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from agent.core.decode import DecodeError, OutputLayout, detect_layout
from agent.core.model_meta import MetadataError, ModelMetadata, parse_model_metadata
from agent.core.onnx_proto import OnnxModelInfo, OnnxParseError, parse_onnx_model
from agent.engine.errors import ModelFileError, ModelMetadataError

__all__ = ["MAX_MODEL_BYTES", "LoadedModel", "read_model"]

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""Refuse model files above this size before reading them (a YOLO ONNX file is a few MB to ~300 MB)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model file read, hashed and parsed: everything known before a runtime touches it."""

    path: Path
    data: bytes
    sha256: str
    info: OnnxModelInfo
    metadata: ModelMetadata
    layout: OutputLayout


def read_model(path: Union[str, Path]) -> LoadedModel:
    """Read, hash and parse an ONNX detection model.

    Raises:
        ModelFileError: missing, unreadable, too large, or not ONNX.
        ModelMetadataError: class names / image size missing or inconsistent with the graph.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFileError("model file not found", path) from None
    except OSError as exc:
        raise ModelFileError(f"cannot stat model file: {exc.strerror}", path) from exc
    if not path.is_file():
        raise ModelFileError("model path is not a file", path)
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file is {size} bytes, above the {MAX_MODEL_BYTES} byte limit", path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file: {exc.strerror}", path) from exc
    try:
        info = parse_onnx_model(data)
    except OnnxParseError as exc:
        raise ModelFileError(f"not a valid ONNX model ({exc})", path) from exc
    image_input = info.inputs[0]
    try:
        metadata = parse_model_metadata(info.metadata, image_input.dims)
        layout = detect_layout(
            [o.name for o in info.outputs], [o.dims for o in info.outputs], metadata.num_classes, metadata.end2end
        )
    except (MetadataError, DecodeError) as exc:
        raise ModelMetadataError(str(exc), path) from exc
    return LoadedModel(
        path=path,
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        info=info,
        metadata=metadata,
        layout=layout,
    )
