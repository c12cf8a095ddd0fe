"""TensorRT backend: pure parts for real, the hardware seam through a FAKE tensorrt and FAKE CUDA.

TensorRT, pycuda and cuda-python cannot run on this machine or in CI (no GPU). The pure functions (cache
key, binding plan, dtype map, builder options, calibration batching on real image files, the engine cache
on a real filesystem) are tested as they are. The end-to-end tests drive ``TensorRTBackend`` against
``fake_tensorrt``: they prove the wiring (calls, shapes, byte counts, cache behaviour, both TensorRT APIs,
both CUDA libraries), not TensorRT's behaviour.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest

from agent.core.decode import DecodeParams, OutputLayout, decode_outputs
from agent.core.model_meta import ModelMetadata
from agent.core.onnx_proto import OnnxModelInfo, TensorSpec
from agent.engine.config import TensorRTConfig
from agent.engine.cuda_memory import CudaPythonMemory, PycudaMemory, load_cuda_memory
from agent.engine.errors import (
    BackendRuntimeError,
    BackendUnavailableError,
    InputError,
    ModelFileError,
)
from agent.engine.model import LoadedModel
from agent.engine.preprocess import letterbox_into
from agent.engine.tensorrt import (
    TensorDesc,
    TensorRTBackend,
    plan_bindings,
    trt_dtype_name,
    trt_dtype_to_numpy,
)
from agent.engine.trt_build import (
    CalibrationBatches,
    CalibrationCacheFiles,
    EngineCache,
    atomic_write,
    build_options,
    calibration_digest,
    check_builder_version,
    engine_cache_key,
    engine_file_name,
    format_parser_errors,
    list_calibration_images,
    network_creation_flags,
    parse_trt_version,
    profile_shapes,
)

try:  # the fake lives beside this file; import it whether or not tests/ is a package
    from tests.agent.engine import fake_tensorrt as fake
except ImportError:  # pragma: no cover - depends on how pytest was started
    import fake_tensorrt as fake  # type: ignore[no-redef]

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)

# -- engine cache key -------------------------------------------------------------------------------------
BASE_KEY: Dict[str, Any] = {
    "model_sha256": "a" * 64,
    "precision": "int8",
    "max_batch": 4,
    "trt_version": "10.3.0",
    "compute_capability": (8, 7),
    "dla_core": None,
    "gpu_name": "Orin",
    "calibration_digest": "cache:1234",
    "imgsz": (640, 640),
}


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("model_sha256", "b" * 64),
        ("precision", "fp16"),
        ("max_batch", 8),
        ("trt_version", "8.6.2"),
        ("trt_version", "10.3.1"),
        ("compute_capability", (7, 2)),
        ("compute_capability", (8, 6)),
        ("dla_core", 0),
        ("gpu_name", "Xavier"),
        ("calibration_digest", "cache:5678"),
        ("imgsz", (640, 480)),
    ],
)
def test_cache_key_changes_with_each_input(field: str, other: Any) -> None:
    base = engine_cache_key(**BASE_KEY)
    assert engine_cache_key(**{**BASE_KEY, field: other}) != base


def test_cache_key_is_stable_and_dla_cores_differ() -> None:
    assert engine_cache_key(**BASE_KEY) == engine_cache_key(**dict(BASE_KEY))
    keys = {engine_cache_key(**{**BASE_KEY, "dla_core": core}) for core in (None, 0, 1)}
    assert len(keys) == 3


def test_engine_file_name_is_safe_and_readable() -> None:
    name = engine_file_name(
        "ab" * 32,
        precision="int8",
        max_batch=4,
        trt_version="10.3.0.26",
        compute_capability=(8, 7),
        key="cd" * 32,
    )
    assert name == "abababababab-int8-b4-trt10.3.0.26-sm87-gpu-cdcdcdcdcdcdcdcd.engine"
    hostile = engine_file_name(
        "../../etc/passwd" + "0" * 50,
        precision="fp16",
        max_batch=1,
        trt_version="10/../x",
        compute_capability=(7, 2),
        key="k" * 64,
        dla_core=1,
    )
    assert "/" not in hostile and hostile.startswith("etc-passwd") is False
    assert "-dla1-" in hostile and hostile.endswith(".engine")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.3.0.26", (10, 3, 0)),
        ("8.6.2", (8, 6, 2)),
        ("8.5", (8, 5, 0)),
        ("10", (10, 0, 0)),
        ("8.6.1.post1", (8, 6, 1)),
    ],
)
def test_parse_trt_version(text: str, want: Tuple[int, int, int]) -> None:
    assert parse_trt_version(text) == want


def test_parse_trt_version_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a TensorRT version"):
        parse_trt_version("unknown")


# -- builder options ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "want"),
    [
        ((1, 3, 640, 640), None),
        ((4, 3, 640, 640), None),
        ((-1, 3, 640, 640), ((1, 3, 640, 640), (4, 3, 640, 640), (4, 3, 640, 640))),
        ((-1, 3, -1, -1), ((1, 3, 640, 480), (4, 3, 640, 480), (4, 3, 640, 480))),
        ((2, 3, -1, -1), ((2, 3, 640, 480), (2, 3, 640, 480), (2, 3, 640, 480))),
    ],
)
def test_profile_shapes(shape: Tuple[int, ...], want: Any) -> None:
    imgsz = (640, 640) if -1 not in shape[2:] else (640, 480)
    assert profile_shapes(shape, 4, imgsz) == want


@pytest.mark.parametrize("shape", [(1, 3, 640), (1, 1, 640, 640), (1, 3, 320, 640)])
def test_profile_shapes_rejects_non_image_inputs(shape: Tuple[int, ...]) -> None:
    with pytest.raises(InputError):
        profile_shapes(shape, 4, (640, 640))


@pytest.mark.parametrize(("major", "want"), [(8, 1), (9, 1), (10, 0), (11, 0)])
def test_network_creation_flags(major: int, want: int) -> None:
    assert network_creation_flags(major, explicit_batch_flag=0) == want


@pytest.mark.parametrize(
    ("precision", "dla", "flags"),
    [
        ("fp32", None, ()),
        ("fp16", None, ("FP16",)),
        ("int8", None, ("FP16", "INT8")),
        ("fp16", 0, ("FP16", "GPU_FALLBACK")),
        ("int8", 1, ("FP16", "INT8", "GPU_FALLBACK")),
    ],
)
def test_build_options_flags(precision: str, dla: Optional[int], flags: Tuple[str, ...]) -> None:
    config = TensorRTConfig(precision=precision, dla_core=dla, workspace_mb=256, max_batch=8)
    options = build_options(config, (-1, 3, 320, 320), (320, 320), has_calibration=True)
    assert options.flags == flags
    assert options.workspace_bytes == 256 * 1024 * 1024
    assert options.dla_core == dla
    assert options.profile == ((1, 3, 320, 320), (8, 3, 320, 320), (8, 3, 320, 320))
    assert options.calibration_batch == 8
    assert options.needs_calibrator == (precision == "int8")


def test_build_options_static_batch_calibrates_at_that_batch() -> None:
    options = build_options(TensorRTConfig(max_batch=8), (1, 3, 320, 320), (320, 320), has_calibration=True)
    assert options.profile is None and options.calibration_batch == 1


def test_int8_without_calibration_is_a_clear_error() -> None:
    with pytest.raises(ModelFileError, match=r"needs a calibration cache \(calibration_cache\) or"):
        build_options(TensorRTConfig(precision="int8"), (1, 3, 320, 320), (320, 320), has_calibration=False)


class _Trt8ParserError:
    """A TensorRT 8 ParserError: no node_name / node_operator accessors."""

    def code(self) -> str:
        return "INVALID_NODE"

    def desc(self) -> str:
        return "Assertion failed: axis >= 0"

    def node(self) -> int:
        return 12


def test_format_parser_errors_names_nodes() -> None:
    trt = fake.make_fake_tensorrt()
    parser = trt.OnnxParser(trt.Builder(None).create_network(0), None)
    assert parser.parse(b"not onnx") is False
    text = format_parser_errors([parser.get_error(0), _Trt8ParserError()])
    assert "node 7 '/model.22/fancy' (FancyOp): No importer registered for op: FancyOp [UNSUPPORTED_NODE]" in text
    assert "node 12: Assertion failed: axis >= 0 [INVALID_NODE]" in text
    assert "and 2 more" in format_parser_errors([_Trt8ParserError()] * 7, limit=5)


# -- dtypes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("FLOAT", np.float32),
        ("HALF", np.float16),
        ("INT8", np.int8),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
    ],
)
def test_trt_dtype_to_numpy(name: str, want: Any) -> None:
    assert trt_dtype_to_numpy(name) == np.dtype(want)


@pytest.mark.parametrize("name", ["BF16", "FP8", "INT4", "FP4"])
def test_unsupported_trt_dtypes_are_model_errors(name: str) -> None:
    with pytest.raises(ModelFileError, match=f"type {name} is not supported"):
        trt_dtype_to_numpy(name)


def test_trt_dtype_name_from_enum_and_str() -> None:
    trt = fake.make_fake_tensorrt()
    assert trt_dtype_name(trt.DataType.HALF) == "HALF"

    class PybindLike:  # pybind11 enums print as "DataType.FLOAT"
        def __str__(self) -> str:
            return "DataType.FLOAT"

    assert trt_dtype_name(PybindLike()) == "FLOAT"


# -- binding plan ----------------------------------------------------------------------------------------
def test_plan_static_batch_one() -> None:
    plan = plan_bindings(
        [TensorDesc("images", True, (1, 3, 640, 640), F32), TensorDesc("output0", False, (1, 84, 8400), F32)],
        max_batch=4,
        imgsz=(640, 640),
    )
    assert not plan.dynamic_batch and plan.max_batch == 1
    assert plan.input.nbytes == 3 * 640 * 640 * 4
    assert plan.outputs[0].nbytes == 84 * 8400 * 4
    assert plan.output_shapes_for(1) == [(1, 84, 8400)]
    assert plan.order == ("images", "output0")
    with pytest.raises(InputError):
        plan.input_shape_for(2)


def test_plan_dynamic_batch_sizes_for_max_and_resolves_n() -> None:
    plan = plan_bindings(
        [
            TensorDesc("images", True, (-1, 3, 320, 320), F32),
            TensorDesc("output0", False, (-1, 6, 2100), F32),
        ],
        max_batch=8,
        imgsz=(320, 320),
    )
    assert plan.dynamic_batch and plan.max_batch == 8
    assert plan.input.max_shape == (8, 3, 320, 320)
    assert plan.input_shape_for(3) == (3, 3, 320, 320)
    assert plan.output_shapes_for(3) == [(3, 6, 2100)]
    assert plan.outputs[0].nbytes_for(3) == 3 * 6 * 2100 * 4
    for bad in (0, 9):
        with pytest.raises(InputError):
            plan.input_shape_for(bad)


def test_plan_dynamic_hw_uses_imgsz_and_context_resolved_outputs() -> None:
    tensors = [
        TensorDesc("images", True, (-1, 3, -1, -1), F32),
        TensorDesc("output0", False, (-1, 6, -1), F32),
    ]
    with pytest.raises(ModelFileError, match="only the batch may be dynamic"):
        plan_bindings(tensors, 2, (256, 320))
    plan = plan_bindings(tensors, 2, (256, 320), resolved_output_shapes={"output0": (2, 6, 1680)})
    assert plan.input.max_shape == (2, 3, 256, 320)
    assert plan.outputs[0].max_shape == (2, 6, 1680)
    assert plan.output_shapes_for(1) == [(1, 6, 1680)]


def test_plan_efficient_nms_keeps_engine_order_and_dtypes() -> None:
    tensors = [
        TensorDesc("images", True, (-1, 3, 640, 640), F32),
        TensorDesc("num_dets", False, (-1, 1), I32),
        TensorDesc("det_boxes", False, (-1, 100, 4), F32),
        TensorDesc("det_scores", False, (-1, 100), F32),
        TensorDesc("det_classes", False, (-1, 100), I32),
    ]
    plan = plan_bindings(tensors, 4, (640, 640))
    assert plan.output_names == ["num_dets", "det_boxes", "det_scores", "det_classes"]
    assert [o.dtype for o in plan.outputs] == [I32, F32, F32, I32]
    assert [o.nbytes for o in plan.outputs] == [4 * 4, 4 * 100 * 4 * 4, 4 * 100 * 4, 4 * 100 * 4]
    assert [o.index for o in plan.outputs] == [1, 2, 3, 4]
    assert plan.output_shapes_for(2) == [(2, 1), (2, 100, 4), (2, 100), (2, 100)]


def test_plan_input_not_first_in_engine_order() -> None:
    plan = plan_bindings(
        [TensorDesc("output0", False, (2, 6, 10), F32), TensorDesc("images", True, (2, 3, 32, 32), F32)],
        8,
        (32, 32),
    )
    assert plan.input.index == 1 and plan.outputs[0].index == 0 and plan.max_batch == 2
    assert plan.outputs[0].batched and plan.output_shapes_for(1) == [(1, 6, 10)]


@pytest.mark.parametrize(
    ("tensors", "match"),
    [
        ([TensorDesc("a", True, (1, 3, 8, 8), F32), TensorDesc("b", True, (1, 3, 8, 8), F32)], "has 2"),
        ([TensorDesc("a", True, (1, 3, 8, 8), F32)], "no outputs"),
        ([TensorDesc("a", True, (1, 3, 8), F32), TensorDesc("o", False, (1, 4), F32)], r"\(B, 3, H, W\)"),
        (
            [TensorDesc("a", True, (-1, 3, 8, 8), F32), TensorDesc("o", False, (-1, -1, 4), F32)],
            "data-dependent",
        ),
    ],
)
def test_plan_rejects_engines_that_are_not_detectors(tensors: List[TensorDesc], match: str) -> None:
    with pytest.raises(ModelFileError, match=match):
        plan_bindings(tensors, 4, (8, 8))


# -- calibration batching on real image files --------------------------------------------------------------
def _write_images(folder: Path, sizes: Sequence[Tuple[int, int]]) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i:02d}.png"
        assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_calibration_batches_letterbox_like_inference_and_skip_bad_files(tmp_path: Path) -> None:
    good = _write_images(tmp_path / "calib", [(48, 64), (64, 48), (32, 32)])
    (tmp_path / "calib" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "calib" / "notes.txt").write_text("not an image")
    paths = list_calibration_images(tmp_path / "calib")
    assert [p.name for p in paths] == ["broken.png", "img00.png", "img01.png", "img02.png"]

    batches = CalibrationBatches(paths, batch_size=2, imgsz=(32, 32))
    first = batches.next_batch()
    assert first is not None and first.shape == (2, 3, 32, 32) and first.dtype == np.float32
    expected = np.empty((3, 3, 32, 32), dtype=np.float32)
    for i, path in enumerate(good):
        letterbox_into(cv2.imread(str(path)), expected[i])
    np.testing.assert_array_equal(first, expected[:2])  # broken.png skipped, the next two fill the batch
    second = batches.next_batch()
    assert second is not None
    np.testing.assert_array_equal(second[0], expected[2])
    np.testing.assert_array_equal(second[1], expected[2])  # short last batch topped up with its own image
    assert batches.next_batch() is None and batches.next_batch() is None  # stops cleanly, and stays stopped
    assert batches.used == 3 and batches.batches == 2
    assert [(p.name, reason) for p, reason in batches.skipped] == [("broken.png", "not a readable image")]


def test_calibration_batches_with_no_readable_image(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"nope")
    batches = CalibrationBatches([tmp_path / "x.jpg", tmp_path / "missing.png"], 4, (16, 16))
    assert list(batches) == []
    assert len(batches.skipped) == 2


def test_list_calibration_images_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot list calibration images"):
        list_calibration_images(tmp_path / "nope")


def test_calibration_digest(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [(8, 8), (8, 8)])
    assert calibration_digest(None, []) == ""
    assert calibration_digest(b"cache", paths).startswith("cache:")
    by_images = calibration_digest(None, paths)
    assert by_images.startswith("images:") and by_images != calibration_digest(None, paths[:1])


def test_calibration_cache_files_never_overwrite_the_shipped_cache(tmp_path: Path) -> None:
    shipped = tmp_path / "release" / "calib.cache"
    files = CalibrationCacheFiles(read_path=shipped, write_path=tmp_path / "engines" / "x.calib")
    assert files.read() is None and files.read_shipped() is None
    files.write(b"made on device")
    assert files.read() == b"made on device" and not shipped.exists() and files.read_shipped() is None
    shipped.parent.mkdir()
    shipped.write_bytes(b"shipped")
    assert files.read() == b"shipped" == files.read_shipped()


# -- engine cache on a real filesystem ---------------------------------------------------------------------
def test_engine_cache_store_load_discard(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "engines")
    assert cache.load("m.engine") is None
    path = cache.store("m.engine", b"plan", {"tensorrt": "10.3.0"})
    assert path.read_bytes() == b"plan" and cache.load("m.engine") == b"plan"
    assert json.loads((tmp_path / "engines" / "m.engine.json").read_text()) == {"tensorrt": "10.3.0"}
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [
        "m.engine",
        "m.engine.json",
    ]  # no temp left
    cache.discard("m.engine")
    assert list((tmp_path / "engines").iterdir()) == []
    cache.discard("m.engine")  # idempotent


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "e.engine"
    target.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("agent.engine.trt_build.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new and longer")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["e.engine"]


# -- runtime availability ----------------------------------------------------------------------------------
def _model(
    tmp_path: Path, data: bytes, dims: Tuple[Any, ...], imgsz: Tuple[int, int], layout: OutputLayout
) -> LoadedModel:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    info = OnnxModelInfo(metadata={}, inputs=(TensorSpec("images", 1, dims),), outputs=(), opset=17, producer="fake")
    meta = ModelMetadata(names={0: "a", 1: "b"}, imgsz=imgsz)
    return LoadedModel(path, data, hashlib.sha256(data).hexdigest(), info, meta, layout)


def test_backend_without_tensorrt_is_unavailable_with_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    model = _model(tmp_path, b"x", (1, 3, 32, 32), (32, 32), OutputLayout.RAW)
    with pytest.raises(BackendUnavailableError) as info:
        TensorRTBackend(model, TensorRTConfig(engine_cache_dir=str(tmp_path)))
    assert info.value.backend == "tensorrt"
    assert "cannot import tensorrt" in info.value.reason and "JetPack" in info.value.reason


def test_no_cuda_library_is_unavailable_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailableError) as info:
        load_cuda_memory()
    assert "pycuda:" in info.value.reason and "cuda-python:" in info.value.reason


def test_load_cuda_memory_prefers_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = fake.FakePycudaDriver()
    package = type(sys)("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    memory = load_cuda_memory()
    assert isinstance(memory, PycudaMemory) and memory.compute_capability() == (8, 7)
    memory.close()
    assert driver.detached


# -- end to end against the FAKE tensorrt ------------------------------------------------------------------
RAW_OUT = (6, 10)  # channels (4 + nc), anchors


@pytest.fixture(params=["named", "bindings"])
def trt(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The FAKE tensorrt module in sys.modules: TensorRT 10 named tensors, or TensorRT 8.4 bindings."""
    module = fake.make_fake_tensorrt("10.3.0" if request.param == "named" else "8.4.1", api=request.param)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture(params=["pycuda", "cuda-python"])
def cuda_factory(request: pytest.FixtureRequest) -> Any:
    """Makes the real CUDA adapters over FAKE drivers (fresh per backend, as the backend closes its own)."""

    def make() -> Any:
        if request.param == "pycuda":
            return PycudaMemory(fake.FakePycudaDriver())
        return CudaPythonMemory(fake.FakeCudart())

    return make


def _raw_model(tmp_path: Path, batch: int = -1, imgsz: Tuple[int, int] = (32, 32)) -> LoadedModel:
    data = fake.fake_onnx([("images", [batch, 3, *imgsz], "FLOAT")], [("output0", [batch, *RAW_OUT], "FLOAT")])
    dims = ("batch" if batch < 0 else batch, 3, *imgsz)
    return _model(tmp_path, data, dims, imgsz, OutputLayout.RAW)


def _frames(n: int, imgsz: Tuple[int, int] = (32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, *imgsz), dtype=np.float32)


def _config(tmp_path: Path, **overrides: Any) -> TensorRTConfig:
    values: Dict[str, Any] = {
        "precision": "fp16",
        "engine_cache_dir": str(tmp_path / "engines"),
        "max_batch": 4,
    }
    values.update(overrides)
    return TensorRTConfig(**values)


def test_build_cache_and_run_end_to_end(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    model = _raw_model(tmp_path)
    before = set(fake.DEVICE)
    backend = TensorRTBackend(model, _config(tmp_path), cuda=cuda_factory())
    assert backend.engine_source == "built" and len(trt.builds) == 1
    build = trt.builds[0]
    assert build["flags"] == ["FP16"] and build["workspace"] == 1024 << 20
    assert build["profile"] == [[1, 3, 32, 32], [4, 3, 32, 32], [4, 3, 32, 32]]
    assert build["network_flags"] == (0 if trt.__version__.startswith("10") else 1)
    assert trt.plugins_initialised >= 1
    assert backend.engine_path.exists() and backend.engine_path.parent == tmp_path / "engines"
    facts = json.loads(backend.engine_path.with_name(backend.engine_path.name + ".json").read_text())
    assert facts["tensorrt"] == trt.__version__ and facts["model_sha256"] == model.sha256

    assert backend.input_shape == (-1, 3, 32, 32) and backend.max_batch == 4
    assert backend.input_dtype == np.float32 and backend.output_names == ["output0"]
    for n in (1, 3, 3, 4, 2):
        batch = _frames(n, seed=n)
        (out,) = backend.run(batch)
        assert out.shape == (n, *RAW_OUT)
        np.testing.assert_allclose(out, fake.raw_head_reference(batch, *RAW_OUT), rtol=1e-6)
    # TensorRT ran each call at that call's batch, not at the buffers' size
    assert backend._context.executed_shapes == [(n, 3, 32, 32) for n in (1, 3, 3, 4, 2)]
    backend.execute_bound()  # the benchmark's bare execution: the engine again at the bound shape, no copies
    assert backend._context.executed_shapes[-1] == (2, 3, 32, 32)
    described = backend.describe()
    assert described["io_api"] == ("named-tensors" if trt.__version__.startswith("10") else "bindings")
    assert described["engine_source"] == "built" and described["precision"] == "fp16"
    assert described["cuda_library"] in ("pycuda", "cuda-python")
    backend.close()
    backend.close()  # idempotent
    assert set(fake.DEVICE) == before  # every device buffer freed
    with pytest.raises(BackendRuntimeError, match="closed"):
        backend.run(_frames(1))
    with pytest.raises(BackendRuntimeError, match="closed"):
        backend.execute_bound()

    again = TensorRTBackend(model, _config(tmp_path), cuda=cuda_factory())
    assert again.engine_source == "cache" and len(trt.builds) == 1  # no second build
    np.testing.assert_allclose(again.run(_frames(2))[0], fake.raw_head_reference(_frames(2), *RAW_OUT), rtol=1e-6)
    again.close()


def test_run_rejects_bad_batches(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    backend = TensorRTBackend(_raw_model(tmp_path), _config(tmp_path, max_batch=2), cuda=cuda_factory())
    for bad in (
        _frames(3),
        np.zeros((0, 3, 32, 32), np.float32),
        np.zeros((1, 3, 16, 32), np.float32),
        np.zeros((3, 32, 32), np.float32),
        np.zeros((1, 1, 32, 32), np.float32),
    ):
        with pytest.raises(InputError):
            backend.run(bad)
    with pytest.raises(InputError, match="cannot become"):
        backend.run(np.zeros((1, 3, 32, 32), np.complex64))
    backend.run(_frames(2).astype(np.float64))  # same-kind casts are fine
    backend.close()


def test_static_batch_engine_returns_only_the_valid_rows(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    backend = TensorRTBackend(_raw_model(tmp_path, batch=2), _config(tmp_path), cuda=cuda_factory())
    assert backend.max_batch == 2 and backend.input_shape == (2, 3, 32, 32)
    assert trt.builds[0]["profile"] is None
    batch = _frames(1, seed=5)
    (out,) = backend.run(batch)
    assert out.shape == (1, *RAW_OUT)
    np.testing.assert_allclose(out, fake.raw_head_reference(batch, *RAW_OUT), rtol=1e-6)
    backend.close()


@pytest.mark.parametrize("damage", ["garbage", "other-version", "empty"])
def test_unusable_cached_engine_is_deleted_and_rebuilt(
    tmp_path: Path, trt: Any, cuda_factory: Any, damage: str
) -> None:
    model = _raw_model(tmp_path)
    first = TensorRTBackend(model, _config(tmp_path), cuda=cuda_factory())
    path = first.engine_path
    first.close()
    if damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "other-version":
        record = json.loads(path.read_bytes()[len(fake.ENGINE_MAGIC) :])
        record["version"] = "8.6.2"
        path.write_bytes(fake.ENGINE_MAGIC + json.dumps(record).encode())
    else:
        path.write_bytes(b"")
    second = TensorRTBackend(model, _config(tmp_path), cuda=cuda_factory())
    assert second.engine_source == ("rebuilt" if damage != "empty" else "built")
    assert len(trt.builds) == 2
    assert path.read_bytes().startswith(fake.ENGINE_MAGIC)
    assert json.loads(path.read_bytes()[len(fake.ENGINE_MAGIC) :])["version"] == trt.__version__
    second.run(_frames(1))
    second.close()


def test_efficient_nms_outputs_pass_through_by_name(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    keep = 5
    outputs = [  # deliberately not in the canonical order: the decoder must go by name
        ("det_boxes", [-1, keep, 4], "FLOAT"),
        ("num_dets", [-1, 1], "INT32"),
        ("det_classes", [-1, keep], "INT32"),
        ("det_scores", [-1, keep], "FLOAT"),
    ]
    data = fake.fake_onnx([("images", [-1, 3, 32, 32], "FLOAT")], outputs, kind="nms")
    model = _model(tmp_path, data, ("batch", 3, 32, 32), (32, 32), OutputLayout.EFFICIENT_NMS)
    backend = TensorRTBackend(model, _config(tmp_path), cuda=cuda_factory())
    assert backend.output_names == ["det_boxes", "num_dets", "det_classes", "det_scores"]
    batch = _frames(3, seed=11)
    results = backend.run(batch)
    want = fake.nms_reference(batch, keep)
    for name, array in zip(backend.output_names, results):
        assert array.dtype == want[name].dtype
        np.testing.assert_allclose(array, want[name], rtol=1e-6)
    detections = decode_outputs(OutputLayout.EFFICIENT_NMS, results, DecodeParams(conf=0.1), backend.output_names)
    assert [len(d.confidence) for d in detections] == [1, 2, 3]
    backend.close()


def test_dynamic_hw_model_is_pinned_to_imgsz(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    data = fake.fake_onnx([("images", [-1, 3, -1, -1], "FLOAT")], [("output0", [-1, 6, 10], "FLOAT")])
    model = _model(tmp_path, data, ("batch", 3, "height", "width"), (32, 48), OutputLayout.RAW)
    backend = TensorRTBackend(model, _config(tmp_path, max_batch=2), cuda=cuda_factory())
    assert trt.builds[0]["profile"] == [[1, 3, 32, 48], [2, 3, 32, 48], [2, 3, 32, 48]]
    assert backend.input_shape == (-1, 3, 32, 48)
    assert backend.run(_frames(2, (32, 48)))[0].shape == (2, 6, 10)
    backend.close()


def test_int8_calibrates_from_images_then_reuses_the_cache(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    _write_images(tmp_path / "calib", [(40, 30)] * 5)
    model = _raw_model(tmp_path)
    config = _config(tmp_path, precision="int8", calibration_images=str(tmp_path / "calib"), max_batch=2)
    backend = TensorRTBackend(model, config, cuda=cuda_factory())
    build = trt.builds[-1]
    assert build["flags"] == ["FP16", "INT8"] and build["calibrated_batches"] == 3  # 5 images, batches of 2
    (written,) = (tmp_path / "engines").glob(f"{model.sha256[:16]}-*.calib")
    assert written.read_bytes() == b"FAKE-CALIB batches=3"
    backend.close()

    # Next start, same config: the engine is found in the cache; no rebuild, no recalibration.
    again = TensorRTBackend(model, config, cuda=cuda_factory())
    assert again.engine_source == "cache" and len(trt.builds) == 1
    again.close()
    # The engine cache lost, the calibration made here survives: rebuilt without recalibrating.
    for engine in (tmp_path / "engines").glob("*.engine"):
        engine.unlink()
    rebuilt = TensorRTBackend(model, config, cuda=cuda_factory())
    assert len(trt.builds) == 2 and trt.builds[-1]["calibrated_batches"] == 0
    rebuilt.close()

    # A release that ships the cache: no images, another engine directory: calibration is read, not redone.
    shipped = tmp_path / "release.calib"
    shipped.write_bytes(written.read_bytes())
    config2 = _config(tmp_path, precision="int8", calibration_cache=str(shipped), engine_cache_dir=str(tmp_path / "e2"))
    second = TensorRTBackend(model, config2, cuda=cuda_factory())
    assert trt.builds[-1]["calibrated_batches"] == 0 and second.engine_source == "built"
    second.close()


def test_int8_without_calibration_source_fails_clearly(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    before = set(fake.DEVICE)
    with pytest.raises(ModelFileError, match="int8 needs a calibration cache"):
        TensorRTBackend(_raw_model(tmp_path), _config(tmp_path, precision="int8"), cuda=cuda_factory())
    assert set(fake.DEVICE) == before and not trt.builds


@pytest.mark.parametrize(
    "version, ok", [("8.4.1", True), ("8.5.2.2", True), ("10.3.0.26", True), ("10.13.3", True), ("11.0.0", False)]
)
def test_builder_versions(version: str, ok: bool) -> None:
    if ok:
        check_builder_version(version)
    else:
        with pytest.raises(BackendUnavailableError, match="strongly typed"):
            check_builder_version(version)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_11_is_refused_before_anything_is_built_or_allocated(
    tmp_path: Path, cuda_factory: Any, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """TensorRT 11 has no precision flags and no calibrator (the FAKE module still has them: the refusal must
    come from the version, before the first call that would fail on the real one)."""
    trt = fake.make_fake_tensorrt("11.4.0", api="named")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    before = set(fake.DEVICE)
    config = _config(tmp_path, precision=precision, calibration_images=str(tmp_path))
    with pytest.raises(BackendUnavailableError, match=r"TensorRT 11\.4\.0 cannot build engines"):
        TensorRTBackend(_raw_model(tmp_path), config, cuda=cuda_factory())
    assert set(fake.DEVICE) == before and not trt.builds


def test_unparseable_onnx_is_a_model_error_with_node(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    model = _model(
        tmp_path, b"\x08\x07 real onnx with an op TensorRT lacks", (1, 3, 32, 32), (32, 32), OutputLayout.RAW
    )
    with pytest.raises(ModelFileError, match=r"cannot parse the ONNX model: node 7 '/model.22/fancy' \(FancyOp\)"):
        TensorRTBackend(model, _config(tmp_path), cuda=cuda_factory())
    assert not (tmp_path / "engines").exists() or not list((tmp_path / "engines").glob("*.engine"))


def test_dla_core_builds_for_dla_with_gpu_fallback(tmp_path: Path, trt: Any, cuda_factory: Any) -> None:
    backend = TensorRTBackend(_raw_model(tmp_path), _config(tmp_path, dla_core=1), cuda=cuda_factory())
    build = trt.builds[-1]
    assert build["device"] == "DLA" and build["dla_core"] == 1 and "GPU_FALLBACK" in build["flags"]
    assert backend._runtime.DLA_core == 1
    assert "-dla1-" in backend.engine_path.name
    backend.close()


def test_cache_is_keyed_by_gpu(tmp_path: Path, trt: Any) -> None:
    model = _raw_model(tmp_path)
    orin = TensorRTBackend(model, _config(tmp_path), cuda=PycudaMemory(fake.FakePycudaDriver("Orin", (8, 7))))
    xavier = TensorRTBackend(model, _config(tmp_path), cuda=PycudaMemory(fake.FakePycudaDriver("Xavier", (7, 2))))
    assert orin.engine_path != xavier.engine_path and "sm72" in xavier.engine_path.name
    assert xavier.engine_source == "built" and len(trt.builds) == 2
    orin.close()
    xavier.close()


def test_cuda_python_errors_become_backend_errors(tmp_path: Path, trt: Any) -> None:
    cudart = fake.FakeCudart()
    backend = TensorRTBackend(_raw_model(tmp_path), _config(tmp_path), cuda=CudaPythonMemory(cudart))
    cudart.fail_next = "cudaMemcpyAsync"
    with pytest.raises(BackendRuntimeError, match="cudaMemcpyAsync failed"):
        backend.run(_frames(1))
    backend.run(_frames(1))  # the next call works again
    backend.close()
    assert sorted(cudart.destroyed) == sorted(cudart.streams) and not cudart.host


def test_pycuda_context_is_current_only_around_cuda_work(tmp_path: Path, trt: Any) -> None:
    driver = fake.FakePycudaDriver()
    backend = TensorRTBackend(_raw_model(tmp_path), _config(tmp_path), cuda=PycudaMemory(driver))
    assert driver.context_stack == []
    backend.run(_frames(2))
    assert driver.context_stack == []  # pushed and popped, so another thread may run next time
    backend.close()
    assert driver.detached and all(a.freed for a in driver.allocations)
