"""FAKE TensorRT and FAKE CUDA: stand-ins for hardware this machine and CI do not have.

What this proves: the *wiring* of ``agent.engine.tensorrt`` / ``trt_build`` / ``cuda_memory`` (which calls
are made, in which order, with which shapes, buffers and pointers; the engine cache; calibration plumbing;
both TensorRT Python APIs). What it does NOT prove: anything about TensorRT's behaviour (parsing real ONNX,
kernels, precision, speed), pycuda's or cuda-python's. Those were never run here; docs/TENSORRT.md says how
to validate on a device.

The fakes:

- :func:`make_fake_tensorrt` builds a module object with the names the backend uses from ``tensorrt``,
  in either API flavour: ``"named"`` (TensorRT 10: ``num_io_tensors``, ``set_input_shape``,
  ``set_tensor_address``, ``execute_async_v3``) or ``"bindings"`` (TensorRT 8.4: ``num_bindings``,
  ``set_binding_shape``, ``execute_async_v2``).
- "ONNX" for the fake parser is ``FAKE-ONNX`` + JSON describing the network's I/O (:func:`fake_onnx`);
  any other bytes fail to parse, with a node-level error like the real parser's.
- A fake engine computes a known function of each input row, so tests can check that row ``i`` of every
  output came from image ``i``.
- "Device memory" is host numpy memory in a registry keyed by fake device pointers; the fake pycuda
  driver and fake cuda-python runtime copy through it, and the fake engine reads and writes it. Every
  copy is bounds-checked, so an off-by-one in the backend's byte counts fails loudly.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import json
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# -- fake device memory -----------------------------------------------------------------------------------
DEVICE: Dict[int, np.ndarray] = {}
_next_ptr = itertools.count(0x7F0000000000, 0x100000)


def device_malloc(nbytes: int) -> int:
    ptr = next(_next_ptr)
    DEVICE[ptr] = np.zeros(int(nbytes), dtype=np.uint8)
    return ptr


def device_free(ptr: int) -> None:
    if int(ptr) not in DEVICE:
        raise RuntimeError(f"fake cuda: double free or bad pointer {ptr:#x}")
    del DEVICE[int(ptr)]


def device_view(ptr: int, nbytes: int) -> np.ndarray:
    memory = DEVICE.get(int(ptr))
    if memory is None:
        raise RuntimeError(f"fake cuda: {ptr:#x} is not a device allocation")
    if nbytes > memory.nbytes:
        raise RuntimeError(f"fake cuda: {nbytes} bytes overflow a {memory.nbytes} byte allocation")
    return memory[:nbytes]


# -- fake pycuda.driver -----------------------------------------------------------------------------------
class _FakeDeviceAllocation:
    def __init__(self, nbytes: int) -> None:
        self.ptr = device_malloc(nbytes)
        self.freed = False

    def __int__(self) -> int:
        return self.ptr

    def free(self) -> None:
        if not self.freed:
            device_free(self.ptr)
            self.freed = True


class FakePycudaDriver:
    """The slice of ``pycuda.driver`` that :class:`agent.engine.cuda_memory.PycudaMemory` uses."""

    def __init__(self, name: str = "Fake Orin", cc: Tuple[int, int] = (8, 7)) -> None:
        self.context_stack: List[Any] = []
        self.pushes = 0
        self.allocations: List[_FakeDeviceAllocation] = []
        self.pinned: List[np.ndarray] = []
        self.detached = False
        driver = self

        class Context:
            def push(self) -> None:
                driver.context_stack.append(self)
                driver.pushes += 1

            @staticmethod
            def pop() -> None:
                driver.context_stack.pop()

            def detach(self) -> None:
                driver.detached = True

        class Device:
            def __init__(self, ordinal: int) -> None:
                self.ordinal = ordinal

            def name(self) -> str:
                return name

            def compute_capability(self) -> Tuple[int, int]:
                return cc

            def retain_primary_context(self) -> Any:
                return Context()

        class Stream:
            count = 0

            def __init__(self) -> None:
                Stream.count += 1
                self.handle = 0x5000 + Stream.count
                self.syncs = 0

            def synchronize(self) -> None:
                self.syncs += 1

        self.Context = Context
        self.Device = Device
        self.Stream = Stream

    def _require_context(self) -> None:
        if not self.context_stack:
            raise RuntimeError("fake pycuda: no current context (pycuda would raise LogicError)")

    def init(self) -> None:
        pass

    def pagelocked_empty(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        self._require_context()
        array = np.empty(tuple(shape), dtype=dtype)  # pinning itself is not emulated: host memory is host memory
        self.pinned.append(array)
        return array

    def mem_alloc(self, nbytes: int) -> _FakeDeviceAllocation:
        self._require_context()
        allocation = _FakeDeviceAllocation(nbytes)
        self.allocations.append(allocation)
        return allocation

    def memcpy_htod_async(self, dest: Any, src: np.ndarray, stream: Any = None) -> None:
        self._require_context()
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        device_view(int(dest), data.nbytes)[:] = data

    def memcpy_dtoh_async(self, dest: np.ndarray, src: Any, stream: Any = None) -> None:
        self._require_context()
        if not dest.flags.c_contiguous:
            raise RuntimeError("fake pycuda: destination must be contiguous")
        dest.reshape(-1).view(np.uint8)[:] = device_view(int(src), dest.nbytes)


# -- fake cuda-python runtime -----------------------------------------------------------------------------
class FakeCudart:
    """The slice of ``cuda.bindings.runtime`` that :class:`agent.engine.cuda_memory.CudaPythonMemory` uses."""

    class cudaError_t(enum.IntEnum):  # the real name
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, name: bytes = b"Fake Xavier NX\0\0\0", cc: Tuple[int, int] = (7, 2)) -> None:
        self.name = name
        self.cc = cc
        self.host: Dict[int, Any] = {}
        self.streams: List[int] = []
        self.destroyed: List[int] = []
        self.fail_next: Optional[str] = None

    def _ok(self, fn: str, *values: Any) -> Tuple[Any, ...]:
        if self.fail_next == fn:
            self.fail_next = None
            return (self.cudaError_t.cudaErrorMemoryAllocation, *([None] * len(values)))
        return (self.cudaError_t.cudaSuccess, *values)

    def cudaSetDevice(self, device: int) -> Tuple[Any, ...]:
        return self._ok("cudaSetDevice")

    def cudaGetDeviceProperties(self, device: int) -> Tuple[Any, ...]:
        return self._ok(
            "cudaGetDeviceProperties",
            types.SimpleNamespace(name=self.name, major=self.cc[0], minor=self.cc[1]),
        )

    def cudaMallocHost(self, nbytes: int) -> Tuple[Any, ...]:
        buffer = (ctypes.c_byte * nbytes)()
        ptr = ctypes.addressof(buffer)
        self.host[ptr] = buffer
        return self._ok("cudaMallocHost", ptr)

    def cudaFreeHost(self, ptr: int) -> Tuple[Any, ...]:
        self.host.pop(ptr)
        return self._ok("cudaFreeHost")

    def cudaMalloc(self, nbytes: int) -> Tuple[Any, ...]:
        return self._ok("cudaMalloc", device_malloc(nbytes))

    def cudaFree(self, ptr: int) -> Tuple[Any, ...]:
        device_free(ptr)
        return self._ok("cudaFree")

    def cudaStreamCreate(self) -> Tuple[Any, ...]:
        handle = 0x9000 + len(self.streams)
        self.streams.append(handle)
        return self._ok("cudaStreamCreate", handle)

    def cudaStreamDestroy(self, stream: int) -> Tuple[Any, ...]:
        self.destroyed.append(stream)
        return self._ok("cudaStreamDestroy")

    def cudaStreamSynchronize(self, stream: int) -> Tuple[Any, ...]:
        return self._ok("cudaStreamSynchronize")

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: int) -> Tuple[Any, ...]:
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            device_view(dst, count)[:] = np.frombuffer(ctypes.string_at(src, count), dtype=np.uint8)
        else:
            data = device_view(src, count).tobytes()
            ctypes.memmove(dst, data, count)
        return self._ok("cudaMemcpyAsync")


# -- fake ONNX and engines ---------------------------------------------------------------------------------
ONNX_MAGIC = b"FAKE-ONNX\n"
ENGINE_MAGIC = b"FAKE-TRT-ENGINE\n"

_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT32": np.int32,
    "INT8": np.int8,
    "BOOL": np.bool_,
    "INT64": np.int64,
}


def fake_onnx(
    inputs: Sequence[Tuple[str, Sequence[int], str]],
    outputs: Sequence[Tuple[str, Sequence[int], str]],
    kind: str = "raw",
) -> bytes:
    """Bytes the fake parser accepts: the network's I/O as ``(name, shape with -1 dynamic, dtype name)``."""
    spec = {"inputs": [list(i) for i in inputs], "outputs": [list(o) for o in outputs], "kind": kind}
    return ONNX_MAGIC + json.dumps(spec).encode()


def raw_head_reference(batch: np.ndarray, channels: int, anchors: int) -> np.ndarray:
    """What the fake "raw" engine outputs for ``batch``: row ``b`` depends on image ``b`` only."""
    means = batch.astype(np.float64).reshape(batch.shape[0], -1).mean(axis=1)
    c = np.arange(channels)[None, :, None]
    k = np.arange(anchors)[None, None, :]
    return (means[:, None, None] + c + 0.01 * k).astype(np.float32)


def nms_reference(batch: np.ndarray, keep: int) -> Dict[str, np.ndarray]:
    """What the fake EfficientNMS engine outputs for ``batch``."""
    n = batch.shape[0]
    means = batch.astype(np.float64).reshape(n, -1).mean(axis=1)
    num = (np.arange(n) % keep + 1).astype(np.int32)[:, None]
    boxes = np.broadcast_to((means[:, None, None] * np.array([1, 2, 3, 4])).astype(np.float32), (n, keep, 4))
    scores = np.broadcast_to(means[:, None].astype(np.float32), (n, keep))
    classes = np.broadcast_to((np.arange(n) % 3).astype(np.int32)[:, None], (n, keep))
    return {
        "num_dets": num,
        "det_boxes": boxes.copy(),
        "det_scores": scores.copy(),
        "det_classes": classes.copy(),
    }


def make_fake_tensorrt(version: str = "10.3.0", api: str = "named") -> types.ModuleType:
    """A module object standing in for ``tensorrt`` (see the module docstring). ``api``: named | bindings."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.FAKE = True
    trt.builds = []  # every BuildRecord, for assertions
    trt.deserialized = []
    trt.plugins_initialised = 0

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    ILogger.Severity = Severity

    DataType = enum.Enum("DataType", [(k, i) for i, k in enumerate(_DTYPES)])
    TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    BuilderFlag = enum.Enum("BuilderFlag", ["FP16", "BF16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT"])
    MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM"])
    DeviceType = enum.Enum("DeviceType", ["GPU", "DLA"])

    class NetworkDefinitionCreationFlag(enum.IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    class ParserError:
        def __init__(self, desc: str, node: int, node_name: str, op: str) -> None:
            self._desc, self._node, self._name, self._op = desc, node, node_name, op

        def code(self) -> str:
            return "UNSUPPORTED_NODE"

        def desc(self) -> str:
            return self._desc

        def node(self) -> int:
            return self._node

        def node_name(self) -> str:
            return self._name

        def node_operator(self) -> str:
            return self._op

    class ITensor:
        def __init__(self, name: str, shape: Sequence[int], dtype: str) -> None:
            self.name = name
            self.shape = tuple(shape)
            self.dtype = DataType[dtype]

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: List[ITensor] = []
            self.outputs: List[ITensor] = []
            self.kind = "raw"

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> ITensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            self.network = network
            self.errors: List[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> ParserError:
            return self.errors[i]

        def parse(self, model: bytes) -> bool:
            if not bytes(model).startswith(ONNX_MAGIC):
                self.errors.append(
                    ParserError("No importer registered for op: FancyOp", 7, "/model.22/fancy", "FancyOp")
                )
                return False
            spec = json.loads(bytes(model)[len(ONNX_MAGIC) :])
            self.network.inputs = [ITensor(*t) for t in spec["inputs"]]
            self.network.outputs = [ITensor(*t) for t in spec["outputs"]]
            self.network.kind = spec["kind"]
            return True

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: Dict[str, Tuple[Tuple[int, ...], ...]] = {}

        def set_shape(self, name: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
            if not (all(a <= b <= c for a, b, c in zip(min, opt, max))):
                raise ValueError(f"fake tensorrt: profile min <= opt <= max violated: {min} {opt} {max}")
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: List[str] = []
            self.pools: Dict[str, int] = {}
            self.default_device_type = DeviceType.GPU
            self.DLA_core = -1
            self.profiles: List[IOptimizationProfile] = []
            self.calibration_profile: Optional[IOptimizationProfile] = None
            self.int8_calibrator: Any = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.pools[pool.name] = size

        def set_flag(self, flag: Any) -> None:
            self.flags.append(flag.name)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
            self.calibration_profile = profile
            return True

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
            image = network.inputs[0]
            dynamic = any(d < 0 for d in image.shape)
            profile = config.profiles[0].shapes.get(image.name) if config.profiles else None
            if dynamic and profile is None:
                self.logger.log(Severity.ERROR, "Network has dynamic or shape inputs, but no optimization profile")
                return None
            calibrated = 0
            if "INT8" in config.flags:
                calibrator = config.int8_calibrator
                if calibrator is None:
                    self.logger.log(Severity.ERROR, "INT8 requested without a calibrator")
                    return None
                if calibrator.read_calibration_cache() is None:
                    size = calibrator.get_batch_size()
                    calib_shape = config.calibration_profile.shapes[image.name][0] if dynamic else image.shape
                    if calib_shape[0] != size:
                        self.logger.log(Severity.ERROR, f"calibration batch {size} != profile {calib_shape}")
                        return None
                    nbytes = int(np.prod(calib_shape)) * 4
                    while True:
                        pointers = calibrator.get_batch([image.name])
                        if pointers is None:
                            break
                        device_view(pointers[0], nbytes)  # the batch really is in device memory
                        calibrated += 1
                    calibrator.write_calibration_cache(memoryview(f"FAKE-CALIB batches={calibrated}".encode()))
            record = {
                "version": trt.__version__,
                "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network.inputs],
                "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network.outputs],
                "kind": network.kind,
                "profile": [list(s) for s in profile] if profile else None,
                "flags": config.flags,
                "workspace": config.pools.get("WORKSPACE"),
                "device": config.default_device_type.name,
                "dla_core": config.DLA_core,
                "network_flags": network.flags,
                "calibrated_batches": calibrated,
            }
            trt.builds.append(record)
            return memoryview(ENGINE_MAGIC + json.dumps(record).encode())

    class _EngineBase:
        def __init__(self, record: Dict[str, Any]) -> None:
            self.record = record
            self.io = [(n, True, tuple(s), d) for n, s, d in record["inputs"]]
            self.io += [(n, False, tuple(s), d) for n, s, d in record["outputs"]]
            self.contexts: List[Any] = []

        def create_execution_context(self) -> Any:
            context = _CONTEXT(self)
            self.contexts.append(context)
            return context

    class _NamedEngine(_EngineBase):
        @property
        def num_io_tensors(self) -> int:
            return len(self.io)

        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def _find(self, name: str) -> Tuple[Any, ...]:
            for entry in self.io:
                if entry[0] == name:
                    return entry
            raise KeyError(name)

        def get_tensor_mode(self, name: str) -> Any:
            return TensorIOMode.INPUT if self._find(name)[1] else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return self._find(name)[2]

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType[self._find(name)[3]]

    class _BindingsEngine(_EngineBase):
        @property
        def num_bindings(self) -> int:
            return len(self.io)

        def get_binding_name(self, i: int) -> str:
            return self.io[i][0]

        def binding_is_input(self, i: int) -> bool:
            return self.io[i][1]

        def get_binding_shape(self, i: int) -> Tuple[int, ...]:
            return self.io[i][2]

        def get_binding_dtype(self, i: int) -> Any:
            return DataType[self.io[i][3]]

    class _Context:
        """Execution: checks every shape and address, then computes the known function per row."""

        def __init__(self, engine: _EngineBase) -> None:
            self.engine = engine
            self.shapes: Dict[str, Tuple[int, ...]] = {n: s for n, is_in, s, _ in engine.io if is_in}
            self.addresses: Dict[str, int] = {}
            self.executions = 0
            self.shape_calls = 0
            self.executed_shapes: List[Tuple[int, ...]] = []

        def _input(self) -> Tuple[str, Tuple[int, ...], str]:
            name, _, shape, dtype = self.engine.io[0]
            return name, shape, dtype

        def _set_shape(self, name: str, shape: Sequence[int]) -> bool:
            in_name, declared, _ = self._input()
            profile = self.engine.record["profile"]
            shape = tuple(int(d) for d in shape)
            if name != in_name or len(shape) != len(declared):
                return False
            if profile is not None and not all(lo <= d <= hi for lo, d, hi in zip(profile[0], shape, profile[2])):
                return False
            if profile is None and shape != declared:
                return False
            self.shapes[name] = shape
            self.shape_calls += 1
            return True

        def _output_shape(self, name: str) -> Tuple[int, ...]:
            in_name, _, _ = self._input()
            batch = self.shapes[in_name][0]
            for n, is_in, shape, _ in self.engine.io:
                if n == name and not is_in:
                    if batch < 0:
                        return shape  # input shape not specified yet: dims stay dynamic, like TensorRT
                    return tuple(batch if d < 0 else d for d in shape)
            raise KeyError(name)

        def _execute(self, pointers: Dict[str, int]) -> bool:
            in_name, _, in_dtype = self._input()
            shape = self.shapes[in_name]
            if any(d < 0 for d in shape) or set(pointers) != {n for n, *_ in self.engine.io}:
                return False  # TensorRT refuses to run with unspecified shapes or unbound tensors
            dtype = np.dtype(_DTYPES[in_dtype])
            count = int(np.prod(shape))
            batch = device_view(pointers[in_name], count * dtype.itemsize).view(dtype).reshape(shape)
            if self.engine.record["kind"] == "raw":
                out_name = self.engine.io[1][0]
                out_shape = self._output_shape(out_name)
                result = {out_name: raw_head_reference(batch, out_shape[1], out_shape[2])}
            else:
                keep = self._output_shape("det_scores")[1]
                result = nms_reference(batch, keep)
            for name, array in result.items():
                want = np.dtype(_DTYPES[{n: d for n, _, _, d in self.engine.io}[name]])
                data = np.ascontiguousarray(array.astype(want)).view(np.uint8).reshape(-1)
                device_view(pointers[name], data.nbytes)[:] = data
            self.executions += 1
            self.executed_shapes.append(shape)
            return True

    class _NamedContext(_Context):
        def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
            return self._set_shape(name, shape)

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            if name in self.shapes:
                return self.shapes[name]
            return self._output_shape(name)

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if not isinstance(memory, int) or int(memory) not in DEVICE:
                return False
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if not isinstance(stream_handle, int):
                raise TypeError("stream_handle must be an int")
            return self._execute(self.addresses)

    class _BindingsContext(_Context):
        def set_binding_shape(self, index: int, shape: Sequence[int]) -> bool:
            return self._set_shape(self.engine.io[index][0], shape)

        def get_binding_shape(self, index: int) -> Tuple[int, ...]:
            name = self.engine.io[index][0]
            return self.shapes[name] if name in self.shapes else self._output_shape(name)

        def execute_async_v2(self, bindings: Sequence[int], stream_handle: int) -> bool:
            if len(bindings) != len(self.engine.io):
                return False
            return self._execute({self.engine.io[i][0]: int(p) for i, p in enumerate(bindings)})

    engine_class = _NamedEngine if api == "named" else _BindingsEngine
    _CONTEXT = _NamedContext if api == "named" else _BindingsContext

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.DLA_core = -1

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            data = bytes(data)
            if not data.startswith(ENGINE_MAGIC):
                self.logger.log(Severity.ERROR, "Serialization assertion magicTagRead == kMAGIC_TAG failed")
                return None
            record = json.loads(data[len(ENGINE_MAGIC) :])
            if record["version"] != trt.__version__:
                self.logger.log(Severity.ERROR, "The engine plan file is not compatible with this version of TensorRT")
                return None
            trt.deserialized.append(record)
            return engine_class(record)

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
        trt.plugins_initialised += 1
        return True

    for name, value in dict(locals()).items():
        if name[:1].isupper() or name == "init_libnvinfer_plugins":
            setattr(trt, name, value)
    return trt
