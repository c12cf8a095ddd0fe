"""``edge-trainer export``: the variants a release ships, each scored against FP32 on the holdout.

1. ONNX FP32, opset 17 (the newest TensorRT 8.6 parses), simplified, with Ultralytics' metadata plus ours
   (``edge_model_version``, the training data set) so the agent can check what it loads.
2. ONNX Runtime INT8 (QDQ), static post-training quantisation calibrated on target-domain images. The
   Detect head's decoding stays float: it concatenates pixel-scale boxes with 0-1 scores in one tensor,
   and a shared INT8 scale there wipes the scores out (see DESIGN.md, field notes).
   Both are written with the DFL softmax rewritten to cheaper ops of the same maths (graph_rewrite.py).
3. A TensorRT INT8 calibration cache, when TensorRT is importable (on a GPU build machine or a Jetson).
4. The calibration images themselves, so a device can calibrate on-device for its own TensorRT version.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from agent.engine.config import TensorRTConfig
from agent.engine.model import read_model
from agent.engine.preprocess import letterbox_into
from agent.engine.tensorrt import TensorRTBackend
from agent.imaging import read_image
from trainer.evaluate import evaluate
from trainer.graph_rewrite import fuse_dfl_softmax
from trainer.offline import offline_environment

ONNX_OPSET = 17


class ExportError(Exception):
    """Unusable export inputs."""


def export_onnx(
    weights: Path, out: Path, imgsz: int, version: str, extra_metadata: Optional[Dict[str, str]] = None
) -> Path:
    """Export ``weights`` (.pt) to an FP32 ONNX file at ``out`` with metadata."""
    import onnx  # noqa: PLC0415 (onnx: trainer extra only)

    if not weights.is_file():
        raise ExportError(f"weights not found: {weights}")
    # Ultralytics writes <stem>.onnx next to the weights, overwriting whatever is there: export from a private
    # copy so that a model already beside the weights (models/demo/demo.onnx next to demo.pt) is never touched.
    scratch = Path(tempfile.mkdtemp(prefix="edge-export-"))
    private = scratch / weights.name
    shutil.copyfile(weights, private)
    with offline_environment():
        from ultralytics import YOLO  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)

        yolo = YOLO(str(private), task="detect")
        produced = Path(
            yolo.export(
                format="onnx",
                imgsz=imgsz,
                opset=ONNX_OPSET,
                simplify=True,
                dynamic=False,
                half=False,
                batch=1,
                device="cpu",
                verbose=False,
            )
        )
    model = onnx.load(str(produced))
    fuse_dfl_softmax(model)  # same maths, 6 ms less per YOLOv8n-640 run on a CPU (trainer/graph_rewrite.py)
    meta = {"edge_model_version": version, **(extra_metadata or {})}
    existing = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        prop = existing.get(key) or model.metadata_props.add()
        prop.key, prop.value = key, str(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    shutil.rmtree(scratch, ignore_errors=True)
    return out


KEEP_FLOAT_RECIPES = ("decode", "tail", "head")
"""What of the Detect head stays float in the INT8 model, from least to most (see head_nodes_to_keep_float)."""


def head_nodes_to_keep_float(model_path: Path, keep: str = "decode") -> List[str]:
    """Nodes of the Detect head (the last ``/model.N/`` block of an Ultralytics export) to leave in float.

    ``keep="decode"``: its decoding after the branches' last convolutions: box/score concatenation (pixel
    boxes and 0-1 scores in one tensor: a shared INT8 scale wipes the scores out), anchors, sigmoid, and the
    DFL block, whose fixed 1x1 convolution integrates a softmax over 16 bins: quantising that softmax to
    uint8 (steps of 1/255) moves box edges, which cost 0.024 mAP50-95 on the demo model; in float the loss is
    0.002. The branches' learned convolutions and their SiLU activations are INT8.
    ``keep="tail"``: that, and the branches' SiLU activations (same accuracy, slower: each is a
    dequantise / float SiLU / quantise round trip). ``keep="head"``: the whole head, its convolutions too: no
    loss, much smaller speed-up. Measurements: docs/BENCHMARKS.md.
    """
    import onnx  # noqa: PLC0415 (onnx: trainer extra only)

    model = onnx.load(str(model_path), load_external_data=False)
    blocks = [int(m.group(1)) for m in (re.match(r"^/model\.(\d+)/", n.name) for n in model.graph.node) if m]
    if not blocks:
        raise ExportError(f"{model_path}: node names do not look like an Ultralytics export")
    head = f"/model.{max(blocks)}/"
    if keep not in KEEP_FLOAT_RECIPES:
        raise ExportError(f"keep must be one of {', '.join(KEEP_FLOAT_RECIPES)}, got {keep!r}")

    def stays_float(node: Any) -> bool:
        if not node.name.startswith(head):
            return False
        if keep == "head" or "/dfl/" in node.name:
            return True
        if keep == "decode" and "/act/" in node.name:
            return False  # the branches' SiLU activations, between two INT8 convolutions
        return bool(node.op_type != "Conv")

    return [n.name for n in model.graph.node if stays_float(n)]


class _CalibrationReader:
    """ONNX Runtime CalibrationDataReader over letterboxed images (the agent's own preprocessing)."""

    def __init__(self, images: Sequence[Path], imgsz: int, input_name: str) -> None:
        self._letterbox = letterbox_into
        self._read = read_image
        self._images = list(images)
        self._imgsz = imgsz
        self._input_name = input_name
        self._iter: Iterator[Path] = iter(self._images)
        self.done = 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        path = next(self._iter, None)
        if path is None:
            return None
        tensor = np.empty((1, 3, self._imgsz, self._imgsz), np.float32)
        self._letterbox(self._read(path), tensor[0])
        self.done += 1
        if self.done % 50 == 0:
            print(f"calibrate: {self.done}/{len(self._images)} images", file=sys.stderr)
        return {self._input_name: tensor}

    def rewind(self) -> None:
        self._iter = iter(self._images)


def quantize_int8(
    fp32: Path,
    out: Path,
    calibration_images: Sequence[Path],
    imgsz: int,
    method: str = "minmax",
    per_channel: bool = True,
    keep_float: str = "decode",
) -> Path:
    """Static INT8 QDQ quantisation with ONNX Runtime; ``keep_float`` part of the Detect head stays float."""
    import onnx  # noqa: PLC0415 (onnx: trainer extra only)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415 (onnxruntime.quantization imports onnx (trainer extra only))
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415 (onnxruntime.quantization imports onnx (trainer extra only))

    if not calibration_images:
        raise ExportError("no calibration images")
    prepared = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ExportError(f"calibration method must be one of {sorted(methods)}")
    quantize_static(
        str(prepared),
        str(out),
        _CalibrationReader(calibration_images, imgsz, input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[method],
        nodes_to_exclude=head_nodes_to_keep_float(prepared, keep_float),
        extra_options={"CalibMovingAverage": method == "minmax"} if method == "minmax" else {},
    )
    prepared.unlink(missing_ok=True)
    # quantize_static keeps metadata_props? Copy them over explicitly so the agent can read names/imgsz.
    src = onnx.load(str(fp32), load_external_data=False)
    dst = onnx.load(str(out))
    have = {p.key for p in dst.metadata_props}
    for prop in src.metadata_props:
        if prop.key not in have:
            new = dst.metadata_props.add()
            new.key, new.value = prop.key, prop.value
    precision = next((p for p in dst.metadata_props if p.key == "edge_precision"), None) or dst.metadata_props.add()
    precision.key, precision.value = "edge_precision", f"int8-qdq (float {keep_float})"
    onnx.save(dst, str(out))
    return out


def tensorrt_calibration_cache(fp32: Path, out: Path, calib_dir: Path) -> Optional[Path]:
    """Calibrate with TensorRT (when importable here) and copy its INT8 calibration cache to ``out``.

    Builds the INT8 engine through the agent's own backend (same preprocessing as on the device), so the
    cache matches what a Jetson would compute; returns None where TensorRT is absent (this CPU machine).
    """
    try:
        import tensorrt  # noqa: F401, PLC0415 (TensorRT: only on machines that have it)
    except ImportError:
        return None

    engines = out.parent / "engines"
    model = read_model(fp32)
    backend = TensorRTBackend(
        model, TensorRTConfig(precision="int8", engine_cache_dir=str(engines), calibration_images=str(calib_dir))
    )
    backend.close()
    made = sorted(engines.glob(f"{model.sha256[:16]}-*.calib"), key=lambda p: p.stat().st_mtime)
    if not made:
        return None
    shutil.copyfile(made[-1], out)
    return out


def pick_calibration_images(data_dirs: Sequence[Path], count: int, seed: int = 0) -> List[Path]:
    images: List[Path] = []
    for d in data_dirs:
        images += sorted(p for p in d.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not images:
        raise ExportError(f"no calibration images under {', '.join(map(str, data_dirs))}")
    rng = np.random.default_rng(seed)
    take = min(count, len(images))
    return [images[i] for i in sorted(rng.choice(len(images), size=take, replace=False))]


def export_all(
    weights: Path,
    out_dir: Path,
    imgsz: int,
    version: str,
    calib_dirs: Sequence[Path],
    calib_count: int,
    holdout: Optional[Path],
    name: str = "model",
    method: str = "minmax",
    training_data: str = "",
    keep_float: str = "decode",
) -> Dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fp32 = export_onnx(
        weights,
        out_dir / f"{name}.onnx",
        imgsz,
        version,
        {"edge_training_data": training_data} if training_data else None,
    )
    print(f"export: {fp32} ({fp32.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    images = pick_calibration_images(calib_dirs, calib_count)
    calib_dir = out_dir / "calibration"
    if calib_dir.exists():
        shutil.rmtree(calib_dir)
    calib_dir.mkdir()
    for i, img in enumerate(images):
        shutil.copyfile(img, calib_dir / f"{i:05d}{img.suffix.lower()}")
    # The same set as one archive: the release's `calibration_images` file (`edge-trainer release --model OUT`
    # picks up `model.onnx`, `model-int8.onnx` and this archive when exported with the default --name model).
    calib_tar = out_dir / "calibration-images.tar"
    with tarfile.open(calib_tar, "w") as tar:
        for member in sorted(calib_dir.iterdir()):
            tar.add(member, arcname=member.name)
    int8 = quantize_int8(fp32, out_dir / f"{name}-int8.onnx", images, imgsz, method=method, keep_float=keep_float)
    print(f"export: {int8} ({int8.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    trt_cache = tensorrt_calibration_cache(fp32, out_dir / f"{name}.trt-calib.cache", calib_dir)
    report: Dict[str, Any] = {
        "weights": str(weights),
        "version": version,
        "imgsz": imgsz,
        "opset": ONNX_OPSET,
        "calibration": {
            "images": len(images),
            "method": method,
            "folder": str(calib_dir),
            "int8_float_part": keep_float,
        },
        "files": {
            "calibration_images": str(calib_tar),
            "onnx_fp32": str(fp32),
            "onnx_int8": str(int8),
            "trt_calibration_cache": str(trt_cache) if trt_cache else None,
        },
        "tensorrt_cache_note": None
        if trt_cache
        else "TensorRT is not importable here: no calibration cache written; "
        "devices calibrate on-device from the calibration images",
    }
    if holdout is not None:
        scores = {}
        for key, path in (("onnx_fp32", fp32), ("onnx_int8", int8)):
            r = evaluate(path, holdout, "val")
            scores[key] = {"map50": r["map50"], "map50_95": r["map50_95"]}
        scores["int8_loss_map50_95"] = round(scores["onnx_fp32"]["map50_95"] - scores["onnx_int8"]["map50_95"], 5)
        report["accuracy"] = scores
    report["seconds"] = round(time.time() - started, 1)
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=2))
    return report
