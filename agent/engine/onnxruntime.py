"""ONNX Runtime backend: CPU anywhere, CUDA / TensorRT execution providers where available."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
from numpy.typing import NDArray

from agent.engine.backend import static_batch
from agent.engine.config import OnnxRuntimeConfig
from agent.engine.errors import BackendRuntimeError, BackendUnavailableError, InputError, ModelFileError
from agent.memory import release_free_memory

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - exercised on boxes without the ort extra
        raise BackendUnavailableError("onnxruntime", f"cannot import onnxruntime ({exc})") from exc
    return onnxruntime


class OnnxRuntimeBackend:
    """One ONNX Runtime session. See :class:`agent.engine.backend.InferenceBackend`."""

    name = "onnxruntime"

    def __init__(self, model: bytes, config: OnnxRuntimeConfig, source: str = "<bytes>") -> None:
        ort = _import_ort()
        self.config = config
        available = set(ort.get_available_providers())
        providers: List[Any] = []
        for provider in config.providers:
            if provider not in available:
                continue
            if provider == "TensorrtExecutionProvider":
                options: Dict[str, Any] = {"trt_fp16_enable": config.trt_fp16, "trt_int8_enable": config.trt_int8}
                if config.trt_engine_cache_dir:
                    options.update(trt_engine_cache_enable=True, trt_engine_cache_path=config.trt_engine_cache_dir)
                providers.append((provider, options))
            else:
                providers.append(provider)
        if "CPUExecutionProvider" not in config.providers:
            providers.append("CPUExecutionProvider")
        self.skipped_providers = [p for p in config.providers if p not in available]
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = config.intra_op_threads
        session_options.inter_op_num_threads = config.inter_op_threads
        session_options.log_severity_level = 3
        if config.graph_optimization == "none":
            # no fusion into QLinearConv & co: the integer kernels differ per CPU (AVX2 u8s8 saturates, VNNI does
            # not); the unfused graph's float arithmetic does not (agent/ota/health.py)
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self._session = ort.InferenceSession(model, sess_options=session_options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail / InvalidProtobuf / RuntimeException types
            raise ModelFileError(f"ONNX Runtime cannot load the model: {str(exc).strip()[:300]}", source) from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"a detection model has one input, this one has {len(inputs)}", source)
        self._input = inputs[0]
        if self._input.type not in _DTYPES:
            raise ModelFileError(f"model input type {self._input.type} is not float32 or float16", source)
        shape = list(self._input.shape)
        if len(shape) != 4:
            raise ModelFileError(f"model input must be (B, 3, H, W), got {shape}", source)
        batch = static_batch(shape)
        self.max_batch = batch if batch > 0 else config.max_batch
        height, width = shape[2], shape[3]
        self.input_shape: Tuple[int, int, int, int] = (
            batch,
            3,
            height if isinstance(height, int) else -1,
            width if isinstance(width, int) else -1,
        )
        self.input_dtype: Any = np.dtype(_DTYPES[self._input.type])
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._input_name = self._input.name

    def run(self, batch: NDArray[Any]) -> List[NDArray[Any]]:
        if batch.ndim != 4 or batch.shape[1] != 3 or not 1 <= batch.shape[0] <= self.max_batch:
            raise InputError(
                f"input batch {batch.shape} does not fit the model input {self.input_shape}",
                expected=self.input_shape,
                got=batch.shape,
            )
        try:
            outputs: List[NDArray[Any]] = self._session.run(self.output_names, {self._input_name: batch})
        except Exception as exc:
            raise BackendRuntimeError(f"ONNX Runtime failed: {str(exc).strip()[:300]}") from exc
        return outputs

    def describe(self) -> Dict[str, object]:
        ort = _import_ort()
        return {
            "backend": self.name,
            "onnxruntime": ort.__version__,
            "providers": self._session.get_providers(),
            "skipped_providers": self.skipped_providers,
            "intra_op_threads": self.config.intra_op_threads,
            "input_dtype": str(self.input_dtype),
        }

    def close(self) -> None:
        if self._session is None:
            return
        self._session = None  # the last reference: the session and its arenas are freed here
        release_free_memory()  # ... and their pages given back, not kept by malloc (agent/memory.py: why)
