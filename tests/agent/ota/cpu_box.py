"""A box on another CPU: run under ``qemu-x86_64 -cpu Haswell`` by test_golden_across_cpus.py.

``python cpu_box.py STATE_DIR CONFIG_JSON BUNDLE...`` installs the signed bundles in turn with the real
installer (TUF verification, the health check on the golden images, the switch) and prints one JSON object:
the CPU features NumPy sees, what ONNX Runtime's u8s8 integer kernel computes on the saturation probe
(tests/data/ota/u8s8-saturation.onnx: 64 products of 255 x 127; exact 2,072,640, saturated pair sums
1,048,544), each install's outcome, and the optimised run's detections on each golden image of the last.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))


def main(state_dir: Path, config_json: str, bundles: List[Path]) -> Dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    try:
        from numpy.core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy 2
        from numpy._core._multiarray_umath import __cpu_features__ as features

    from agent.core.release import parse_manifest
    from agent.engine import DecodeParams, Detector, OnnxRuntimeConfig
    from agent.ota import Installer, OtaConfig, OtaError
    from agent.ota.health import _decode_image

    out: Dict[str, Any] = {"cpu": {k: bool(features.get(k)) for k in ("AVX2", "AVX512F", "AVX512VNNI")}}
    probe = ort.InferenceSession(str(REPO / "tests/data/ota/u8s8-saturation.onnx"), providers=["CPUExecutionProvider"])
    out["u8s8_probe"] = int(probe.run(None, {"a": np.full((1, 64), 255, np.uint8)})[0][0, 0])
    config = OtaConfig.model_validate({**json.loads(config_json), "state_dir": str(state_dir)})
    installer = Installer(config)
    out["installs"] = []
    for bundle in bundles:
        try:
            record = installer.install_path(bundle)
            out["installs"].append({"installed": record.version})  # type: ignore[union-attr]
        except OtaError as exc:
            out["installs"].append(
                {"reason": exc.reason, "detail": exc.detail, "problems": getattr(exc, "problems", [])}
            )
    state = installer.state()
    out["bad"] = list(state.bad)
    if state.active is not None:
        slot = installer.slot_dir(state.active.slot)
        manifest = parse_manifest((slot / "release.json").read_bytes())
        detector = Detector.open(slot / state.active.model, OnnxRuntimeConfig(intra_op_threads=1))
        runs: List[List[List[float]]] = []
        for golden in manifest.health.golden:
            frame = _decode_image((slot / golden.target.path).read_bytes())
            d = detector.detect([frame], DecodeParams(conf=manifest.health.conf, iou=manifest.health.iou))[0]
            runs.append([[float(c), float(k), *map(float, b)] for b, c, k in zip(d.xyxy, d.confidence, d.class_id)])
        detector.close()
        out["optimised"] = runs
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), sys.argv[2], [Path(b) for b in sys.argv[3:]])))
