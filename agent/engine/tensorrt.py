"""Native TensorRT backend (Jetson): engine from the cache or built from ONNX, pinned buffers, one stream.

Layers, from pure to hardware::

    TensorDesc, plan_bindings -> BindingPlan     pure: buffer sizes, I/O order, shapes for a batch of n
    trt_dtype_to_numpy                           pure: TensorRT DataType name -> numpy dtype
    _NamedTensorIO / _BindingsIO                 thin: gather TensorDescs from an engine, set shapes, execute
    TensorRTBackend                              wiring: cache lookup / build, buffers, run(), close()

Two TensorRT Python APIs are spoken. The named-tensor API (``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) exists from TensorRT
8.5 and is the only one in 10.x; the binding-index API (``num_bindings``, ``binding_is_input``,
``get_binding_shape``, ``set_binding_shape``, ``execute_async_v2``) is what TensorRT 8.0 .. 8.4 have
(JetPack 5.0.x ships 8.4) and is deprecated from 8.5. The backend picks by feature: named tensors when the
engine has ``num_io_tensors``, bindings otherwise.

Nothing in this module has run against a real TensorRT or GPU (none on the development machine or in CI):
the pure parts are unit-tested, and the wiring is exercised end to end against a fake ``tensorrt`` module
and a fake CUDA memory layer (``tests/agent/engine/fake_tensorrt.py``). docs/TENSORRT.md says how to
validate on a device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from agent.engine.config import TensorRTConfig
from agent.engine.cuda_memory import CudaMemory, DeviceBuffer, load_cuda_memory
from agent.engine.errors import (
    BackendRuntimeError,
    BackendUnavailableError,
    EngineError,
    InputError,
    ModelFileError,
)
from agent.engine.model import LoadedModel
from agent.engine.trt_build import (
    CalibrationBatches,
    CalibrationCacheFiles,
    EngineCache,
    build_options,
    build_serialized_engine,
    calibration_digest,
    check_builder_version,
    engine_cache_key,
    engine_file_name,
    list_calibration_images,
    make_entropy_calibrator,
    make_logger,
    read_nonempty_file,
)

# -- dtypes -----------------------------------------------------------------------------------------------
_TRT_TO_NUMPY: Dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,  # TensorRT >= 10
    "BOOL": np.bool_,
    "UINT8": np.uint8,  # TensorRT >= 8.5
}


def trt_dtype_name(dtype: Any) -> str:
    """The member name of a ``trt.DataType`` (``"FLOAT"``), from the enum or its ``str``."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(dtype).rsplit(".", 1)[-1]


def trt_dtype_to_numpy(name: str) -> np.dtype[Any]:
    """numpy dtype of a TensorRT data type name.

    Raises:
        ModelFileError: a type numpy cannot hold for us (BF16, FP8, INT4, FP4): the engine is unusable here.
    """
    try:
        dtype: np.dtype[Any] = np.dtype(_TRT_TO_NUMPY[name.upper()])
    except KeyError:
        raise ModelFileError(
            f"engine I/O tensor type {name} is not supported (only {', '.join(sorted(_TRT_TO_NUMPY))})"
        ) from None
    return dtype


# -- the binding plan (pure) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorDesc:
    """One engine I/O tensor as the engine reports it; ``-1`` marks a dynamic dimension."""

    name: str
    is_input: bool
    shape: Tuple[int, ...]
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class BufferSpec:
    """One I/O buffer sized for the largest batch.

    Attributes:
        max_shape: concrete shape at ``max_batch``.
        batched: the leading dimension is the batch (rows are returned / copied per image).
        index: position in the engine's I/O order (the binding index for the TensorRT 8 API).
    """

    name: str
    dtype: np.dtype[Any]
    max_shape: Tuple[int, ...]
    batched: bool
    index: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.max_shape, dtype=np.int64)) * self.dtype.itemsize

    def shape_for(self, n: int) -> Tuple[int, ...]:
        """Shape for a batch of ``n`` images."""
        return (n, *self.max_shape[1:]) if self.batched else self.max_shape

    def nbytes_for(self, n: int) -> int:
        return int(np.prod(self.shape_for(n), dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True)
class BindingPlan:
    """Buffers, order and batch rules of one engine.

    Attributes:
        input: the image input ``(B, 3, H, W)``.
        outputs: outputs in engine order (what :meth:`TensorRTBackend.run` returns, in that order).
        dynamic_batch: the engine takes any batch ``1 .. max_batch`` (the input shape is set per run).
        max_batch: the largest batch: the static batch, or the profile's maximum.
        order: every tensor name in engine I/O order.
    """

    input: BufferSpec
    outputs: Tuple[BufferSpec, ...]
    dynamic_batch: bool
    max_batch: int
    order: Tuple[str, ...]

    @property
    def output_names(self) -> List[str]:
        return [o.name for o in self.outputs]

    def input_shape_for(self, n: int) -> Tuple[int, ...]:
        """The input shape to set for a batch of ``n``.

        Raises:
            InputError: ``n`` outside ``1 .. max_batch``.
        """
        if not 1 <= n <= self.max_batch:
            raise InputError(f"batch of {n}; this engine takes 1 to {self.max_batch}", self.max_batch, n)
        return self.input.shape_for(n)

    def output_shapes_for(self, n: int) -> List[Tuple[int, ...]]:
        """Each output's shape for a batch of ``n`` (static engines still compute all rows; we return n)."""
        return [o.shape_for(n) for o in self.outputs]


def plan_bindings(
    tensors: Sequence[TensorDesc],
    max_batch: int,
    imgsz: Tuple[int, int],
    resolved_output_shapes: Optional[Mapping[str, Sequence[int]]] = None,
) -> BindingPlan:
    """Plan buffers for an engine from its I/O tensors.

    Args:
        tensors: every I/O tensor in engine order (as the engine reports them: ``-1`` is dynamic).
        max_batch: the configured maximum batch, used when the engine's batch is dynamic.
        imgsz: the model's ``(height, width)``; resolves a dynamic input height/width.
        resolved_output_shapes: output shapes the execution context reports with the input set to its
            largest shape; needed only when an output has dynamic dimensions besides the batch.

    Raises:
        ModelFileError: not exactly one 4-D input, no outputs, or an output whose size stays unknown.
    """
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    if len(inputs) != 1:
        raise ModelFileError(f"a detection engine has one input, this one has {len(inputs)}")
    if not outputs:
        raise ModelFileError("the engine has no outputs")
    image = inputs[0]
    if len(image.shape) != 4:
        raise ModelFileError(f"engine input {image.name!r} must be (B, 3, H, W), got {image.shape}")
    batch = int(image.shape[0])
    dynamic = batch < 0
    if not dynamic and batch == 0:
        raise ModelFileError(f"engine input {image.name!r} has batch 0")
    top = int(max_batch) if dynamic else batch
    h, w = (int(d) for d in image.shape[2:])
    in_shape = (top, 3, h if h > 0 else int(imgsz[0]), w if w > 0 else int(imgsz[1]))
    index = {t.name: i for i, t in enumerate(tensors)}
    input_spec = BufferSpec(image.name, image.dtype, in_shape, True, index[image.name])

    resolved = dict(resolved_output_shapes or {})
    output_specs = []
    for out in outputs:
        lead = int(out.shape[0]) if out.shape else 0
        batched = lead < 0 or (not dynamic and lead == batch)
        if out.name in resolved:
            shape = tuple(int(d) for d in resolved[out.name])
            if batched and shape:
                shape = (top, *shape[1:])
        else:
            shape = tuple(top if (i == 0 and batched) else int(d) for i, d in enumerate(out.shape))
        if any(d < 0 for d in shape):
            raise ModelFileError(
                f"engine output {out.name!r} has data-dependent shape {out.shape}; only the batch may be dynamic"
            )
        output_specs.append(BufferSpec(out.name, out.dtype, shape, batched, index[out.name]))
    return BindingPlan(
        input=input_spec,
        outputs=tuple(output_specs),
        dynamic_batch=dynamic,
        max_batch=top,
        order=tuple(t.name for t in tensors),
    )


# -- the two TensorRT I/O APIs (thin) -------------------------------------------------------------------
class _NamedTensorIO:
    """TensorRT >= 8.5 (and the only API of 10.x): I/O tensors addressed by name, ``execute_async_v3``."""

    api = "named-tensors"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._trt = trt
        self._engine = engine
        self._context = context

    def tensors(self) -> List[TensorDesc]:
        engine = self._engine
        result = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            result.append(
                TensorDesc(
                    name=name,
                    is_input=engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT,
                    shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
                    dtype=trt_dtype_to_numpy(trt_dtype_name(engine.get_tensor_dtype(name))),
                )
            )
        return result

    def set_input_shape(self, name: str, index: int, shape: Tuple[int, ...]) -> None:
        if not self._context.set_input_shape(name, shape):
            raise BackendRuntimeError(f"TensorRT refused input shape {shape} for {name!r}")

    def output_shape(self, name: str, index: int) -> Tuple[int, ...]:
        return tuple(int(d) for d in self._context.get_tensor_shape(name))

    def bind(self, plan: BindingPlan, buffers: Mapping[str, DeviceBuffer]) -> None:
        for name in plan.order:
            if not self._context.set_tensor_address(name, buffers[name].ptr):
                raise BackendRuntimeError(f"TensorRT refused the device address of {name!r}")

    def execute(self, stream_handle: int) -> bool:
        return bool(self._context.execute_async_v3(stream_handle))


class _BindingsIO:
    """TensorRT 8.0 .. 8.4: I/O by binding index, ``execute_async_v2`` with a pointer list."""

    api = "bindings"

    def __init__(self, trt: Any, engine: Any, context: Any) -> None:
        self._engine = engine
        self._context = context
        self._pointers: List[int] = []

    def tensors(self) -> List[TensorDesc]:
        engine = self._engine
        return [
            TensorDesc(
                name=engine.get_binding_name(i),
                is_input=bool(engine.binding_is_input(i)),
                shape=tuple(int(d) for d in engine.get_binding_shape(i)),
                dtype=trt_dtype_to_numpy(trt_dtype_name(engine.get_binding_dtype(i))),
            )
            for i in range(engine.num_bindings)
        ]

    def set_input_shape(self, name: str, index: int, shape: Tuple[int, ...]) -> None:
        if not self._context.set_binding_shape(index, shape):
            raise BackendRuntimeError(f"TensorRT refused input shape {shape} for {name!r}")

    def output_shape(self, name: str, index: int) -> Tuple[int, ...]:
        return tuple(int(d) for d in self._context.get_binding_shape(index))

    def bind(self, plan: BindingPlan, buffers: Mapping[str, DeviceBuffer]) -> None:
        self._pointers = [buffers[name].ptr for name in plan.order]

    def execute(self, stream_handle: int) -> bool:
        return bool(self._context.execute_async_v2(bindings=self._pointers, stream_handle=stream_handle))


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            "tensorrt", f"cannot import tensorrt ({exc}); install TensorRT's Python bindings (JetPack)"
        ) from exc
    return tensorrt


# -- the backend ------------------------------------------------------------------------------------------
class TensorRTBackend:
    """One TensorRT engine for one model. See :class:`agent.engine.backend.InferenceBackend`.

    Not thread-safe: one thread calls :meth:`run` at a time (the Detector's inference thread).

    Args:
        model: the loaded ONNX model (bytes, hash, metadata).
        config: precision, cache directory, calibration, workspace, batch, DLA core.
        cuda: the CUDA layer; default :func:`agent.engine.cuda_memory.load_cuda_memory` (pycuda, then
            cuda-python). The backend owns it and closes it in :meth:`close`.

    Raises:
        BackendUnavailableError: tensorrt, or every CUDA library, cannot be imported or initialised.
        ModelFileError: the ONNX does not parse, the engine does not fit a detection model, or INT8 has
            no calibration source.
        BackendRuntimeError: the build, the context or the buffers fail.
    """

    name = "tensorrt"

    def __init__(self, model: LoadedModel, config: TensorRTConfig, *, cuda: Optional[CudaMemory] = None) -> None:
        self._closed = False
        self._cuda: Optional[CudaMemory] = None
        self._trt = _import_tensorrt()
        self.config = config
        self.model_path = Path(model.path)
        self._cuda = cuda if cuda is not None else load_cuda_memory(0)
        try:
            self._open(model)
        except BaseException:
            self.close()
            raise

    # -- construction ---------------------------------------------------------------------------------
    def _open(self, model: LoadedModel) -> None:
        trt, cuda, config = self._trt, self._cuda, self.config
        assert cuda is not None
        self.trt_version = str(trt.__version__)
        self.device_name = cuda.device_name()
        self.compute_capability = cuda.compute_capability()
        self._logger = make_logger(trt)
        if hasattr(trt, "init_libnvinfer_plugins"):  # registers EfficientNMS & co. before parse/deserialize
            trt.init_libnvinfer_plugins(self._logger, "")
        imgsz = (int(model.metadata.imgsz[0]), int(model.metadata.imgsz[1]))

        calibration = self._calibration_source(model, imgsz)
        digest = calibration_digest(*calibration[1:]) if config.precision == "int8" else ""
        key = engine_cache_key(
            model.sha256,
            precision=config.precision,
            max_batch=config.max_batch,
            trt_version=self.trt_version,
            compute_capability=self.compute_capability,
            dla_core=config.dla_core,
            gpu_name=self.device_name,
            calibration_digest=digest,
            imgsz=imgsz,
        )
        file_name = engine_file_name(
            model.sha256,
            precision=config.precision,
            max_batch=config.max_batch,
            trt_version=self.trt_version,
            compute_capability=self.compute_capability,
            key=key,
            dla_core=config.dla_core,
        )
        cache = EngineCache(config.engine_cache_dir)
        self.engine_path = cache.path(file_name)
        self._runtime = trt.Runtime(self._logger)
        if config.dla_core is not None:
            self._runtime.DLA_core = config.dla_core

        self.engine_source = "cache"
        self.build_seconds = 0.0
        engine = None
        cached = cache.load(file_name)
        if cached is not None:
            engine = self._deserialize(cached)
            if engine is None:  # built by another TensorRT, truncated, or corrupt: rebuild
                cache.discard(file_name)
                self.engine_source = "rebuilt"
        if engine is None:
            if self.engine_source != "rebuilt":
                self.engine_source = "built"
            started = time.monotonic()
            serialized = self._build(model, imgsz, *calibration)
            self.build_seconds = time.monotonic() - started
            engine = self._deserialize(serialized)
            if engine is None:
                raise BackendRuntimeError("TensorRT cannot deserialize the engine it has just built")
            facts = {
                "model": str(model.path),
                "model_sha256": model.sha256,
                "precision": config.precision,
                "max_batch": config.max_batch,
                "tensorrt": self.trt_version,
                "compute_capability": list(self.compute_capability),
                "gpu": self.device_name,
                "dla_core": config.dla_core,
                "calibration": digest,
                "key": key,
                "build_seconds": round(self.build_seconds, 1),
            }
            try:
                cache.store(file_name, serialized, facts)
            except OSError as exc:  # a read-only or full disk costs a rebuild next start, not this run
                self._logger.log(self._trt.ILogger.Severity.WARNING, f"cannot cache the engine: {exc}")
        self._engine = engine
        self._setup_execution(imgsz)

    def _calibration_source(
        self, model: LoadedModel, imgsz: Tuple[int, int]
    ) -> Tuple[Optional[CalibrationCacheFiles], Optional[bytes], List[Path]]:
        """(cache files, the release's cache bytes, image paths) for INT8; nothing for other precisions.

        The engine key follows the release's calibration inputs (its cache, else its image list), not a
        cache calibrated here earlier: so the second start after calibrating finds the engine it built.
        The cache made here is named after the image list, so new images mean a new calibration.
        """
        config = self.config
        if config.precision != "int8":
            return None, None, []
        shipped_path = Path(config.calibration_cache) if config.calibration_cache else None
        shipped = read_nonempty_file(shipped_path)
        images: List[Path] = []
        if shipped is None and config.calibration_images:
            images = list_calibration_images(config.calibration_images)
        digest = calibration_digest(shipped, images).rsplit(":", 1)[-1]
        files = CalibrationCacheFiles(
            read_path=shipped_path,
            write_path=Path(config.engine_cache_dir) / f"{model.sha256[:16]}-{digest[:12] or 'none'}.calib",
        )
        return files, shipped, images

    def _deserialize(self, data: bytes) -> Any:
        try:
            return self._runtime.deserialize_cuda_engine(data)
        except Exception:  # some versions raise rather than return None on a foreign or corrupt plan
            return None

    def _build(
        self,
        model: LoadedModel,
        imgsz: Tuple[int, int],
        files: Optional[CalibrationCacheFiles],
        cache_bytes: Optional[bytes],
        images: List[Path],
    ) -> bytes:
        config = self.config
        check_builder_version(self.trt_version)  # before a calibrator subclasses a class TensorRT 11 lacks
        input_dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in model.info.inputs[0].dims)
        has_calibration = (files is not None and files.read() is not None) or bool(images)
        options = build_options(config, input_dims, imgsz, has_calibration)
        calibrator = None
        if options.needs_calibrator and files is not None:
            batches = CalibrationBatches(images, options.calibration_batch, imgsz)
            assert self._cuda is not None
            calibrator = make_entropy_calibrator(self._trt, batches, files, self._cuda)
        try:
            with self._active():
                return build_serialized_engine(
                    self._trt,
                    self._logger,
                    model.data,
                    options,
                    calibrator=calibrator,
                    source=str(model.path),
                )
        finally:
            if calibrator is not None:
                calibrator.device.free()  # the calibration batch buffer is not needed after the build

    def _active(self) -> Any:
        assert self._cuda is not None
        return self._cuda.activated()

    def _setup_execution(self, imgsz: Tuple[int, int]) -> None:
        trt, cuda, engine = self._trt, self._cuda, self._engine
        assert cuda is not None
        with self._active():
            context = engine.create_execution_context()
            if context is None:
                raise BackendRuntimeError("TensorRT cannot create an execution context (out of GPU memory?)")
            self._context = context
            io_class = _NamedTensorIO if hasattr(engine, "num_io_tensors") else _BindingsIO
            self._io = io_class(trt, engine, context)
            tensors = self._io.tensors()
            plan = plan_bindings(tensors, self.config.max_batch, imgsz)
            if plan.dynamic_batch:
                # Ask the context for the output shapes at the largest input: resolves dynamic H/W outputs.
                self._io.set_input_shape(plan.input.name, plan.input.index, plan.input.max_shape)
                resolved = {o.name: self._io.output_shape(o.name, o.index) for o in plan.outputs}
                plan = plan_bindings(tensors, self.config.max_batch, imgsz, resolved)
            self.plan = plan
            if plan.input.dtype not in (np.dtype(np.float32), np.dtype(np.float16)):
                raise ModelFileError(f"engine input type {plan.input.dtype} is not float32 or float16")
            self._stream = cuda.create_stream()
            self._device: Dict[str, DeviceBuffer] = {}
            self._host: Dict[str, NDArray[Any]] = {}
            for spec in (plan.input, *plan.outputs):
                self._device[spec.name] = cuda.device_alloc(spec.nbytes)
                self._host[spec.name] = cuda.pinned_empty(spec.max_shape, spec.dtype)
            self._io.bind(plan, self._device)
        self._current_batch = -1
        self.max_batch = plan.max_batch
        self.input_shape: Tuple[int, int, int, int] = (
            plan.max_batch if not plan.dynamic_batch else -1,
            3,
            plan.input.max_shape[2],
            plan.input.max_shape[3],
        )
        self.input_dtype: Any = plan.input.dtype
        self.output_names = plan.output_names

    # -- InferenceBackend -----------------------------------------------------------------------------
    def run(self, batch: NDArray[Any]) -> List[NDArray[Any]]:
        """Run ``batch`` ``(n, 3, H, W)``; returns views of pinned buffers (the next call overwrites them).

        Raises:
            InputError: wrong rank, channels, size, or ``n`` outside ``1 .. max_batch``.
            BackendRuntimeError: TensorRT or CUDA failed.
        """
        if self._closed:
            raise BackendRuntimeError("the TensorRT backend is closed")
        plan = self.plan
        expected = plan.input.max_shape
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or tuple(batch.shape[1:]) != expected[1:]:
            got = getattr(batch, "shape", type(batch).__name__)
            message = f"input batch {got} does not fit the engine input {self.input_shape}"
            raise InputError(message, expected, got)
        n = int(batch.shape[0])
        shape = plan.input_shape_for(n)  # raises InputError for n outside 1..max_batch
        cuda = self._cuda
        assert cuda is not None
        host_in = self._host[plan.input.name]
        try:
            np.copyto(host_in[:n], batch, casting="same_kind")
        except TypeError as exc:
            message = f"input dtype {batch.dtype} cannot become {plan.input.dtype}"
            raise InputError(message, plan.input.dtype, batch.dtype) from exc
        try:
            with self._active():
                if plan.dynamic_batch and n != self._current_batch:
                    self._io.set_input_shape(plan.input.name, plan.input.index, shape)
                    self._current_batch = n
                cuda.htod_async(self._device[plan.input.name], host_in[:n], self._stream)
                if not self._io.execute(cuda.stream_handle(self._stream)):
                    raise BackendRuntimeError("TensorRT execution failed (see the TensorRT log)")
                results = []
                for spec in plan.outputs:
                    host = self._host[spec.name]
                    view = host[:n] if spec.batched else host
                    cuda.dtoh_async(view, self._device[spec.name], self._stream)
                    results.append(view)
                cuda.synchronize(self._stream)
        except EngineError:
            raise
        except Exception as exc:  # pycuda / cuda-python errors: LogicError, RuntimeError, ...
            raise BackendRuntimeError(f"TensorRT inference failed: {exc}") from exc
        return results

    def execute_bound(self) -> None:
        """Execute the engine once on the buffers bound by the last :meth:`run` and wait: no host copies, no
        pre- or post-processing. The reference the per-frame pipeline is measured against (bench/gpu_check.py)."""
        if self._closed:
            raise BackendRuntimeError("the TensorRT backend is closed")
        cuda = self._cuda
        assert cuda is not None
        with self._active():
            if not self._io.execute(cuda.stream_handle(self._stream)):
                raise BackendRuntimeError("TensorRT execution failed (see the TensorRT log)")
            cuda.synchronize(self._stream)

    def describe(self) -> Dict[str, object]:
        return {
            "backend": self.name,
            "tensorrt": getattr(self, "trt_version", ""),
            "io_api": getattr(getattr(self, "_io", None), "api", ""),
            "cuda_library": self._cuda.library if self._cuda is not None else "",
            "device": getattr(self, "device_name", ""),
            "compute_capability": ".".join(str(v) for v in getattr(self, "compute_capability", ())),
            "precision": self.config.precision,
            "dla_core": self.config.dla_core,
            "engine": str(getattr(self, "engine_path", "")),
            "engine_source": getattr(self, "engine_source", ""),
            "build_seconds": round(getattr(self, "build_seconds", 0.0), 1),
            "max_batch": getattr(self, "max_batch", 0),
            "input_dtype": str(getattr(self, "input_dtype", "")),
        }

    def close(self) -> None:
        """Free device and pinned memory, the context and the engine. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for attr in ("_context", "_engine", "_runtime", "_io"):
            if hasattr(self, attr):
                setattr(self, attr, None)
        self._host = {}
        self._device = {}
        if self._cuda is not None:
            self._cuda.close()
