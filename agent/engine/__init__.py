"""Detection engine: preprocessing, inference backends and the :class:`Detector` pipeline.

Public surface::

    from agent.engine import Detector, DecodeParams, OnnxRuntimeConfig, TensorRTConfig
    detector = Detector.open("models/demo/demo.onnx")
    detections = detector.detect([frame_bgr])[0]
"""

from __future__ import annotations

from agent.core.decode import DecodeParams, OutputLayout
from agent.core.detections import Detections
from agent.engine.config import BackendConfig, OnnxRuntimeConfig, TensorRTConfig
from agent.engine.detector import Detector, PreparedFrame, StageTimes
from agent.engine.errors import (
    BackendRuntimeError,
    BackendUnavailableError,
    EngineError,
    InputError,
    ModelError,
    ModelFileError,
    ModelMetadataError,
)
from agent.engine.model import LoadedModel, read_model

__all__ = [
    "BackendConfig",
    "BackendRuntimeError",
    "BackendUnavailableError",
    "DecodeParams",
    "Detections",
    "Detector",
    "EngineError",
    "InputError",
    "LoadedModel",
    "ModelError",
    "ModelFileError",
    "ModelMetadataError",
    "OnnxRuntimeConfig",
    "OutputLayout",
    "PreparedFrame",
    "StageTimes",
    "TensorRTConfig",
    "read_model",
]
