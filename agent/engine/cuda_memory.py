"""Pinned host buffers, device buffers and a stream, through pycuda or cuda-python.

The TensorRT backend needs very little from CUDA: page-locked host arrays, device allocations, one stream,
asynchronous copies both ways, and the GPU's name and compute capability (for the engine cache key). This
module gives those a small common interface, :class:`CudaMemory`, with two adapters:

- :class:`PycudaMemory` (``pycuda.driver``; JetPack images usually have it), preferred;
- :class:`CudaPythonMemory` (NVIDIA's ``cuda-python``: ``cuda.bindings.runtime``, or ``cuda.cudart`` in
  releases before 12.6), used when pycuda is absent.

Both share the device's *primary* context with TensorRT (which uses the CUDA runtime API), so engines and
buffers live in one context. Everything allocated through an adapter is tracked and freed by
:meth:`CudaMemory.close`.

Nothing here was executed on a GPU: this machine and CI have none. The adapters are written against the
documented APIs of pycuda 2022+ and cuda-python 11.8+/12.x; the backend's tests drive a fake that stands in
for the hardware (``tests/agent/engine/fake_tensorrt.py``).
"""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from agent.engine.errors import BackendRuntimeError, BackendUnavailableError


class DeviceBuffer:
    """One device allocation: its address (``ptr``) and size; :meth:`free` is idempotent."""

    def __init__(self, ptr: int, nbytes: int, release: Any, handle: Any = None) -> None:
        self.ptr = int(ptr)
        self.nbytes = int(nbytes)
        self._release = release
        self._handle = handle  # the library's own object (pycuda DeviceAllocation), kept alive with us

    def free(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


class CudaMemory:
    """The CUDA operations the TensorRT backend uses. Subclasses bind them to one library.

    Attributes:
        library: ``"pycuda"`` or ``"cuda-python"`` (for ``describe()`` and logs).
        device: CUDA device ordinal.
    """

    library = "none"

    def __init__(self, device: int = 0) -> None:
        self.device = device
        self._buffers: List[DeviceBuffer] = []
        self._host: List[NDArray[Any]] = []
        self._streams: List[Any] = []

    # -- what the backend calls -------------------------------------------------------------------------
    def device_name(self) -> str:
        raise NotImplementedError

    def compute_capability(self) -> Tuple[int, int]:
        raise NotImplementedError

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """Make this device's context current in the calling thread for the ``with`` block."""
        yield

    def pinned_empty(self, shape: Sequence[int], dtype: Any) -> NDArray[Any]:
        """A page-locked host array (fast, truly asynchronous copies)."""
        raise NotImplementedError

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        raise NotImplementedError

    def create_stream(self) -> Any:
        raise NotImplementedError

    def stream_handle(self, stream: Any) -> int:
        """The ``cudaStream_t`` as an int, what TensorRT's ``execute_async_*`` take."""
        raise NotImplementedError

    def htod_async(self, dst: DeviceBuffer, src: NDArray[Any], stream: Any) -> None:
        """Copy the C-contiguous host array ``src`` to the start of ``dst``."""
        raise NotImplementedError

    def dtoh_async(self, dst: NDArray[Any], src: DeviceBuffer, stream: Any) -> None:
        """Copy ``dst.nbytes`` bytes from the start of ``src`` into the C-contiguous host array ``dst``."""
        raise NotImplementedError

    def synchronize(self, stream: Any) -> None:
        raise NotImplementedError

    def _destroy_stream(self, stream: Any) -> None:
        """Release one stream (called by :meth:`close`)."""

    def _free_host(self, array: NDArray[Any]) -> None:
        """Release one pinned host array (called by :meth:`close`)."""

    def close(self) -> None:
        """Free every buffer and stream made through this object. Idempotent."""
        buffers, self._buffers = self._buffers, []
        hosts, self._host = self._host, []
        streams, self._streams = self._streams, []
        with self.activated():
            for buffer in buffers:
                buffer.free()
            for array in hosts:
                self._free_host(array)
            for stream in streams:
                self._destroy_stream(stream)


def _check_copy(dst_nbytes: int, src_nbytes: int, what: str) -> None:
    if src_nbytes > dst_nbytes:
        raise BackendRuntimeError(f"{what}: {src_nbytes} bytes do not fit a {dst_nbytes} byte buffer")


class PycudaMemory(CudaMemory):
    """:class:`CudaMemory` through ``pycuda.driver``, on the device's primary context."""

    library = "pycuda"

    def __init__(self, driver: Any, device: int = 0) -> None:
        super().__init__(device)
        self._cuda = driver
        driver.init()
        self._device = driver.Device(device)
        # The primary context is the one the CUDA runtime (and so TensorRT) uses: sharing it avoids
        # "invalid resource handle" errors from mixing contexts. pycuda.autoinit would make a new one.
        self._context = self._device.retain_primary_context()

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def device_name(self) -> str:
        return str(self._device.name())

    def compute_capability(self) -> Tuple[int, int]:
        major, minor = self._device.compute_capability()
        return int(major), int(minor)

    def pinned_empty(self, shape: Sequence[int], dtype: Any) -> NDArray[Any]:
        with self.activated():
            array: NDArray[Any] = self._cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))
        self._host.append(array)
        return array

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        with self.activated():
            allocation = self._cuda.mem_alloc(max(int(nbytes), 1))
        buffer = DeviceBuffer(int(allocation), nbytes, allocation.free, handle=allocation)
        self._buffers.append(buffer)
        return buffer

    def create_stream(self) -> Any:
        with self.activated():
            stream = self._cuda.Stream()
        self._streams.append(stream)
        return stream

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod_async(self, dst: DeviceBuffer, src: NDArray[Any], stream: Any) -> None:
        _check_copy(dst.nbytes, src.nbytes, "host to device copy")
        self._cuda.memcpy_htod_async(dst.ptr, src, stream)

    def dtoh_async(self, dst: NDArray[Any], src: DeviceBuffer, stream: Any) -> None:
        _check_copy(src.nbytes, dst.nbytes, "device to host copy")
        self._cuda.memcpy_dtoh_async(dst, src.ptr, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def close(self) -> None:
        super().close()
        if self._context is not None:
            self._context.detach()  # releases our reference on the primary context
            self._context = None

    def _free_host(self, array: NDArray[Any]) -> None:
        base = getattr(array, "base", None)
        free = getattr(base, "free", None)  # pycuda's HostAllocation; otherwise the GC frees it
        if callable(free):
            free()


class CudaPythonMemory(CudaMemory):
    """:class:`CudaMemory` through cuda-python's runtime bindings (every call returns ``(err, *values)``)."""

    library = "cuda-python"

    def __init__(self, cudart: Any, device: int = 0) -> None:
        super().__init__(device)
        self._rt = cudart
        self._pinned_ptrs: Dict[int, int] = {}  # id(array) -> host pointer, for cudaFreeHost
        self._call("cudaSetDevice", device)

    def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self._rt, name)(*args)
        err, values = result[0], result[1:]
        if err != self._rt.cudaError_t.cudaSuccess:
            raise BackendRuntimeError(f"CUDA {name} failed: {err}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        # The runtime API binds the device per thread: set it for threads other than the creating one.
        self._call("cudaSetDevice", self.device)
        yield

    def _properties(self) -> Any:
        return self._call("cudaGetDeviceProperties", self.device)

    def device_name(self) -> str:
        name = self._properties().name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
        return str(name)

    def compute_capability(self) -> Tuple[int, int]:
        props = self._properties()
        return int(props.major), int(props.minor)

    def pinned_empty(self, shape: Sequence[int], dtype: Any) -> NDArray[Any]:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = max(count * dt.itemsize, 1)
        ptr = int(self._call("cudaMallocHost", nbytes))
        raw = memoryview((ctypes.c_byte * nbytes).from_address(ptr)).cast("B")
        flat: NDArray[Any] = np.frombuffer(raw, dtype=np.uint8, count=count * dt.itemsize)
        array: NDArray[Any] = flat.view(dt).reshape(tuple(shape))
        self._pinned_ptrs[id(array)] = ptr
        self._host.append(array)
        return array

    def device_alloc(self, nbytes: int) -> DeviceBuffer:
        ptr = int(self._call("cudaMalloc", max(int(nbytes), 1)))
        buffer = DeviceBuffer(ptr, nbytes, lambda: self._call("cudaFree", ptr))
        self._buffers.append(buffer)
        return buffer

    def create_stream(self) -> Any:
        stream = self._call("cudaStreamCreate")
        self._streams.append(stream)
        return stream

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def htod_async(self, dst: DeviceBuffer, src: NDArray[Any], stream: Any) -> None:
        _check_copy(dst.nbytes, src.nbytes, "host to device copy")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dst.ptr, src.ctypes.data, src.nbytes, kind, stream)

    def dtoh_async(self, dst: NDArray[Any], src: DeviceBuffer, stream: Any) -> None:
        _check_copy(src.nbytes, dst.nbytes, "device to host copy")
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", dst.ctypes.data, src.ptr, dst.nbytes, kind, stream)

    def synchronize(self, stream: Any) -> None:
        self._call("cudaStreamSynchronize", stream)

    def _free_host(self, array: NDArray[Any]) -> None:
        ptr = self._pinned_ptrs.pop(id(array), None)
        if ptr is not None:
            self._call("cudaFreeHost", ptr)

    def _destroy_stream(self, stream: Any) -> None:
        self._call("cudaStreamDestroy", stream)


def _import_cudart() -> Any:
    try:  # cuda-python >= 12.6 moved the bindings; cuda.cudart still works there but warns
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def load_cuda_memory(device: int = 0, prefer: Optional[Sequence[str]] = None) -> CudaMemory:
    """The first usable CUDA library of ``prefer`` (default: pycuda, then cuda-python).

    Raises:
        BackendUnavailableError: none imports; the reason names each library's import error.
    """
    reasons: List[str] = []
    for library in prefer or ("pycuda", "cuda-python"):
        try:
            if library == "pycuda":
                from pycuda import driver

                return PycudaMemory(driver, device)
            if library == "cuda-python":
                return CudaPythonMemory(_import_cudart(), device)
            reasons.append(f"{library}: unknown CUDA library")
        except ImportError as exc:
            reasons.append(f"{library}: {exc}")
        except Exception as exc:  # a driver that imports but cannot initialise (no GPU, driver mismatch)
            reasons.append(f"{library}: cannot initialise CUDA device {device} ({exc})")
    raise BackendUnavailableError("tensorrt", "no CUDA library for device buffers; " + "; ".join(reasons))
