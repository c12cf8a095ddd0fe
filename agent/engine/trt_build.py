"""Build a TensorRT engine from ONNX bytes, calibrate INT8, and cache the result on disk.

Pure parts (no TensorRT, no GPU; tested on any machine):

- :func:`parse_trt_version`, :func:`engine_cache_key`, :func:`engine_file_name`: what identifies an engine.
  An engine only runs on the TensorRT version and GPU it was built for, so the key covers the model bytes,
  precision, batch, TensorRT version, compute capability, GPU name, DLA core and the calibration data.
- :func:`profile_shapes`, :func:`build_options`, :func:`network_creation_flags`: what the builder is asked.
- :func:`format_parser_errors`: ONNX parser errors with the failing node, for the error message.
- :class:`CalibrationBatches`: calibration images letterboxed exactly like inference frames.
- :class:`EngineCache`: engine files in a directory, written atomically (temp file, fsync, ``os.replace``).

Thin TensorRT adapters (run only where TensorRT is installed):

- :func:`make_logger`, :func:`make_entropy_calibrator` (a ``trt.IInt8EntropyCalibrator2``, defined inside
  the factory so that this module imports without TensorRT), :func:`build_serialized_engine`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

from agent.engine.config import TensorRTConfig
from agent.engine.errors import BackendRuntimeError, BackendUnavailableError, InputError, ModelFileError

ENGINE_CACHE_FORMAT = 1
"""Bumped when the cache layout or the build recipe changes, so that old engines are rebuilt."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# -- versions and the cache key ---------------------------------------------------------------------------
def parse_trt_version(version: str) -> Tuple[int, int, int]:
    """``"10.3.0.26"`` -> ``(10, 3, 0)``; missing parts are 0.

    Raises:
        ValueError: not a dotted version starting with a number.
    """
    match = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if not match:
        raise ValueError(f"not a TensorRT version: {version!r}")
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return major, minor, patch


# The builder API this module drives: TensorRT 8.4 to 10.x (JetPack 5: 8.5, JetPack 6: 10.3).
MAX_BUILDER_MAJOR = 10


def check_builder_version(version: str) -> None:
    """Refuse a TensorRT whose builder this module cannot drive, before anything is allocated.

    TensorRT 11 builds strongly typed networks only: the FP16/INT8 builder flags, the INT8 calibrator and the
    calibration profile are gone, and a network's precision comes from the ONNX itself (FP16 weights, Q/DQ
    nodes). Building through the old calls there fails deep inside with an ``AttributeError``; this says why.

    Raises:
        BackendUnavailableError: TensorRT 11 or newer.
    """
    major = parse_trt_version(version)[0]
    if major > MAX_BUILDER_MAJOR:
        raise BackendUnavailableError(
            "tensorrt",
            f"TensorRT {version} cannot build engines through this agent: from TensorRT 11 on, networks are "
            f"strongly typed (no FP16/INT8 builder flags, no INT8 calibrator); engines are built with TensorRT "
            f"8.4 to {MAX_BUILDER_MAJOR}.x (the JetPack 5 and 6 releases)",
        )


def engine_cache_key(
    model_sha256: str,
    *,
    precision: str,
    max_batch: int,
    trt_version: str,
    compute_capability: Tuple[int, int],
    dla_core: Optional[int] = None,
    gpu_name: str = "",
    calibration_digest: str = "",
    imgsz: Tuple[int, int] = (0, 0),
) -> str:
    """The hex SHA-256 identifying one engine build. Every argument changes it.

    ``calibration_digest`` is the hash of the INT8 calibration cache (or image list) the engine was
    calibrated with, empty for FP32/FP16; ``imgsz`` matters for ONNX files with dynamic height/width.
    """
    facts = {
        "format": ENGINE_CACHE_FORMAT,
        "model": model_sha256,
        "precision": precision,
        "max_batch": int(max_batch),
        "tensorrt": trt_version,
        "sm": f"{int(compute_capability[0])}.{int(compute_capability[1])}",
        "gpu": gpu_name,
        "dla": -1 if dla_core is None else int(dla_core),
        "calibration": calibration_digest,
        "imgsz": [int(imgsz[0]), int(imgsz[1])],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode("utf-8")).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.")[:32] or "x"


def engine_file_name(
    model_sha256: str,
    *,
    precision: str,
    max_batch: int,
    trt_version: str,
    compute_capability: Tuple[int, int],
    key: str,
    dla_core: Optional[int] = None,
) -> str:
    """A readable, filesystem-safe file name for an engine: facts for humans, key prefix for uniqueness.

    >>> engine_file_name("ab" * 32, precision="int8", max_batch=4, trt_version="10.3.0",
    ...                  compute_capability=(8, 7), key="cd" * 32)
    'abababababab-int8-b4-trt10.3.0-sm87-gpu-cdcdcdcdcdcdcdcd.engine'
    """
    device = "gpu" if dla_core is None else f"dla{int(dla_core)}"
    return (
        f"{_slug(model_sha256[:12])}-{_slug(precision)}-b{int(max_batch)}-trt{_slug(trt_version)}"
        f"-sm{int(compute_capability[0])}{int(compute_capability[1])}-{device}-{_slug(key[:16])}.engine"
    )


# -- what the builder is asked ---------------------------------------------------------------------------
Shape = Tuple[int, ...]


def profile_shapes(
    input_shape: Sequence[int], max_batch: int, imgsz: Tuple[int, int]
) -> Optional[Tuple[Shape, Shape, Shape]]:
    """``(min, opt, max)`` for the optimisation profile of a ``(B, 3, H, W)`` input; None when static.

    A dynamic batch gets ``1 .. max_batch`` (optimised for ``max_batch``); dynamic height/width are pinned
    to the model's ``imgsz`` (the letterbox always produces that size).

    Raises:
        InputError: not a 4-D image input, or a static input whose height/width contradicts ``imgsz``.
    """
    shape = [int(d) for d in input_shape]
    if len(shape) != 4:
        raise InputError(f"the model input must be (B, 3, H, W), got {tuple(shape)}", got=tuple(shape))
    batch, channels, height, width = shape
    if channels not in (3, -1):
        raise InputError(f"the model input must have 3 channels, got {channels}", expected=3, got=channels)
    for name, dim, want in (("height", height, imgsz[0]), ("width", width, imgsz[1])):
        if dim > 0 and dim != want:
            raise InputError(f"model input {name} {dim} contradicts imgsz {tuple(imgsz)}", want, dim)
    if all(d > 0 for d in shape):
        return None
    h, w = int(imgsz[0]), int(imgsz[1])
    if batch > 0:
        return (batch, 3, h, w), (batch, 3, h, w), (batch, 3, h, w)
    return (1, 3, h, w), (max_batch, 3, h, w), (max_batch, 3, h, w)


def network_creation_flags(trt_major: int, explicit_batch_flag: int) -> int:
    """Flags for ``builder.create_network``: EXPLICIT_BATCH before TensorRT 10, nothing from 10 on.

    TensorRT 10 removed implicit batch; the EXPLICIT_BATCH flag is deprecated there and ignored.
    """
    return 0 if trt_major >= 10 else 1 << int(explicit_batch_flag)


@dataclass(frozen=True)
class BuildOptions:
    """What :func:`build_serialized_engine` asks of the builder (names of ``trt.BuilderFlag`` members)."""

    precision: str
    flags: Tuple[str, ...]
    workspace_bytes: int
    dla_core: Optional[int]
    profile: Optional[Tuple[Shape, Shape, Shape]]
    calibration_batch: int
    needs_calibrator: bool


def build_options(
    config: TensorRTConfig, input_shape: Sequence[int], imgsz: Tuple[int, int], has_calibration: bool
) -> BuildOptions:
    """Turn the config into builder settings.

    INT8 also enables FP16, so that layers without an INT8 kernel fall back to half rather than float.
    A DLA core implies GPU fallback for the layers the DLA cannot run.

    Raises:
        ModelFileError: INT8 without a calibration cache or calibration images.
        InputError: see :func:`profile_shapes`.
    """
    flags: List[str] = []
    if config.precision in ("fp16", "int8"):
        flags.append("FP16")
    if config.precision == "int8":
        if not has_calibration:
            raise ModelFileError(
                "precision int8 needs a calibration cache (calibration_cache) or calibration images "
                "(calibration_images); neither is usable"
            )
        flags.append("INT8")
    if config.dla_core is not None:
        flags.append("GPU_FALLBACK")
    profile = profile_shapes(input_shape, config.max_batch, imgsz)
    static_batch = int(input_shape[0]) if int(input_shape[0]) > 0 else None
    return BuildOptions(
        precision=config.precision,
        flags=tuple(flags),
        workspace_bytes=int(config.workspace_mb) << 20,
        dla_core=config.dla_core,
        profile=profile,
        calibration_batch=static_batch or config.max_batch,
        needs_calibrator=config.precision == "int8",
    )


def format_parser_errors(errors: Sequence[Any], limit: int = 5) -> str:
    """One line per ``trt.ParserError``: code, node index, and (TensorRT 10) node name and operator."""
    lines = []
    for error in list(errors)[:limit]:
        parts = []
        node = _call_or(error, "node", -1)
        name = _call_or(error, "node_name", "")  # TensorRT >= 10 only
        op = _call_or(error, "node_operator", "")
        if isinstance(node, int) and node >= 0:
            parts.append(f"node {node}")
        if name:
            parts.append(repr(name))
        if op:
            parts.append(f"({op})")
        where = " ".join(parts) or "model"
        lines.append(f"{where}: {_call_or(error, 'desc', str(error))} [{_call_or(error, 'code', '?')}]")
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return "; ".join(lines) or "no error details from the parser"


def _call_or(obj: Any, method: str, default: Any) -> Any:
    fn = getattr(obj, method, None)
    if not callable(fn):
        return default
    try:
        return fn()
    except Exception:  # an accessor missing in this TensorRT version's bindings
        return default


# -- calibration data ------------------------------------------------------------------------------------
def list_calibration_images(folder: Union[str, Path], limit: Optional[int] = None) -> List[Path]:
    """Image files directly in ``folder``, sorted by name (a stable order gives a stable digest).

    Raises:
        ModelFileError: the folder does not exist or cannot be listed.
    """
    folder = Path(folder)
    try:
        entries = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise ModelFileError(f"cannot list calibration images: {exc.strerror or exc}", folder) from exc
    return entries[:limit] if limit is not None else entries


def calibration_digest(cache_bytes: Optional[bytes], image_paths: Sequence[Path]) -> str:
    """What the INT8 engine was calibrated with: the cache's hash, else the image list's (names and sizes)."""
    if cache_bytes:
        return "cache:" + hashlib.sha256(cache_bytes).hexdigest()
    if image_paths:
        h = hashlib.sha256()
        for path in image_paths:
            try:
                size = path.stat().st_size
            except OSError:
                size = -1
            h.update(f"{path.name}\0{size}\n".encode())
        return "images:" + h.hexdigest()
    return ""


def _read_image(path: Path) -> Optional[NDArray[Any]]:
    import cv2

    image: Optional[NDArray[Any]] = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return image


Preprocess = Callable[[NDArray[Any], NDArray[Any]], Any]


class CalibrationBatches:
    """Calibration images as ``(batch_size, 3, H, W)`` float32 batches, letterboxed like inference.

    Unreadable or non-image files are skipped and counted (``skipped``, with reasons). The last batch, if
    short, is topped up by repeating its own images (TensorRT calibrates on full batches only). After the
    last batch, :meth:`next_batch` returns None, every time.

    Args:
        image_paths: files to read, in order.
        batch_size: images per batch (the engine's calibration batch).
        imgsz: model input ``(height, width)``.
        preprocess: ``f(frame_bgr, out_chw)`` that fills ``out_chw`` in place; default the inference
            letterbox (:func:`agent.engine.preprocess.letterbox_into`), so that calibration sees the same
            pixels as inference.
        read_image: ``f(path) -> BGR uint8 array or None``; default ``cv2.imread``.
    """

    def __init__(
        self,
        image_paths: Sequence[Union[str, Path]],
        batch_size: int,
        imgsz: Tuple[int, int],
        preprocess: Optional[Preprocess] = None,
        read_image: Optional[Callable[[Path], Optional[NDArray[Any]]]] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if preprocess is None:
            from agent.engine.preprocess import letterbox_into

            preprocess = letterbox_into
        self.paths = [Path(p) for p in image_paths]
        self.batch_size = int(batch_size)
        self.imgsz = (int(imgsz[0]), int(imgsz[1]))
        self.preprocess = preprocess
        self.read_image = read_image or _read_image
        self.buffer = np.zeros((self.batch_size, 3, *self.imgsz), dtype=np.float32)
        self.used = 0
        self.batches = 0
        self.skipped: List[Tuple[Path, str]] = []
        self._next = 0

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        return (self.batch_size, 3, self.imgsz[0], self.imgsz[1])

    def _load(self, path: Path, out: NDArray[Any]) -> bool:
        try:
            image = self.read_image(path)
        except Exception as exc:  # cv2 raises on some malformed files instead of returning None
            self.skipped.append((path, f"read failed: {exc}"))
            return False
        if image is None:
            self.skipped.append((path, "not a readable image"))
            return False
        try:
            self.preprocess(image, out)
        except InputError as exc:
            self.skipped.append((path, str(exc)))
            return False
        return True

    def next_batch(self) -> Optional[NDArray[Any]]:
        """The next full batch (a view of a reused buffer: copy it before the next call), or None."""
        filled = 0
        while filled < self.batch_size and self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            if self._load(path, self.buffer[filled]):
                filled += 1
        if filled == 0:
            return None
        for i in range(filled, self.batch_size):  # top up a short last batch with its own images
            self.buffer[i] = self.buffer[i % filled]
        self.used += filled
        self.batches += 1
        return self.buffer

    def __iter__(self) -> Iterator[NDArray[Any]]:
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            yield batch


# -- calibration cache files ------------------------------------------------------------------------------
@dataclass
class CalibrationCacheFiles:
    """Where the INT8 calibration cache is read from and written to.

    ``read_path`` is the cache shipped with the release (may be read-only); a cache made on the device
    by calibrating from images goes to ``write_path`` (in the engine cache directory), never over the
    shipped one.
    """

    read_path: Optional[Path]
    write_path: Path
    written: bool = field(default=False)

    def read_shipped(self) -> Optional[bytes]:
        """The release's cache alone (None when absent, unreadable or empty)."""
        return read_nonempty_file(self.read_path)

    def read(self) -> Optional[bytes]:
        """What TensorRT gets: the release's cache, else one made here earlier, else None (calibrate)."""
        return read_nonempty_file(self.read_path) or read_nonempty_file(self.write_path)

    def write(self, data: bytes) -> None:
        atomic_write(self.write_path, data)
        self.written = True


def read_nonempty_file(path: Optional[Path]) -> Optional[bytes]:
    """The file's bytes; None when ``path`` is None, or the file is absent, unreadable or empty."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data or None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with _suppress_oserror():
            Path(tmp).unlink()
        raise
    with _suppress_oserror():  # make the rename itself durable (power loss on a Jetson is routine)
        dir_fd = os.open(str(path.parent), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


# -- the engine cache -------------------------------------------------------------------------------------
class EngineCache:
    """Serialized engines in one directory, one file per :func:`engine_cache_key`."""

    def __init__(self, directory: Union[str, Path]) -> None:
        self.directory = Path(directory)

    def path(self, file_name: str) -> Path:
        return self.directory / file_name

    def load(self, file_name: str) -> Optional[bytes]:
        """The cached engine's bytes, or None when absent or unreadable."""
        try:
            data = self.path(file_name).read_bytes()
        except OSError:
            return None
        return data or None

    def store(self, file_name: str, engine: bytes, facts: Optional[Dict[str, object]] = None) -> Path:
        """Write the engine atomically, and ``facts`` beside it as ``<name>.json`` for people."""
        path = self.path(file_name)
        atomic_write(path, engine)
        if facts is not None:
            atomic_write(path.with_name(path.name + ".json"), json.dumps(facts, indent=2).encode("utf-8"))
        return path

    def discard(self, file_name: str) -> None:
        """Delete a cached engine that cannot be used (corrupt, or from another TensorRT build)."""
        for path in (self.path(file_name), self.path(file_name + ".json")):
            with _suppress_oserror():
                path.unlink()


# -- TensorRT adapters (need the tensorrt module) ----------------------------------------------------------
def make_logger(trt: Any, min_severity: str = "WARNING") -> Any:
    """A ``trt.ILogger`` that keeps the last errors (for exception messages) and forwards to logging."""
    import logging

    log = logging.getLogger("agent.engine.tensorrt")
    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []
            self.min_severity = getattr(severity, min_severity)

        def log(self, sev: Any, msg: str) -> None:
            if sev in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors = [*self.errors[-9:], str(msg)]
                log.error("tensorrt: %s", msg)
            elif sev == severity.WARNING:
                log.warning("tensorrt: %s", msg)
            elif int(sev) <= int(self.min_severity):
                log.info("tensorrt: %s", msg)

    return _Logger()


def make_entropy_calibrator(trt: Any, batches: CalibrationBatches, cache: CalibrationCacheFiles, cuda: Any) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` fed by ``batches`` and backed by the ``cache`` files.

    When the cache exists TensorRT reads it and never asks for batches; otherwise it pulls batches through
    ``get_batch`` until it gets None, then hands the new cache to ``write_calibration_cache``.
    ``cuda`` is an :class:`agent.engine.cuda_memory.CudaMemory`.
    """

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 trampolines need the explicit call
            self.batches = batches
            self.cache = cache
            self.device = cuda.device_alloc(int(np.prod(batches.shape)) * 4)
            self.stream = cuda.create_stream()

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: Sequence[str]) -> Optional[List[int]]:
            batch = self.batches.next_batch()
            if batch is None:
                return None
            with cuda.activated():
                cuda.htod_async(self.device, np.ascontiguousarray(batch), self.stream)
                cuda.synchronize(self.stream)
            return [self.device.ptr]

        def read_calibration_cache(self) -> Optional[bytes]:
            return self.cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            self.cache.write(bytes(data))

    return _EntropyCalibrator()


def build_serialized_engine(
    trt: Any,
    logger: Any,
    onnx_bytes: bytes,
    options: BuildOptions,
    *,
    calibrator: Any = None,
    source: str = "",
) -> bytes:
    """Parse the ONNX bytes and build a serialized engine. Blocking; minutes on a Jetson.

    Raises:
        ModelFileError: the ONNX parser rejects the model (message names the failing nodes).
        BackendRuntimeError: the builder fails (message carries TensorRT's last errors).
    """
    major = parse_trt_version(trt.__version__)[0]
    builder = trt.Builder(logger)
    flag = trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH if major < 10 else 0
    network = builder.create_network(network_creation_flags(major, int(flag)))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise ModelFileError(f"TensorRT cannot parse the ONNX model: {format_parser_errors(errors)}", source)
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    else:  # pragma: no cover - TensorRT < 8.4
        config.max_workspace_size = options.workspace_bytes
    for name in options.flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
    if options.profile is not None:
        image_input = network.get_input(0)
        profile = builder.create_optimization_profile()
        profile.set_shape(image_input.name, *options.profile)
        config.add_optimization_profile(profile)
        if options.needs_calibrator:
            # Calibration runs at one fixed shape: the calibration batch.
            calib_shape = (options.calibration_batch, *options.profile[2][1:])
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(image_input.name, calib_shape, calib_shape, calib_shape)
            config.set_calibration_profile(calib_profile)
    if options.needs_calibrator:
        config.int8_calibrator = calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(getattr(logger, "errors", [])[-3:]) or "see the TensorRT log"
        raise BackendRuntimeError(f"TensorRT failed to build the engine: {detail}")
    return bytes(serialized)
