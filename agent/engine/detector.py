"""The detection pipeline: frames in, :class:`Detections` out.

``frames -> Preprocessor (letterbox into a reused tensor) -> backend.run -> decode + NMS -> boxes back to
each frame``. One :class:`Detector` owns one loaded model; the daemon swaps whole detectors on an update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
from numpy.typing import NDArray

from agent.core.decode import DecodeParams, decode_outputs
from agent.core.detections import Detections
from agent.core.letterbox import Letterbox, boxes_to_source
from agent.engine.backend import InferenceBackend
from agent.engine.config import OnnxRuntimeConfig, TensorRTConfig
from agent.engine.errors import InputError, ModelMetadataError
from agent.engine.model import LoadedModel, read_model
from agent.engine.preprocess import Preprocessor, letterbox_into


@dataclass
class StageTimes:
    """Milliseconds spent per stage for the last call (for metrics and the benchmark)."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


def create_backend(model: LoadedModel, config: Union[OnnxRuntimeConfig, TensorRTConfig]) -> InferenceBackend:
    """Instantiate the configured backend for ``model`` (imports the runtime only when chosen)."""
    if isinstance(config, TensorRTConfig):
        from agent.engine.tensorrt import TensorRTBackend

        return TensorRTBackend(model, config)
    from agent.engine.onnxruntime import OnnxRuntimeBackend

    backend: InferenceBackend = OnnxRuntimeBackend(model.data, config, source=str(model.path))
    return backend


@dataclass(frozen=True)
class PreparedFrame:
    """One frame already letterboxed into its own ``(1, 3, H, W)`` tensor (see :meth:`Detector.prepare`)."""

    tensor: NDArray[Any]
    letterbox: Letterbox


@dataclass
class Detector:
    """A loaded model with its pre- and post-processing.

    Not thread-safe: one thread calls :meth:`detect`. :meth:`prepare` is safe from another thread (it only
    touches the tensor it returns), so decoding and letterboxing can overlap inference.
    """

    model: LoadedModel
    backend: InferenceBackend
    last_times: StageTimes = field(default_factory=StageTimes)
    _pre: Optional[Preprocessor] = None

    @classmethod
    def open(cls, path: Union[str, Path], config: Union[OnnxRuntimeConfig, TensorRTConfig, None] = None) -> Detector:
        model = read_model(path)
        backend = create_backend(model, config or OnnxRuntimeConfig())
        h, w = backend.input_shape[2], backend.input_shape[3]
        if (h, w) != model.metadata.imgsz and h > 0 and w > 0:
            backend.close()
            raise ModelMetadataError(
                f"runtime input {h}x{w} contradicts metadata imgsz {model.metadata.imgsz}", model.path
            )
        return cls(model=model, backend=backend)

    @property
    def names(self) -> Dict[int, str]:
        return self.model.metadata.names

    @property
    def imgsz(self) -> Any:
        return self.model.metadata.imgsz

    @property
    def max_batch(self) -> int:
        return self.backend.max_batch

    def _preprocessor(self) -> Preprocessor:
        if self._pre is None:
            self._pre = Preprocessor(self.model.metadata.imgsz, self.backend.max_batch, self.backend.input_dtype)
        return self._pre

    def prepare(self, frame: NDArray[Any]) -> PreparedFrame:
        """Letterbox one frame into a fresh tensor (thread-safe; for decode/inference overlap)."""
        tensor = np.empty((1, 3, *self.model.metadata.imgsz), dtype=self.backend.input_dtype)
        lb = letterbox_into(frame, tensor[0])
        return PreparedFrame(tensor, lb)

    def detect(
        self,
        frames: Sequence[NDArray[Any]],
        params: Optional[DecodeParams] = None,
        before_run: Optional[Callable[[], None]] = None,
    ) -> List[Detections]:
        """Detect objects in up to :attr:`max_batch` BGR uint8 frames; boxes in each frame's pixels.

        ``before_run`` is called after preprocessing, just before the model runs: the window in which the
        runtime computes without the GIL, so another Python thread can use it without slowing this one.

        Raises:
            InputError: a frame is not an image, or the batch is too large.
            BackendRuntimeError: the runtime failed.
        """
        params = params or DecodeParams()
        t0 = time.perf_counter()
        tensor, boxes = self._preprocessor()(frames)
        if before_run is not None:
            before_run()
        t1 = time.perf_counter()
        outputs = self.backend.run(tensor)
        t2 = time.perf_counter()
        result = self._postprocess(outputs, boxes, params)
        t3 = time.perf_counter()
        self.last_times = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return result

    def detect_prepared(
        self, prepared: Sequence[PreparedFrame], params: Optional[DecodeParams] = None
    ) -> List[Detections]:
        """Like :meth:`detect` for frames already letterboxed by :meth:`prepare`."""
        params = params or DecodeParams()
        if not 1 <= len(prepared) <= self.max_batch:
            raise InputError(f"batch of {len(prepared)}; this model takes 1 to {self.max_batch}")
        t0 = time.perf_counter()
        tensor = prepared[0].tensor if len(prepared) == 1 else np.concatenate([p.tensor for p in prepared])
        t1 = time.perf_counter()
        outputs = self.backend.run(tensor)
        t2 = time.perf_counter()
        result = self._postprocess(outputs, [p.letterbox for p in prepared], params)
        t3 = time.perf_counter()
        self.last_times = StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return result

    def _postprocess(
        self, outputs: Sequence[NDArray[Any]], boxes: Sequence[Letterbox], params: DecodeParams
    ) -> List[Detections]:
        decoded = decode_outputs(self.model.layout, outputs, params, self.backend.output_names)
        return [Detections(boxes_to_source(d.xyxy, lb), d.confidence, d.class_id) for d, lb in zip(decoded, boxes)]

    def describe(self) -> Dict[str, object]:
        meta = self.model.metadata
        return {
            "model": str(self.model.path),
            "sha256": self.model.sha256,
            "imgsz": list(meta.imgsz),
            "classes": meta.num_classes,
            "layout": self.model.layout.value,
            "version": meta.extra.get("edge_model_version", meta.extra.get("version", "")),
            **self.backend.describe(),
        }

    def close(self) -> None:
        self.backend.close()
