"""The DFL softmax rewrite keeps the maths: original and rewritten graphs agree on the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trainer.export import head_nodes_to_keep_float  # noqa: E402
from trainer.graph_rewrite import GraphRewriteError, fuse_dfl_softmax  # noqa: E402

pytestmark = pytest.mark.trainer

REPO = Path(__file__).resolve().parents[2]
BINS, ANCHORS = 16, 50


def dfl_model(opset: int = 17, axis: int = 1, extra_consumer: bool = False) -> onnx.ModelProto:
    """Ultralytics' DFL as exported: (1, 64, A) -> Reshape -> Transpose -> Softmax -> Conv -> (1, 4, A)."""
    prefix = "/model.22/dfl/"
    weight = numpy_helper.from_array(np.arange(BINS, dtype=np.float32).reshape(1, BINS, 1, 1), "dfl.conv.weight")
    shape_in = numpy_helper.from_array(np.array([1, 4, BINS, ANCHORS], np.int64), prefix + "shape_in")
    shape_out = numpy_helper.from_array(np.array([1, 4, ANCHORS], np.int64), prefix + "shape_out")
    nodes = [
        helper.make_node("Reshape", ["x", prefix + "shape_in"], ["r"], prefix + "Reshape"),
        helper.make_node("Transpose", ["r"], ["t"], prefix + "Transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["t"], ["s"], prefix + "Softmax", axis=axis),
        helper.make_node("Conv", ["s", "dfl.conv.weight"], ["c"], prefix + "conv/Conv", kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["c", prefix + "shape_out"], ["y"], prefix + "Reshape_1"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, ANCHORS])]
    if extra_consumer:
        nodes.append(helper.make_node("Identity", ["s"], ["s_copy"], prefix + "Identity"))
        outputs.append(helper.make_tensor_value_info("s_copy", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "dfl",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4 * BINS, ANCHORS])],
        outputs,
        [weight, shape_in, shape_out],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("scale", [1.0, 30.0, 300.0])  # 300: exp() of the raw logits would overflow float32
def test_rewritten_dfl_matches_the_original(opset: int, scale: float) -> None:
    x = (np.random.default_rng(int(scale) + opset).standard_normal((1, 4 * BINS, ANCHORS)) * scale).astype(np.float32)
    original = dfl_model(opset)
    rewritten = dfl_model(opset)
    assert fuse_dfl_softmax(rewritten) is True
    onnx.checker.check_model(rewritten, full_check=True)
    assert "Softmax" not in {n.op_type for n in rewritten.graph.node}
    expected, got = run(original, x), run(rewritten, x)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_a_graph_without_a_dfl_softmax_is_left_alone() -> None:
    model = dfl_model()
    assert fuse_dfl_softmax(model) is True
    again = model.SerializeToString()
    assert fuse_dfl_softmax(model) is False  # idempotent: a second export pass changes nothing
    assert model.SerializeToString() == again


@pytest.mark.parametrize("kwargs", [{"axis": 2}, {"extra_consumer": True}])
def test_an_unexpected_dfl_shape_is_refused_not_guessed(kwargs) -> None:
    model = dfl_model(**kwargs)
    before = model.SerializeToString()
    with pytest.raises(GraphRewriteError):
        fuse_dfl_softmax(model)
    assert model.SerializeToString() == before


def test_new_nodes_stay_float_in_int8(tmp_path: Path) -> None:
    """The INT8 recipes keep the DFL float by its '/dfl/' name: the rewritten nodes must keep that name."""
    model = dfl_model()
    fuse_dfl_softmax(model)
    path = tmp_path / "dfl.onnx"
    onnx.save(model, str(path))
    names = {n.name for n in model.graph.node}
    for keep in ("decode", "tail", "head"):
        assert set(head_nodes_to_keep_float(path, keep)) == names


def test_the_shipped_demo_model_is_exported_with_the_rewrite() -> None:
    model = onnx.load(str(REPO / "models" / "demo" / "demo.onnx"))
    assert "Softmax" not in {n.op_type for n in model.graph.node}
    assert fuse_dfl_softmax(model) is False


def test_a_real_ultralytics_export_gives_the_same_outputs_after_the_rewrite(tmp_path: Path) -> None:
    """Ultralytics' own export of the demo weights, as is and rewritten, on a rendered frame."""
    import shutil

    from agent.engine.preprocess import letterbox_into
    from agent.synthetic import render_frame
    from trainer.offline import offline_environment

    weights = tmp_path / "demo.pt"
    shutil.copyfile(REPO / "models" / "demo" / "demo.pt", weights)
    with offline_environment():
        from ultralytics import YOLO

        exported = YOLO(str(weights), task="detect").export(format="onnx", imgsz=256, opset=17, simplify=True)
    original = onnx.load(str(exported))
    rewritten = onnx.load(str(exported))
    assert fuse_dfl_softmax(rewritten) is True
    x = np.empty((1, 3, 256, 256), np.float32)
    letterbox_into(render_frame("factory", 1000, 0, (256, 256)).image, x[0])
    expected, got = run(original, x), run(rewritten, x)
    np.testing.assert_allclose(got[:, :4], expected[:, :4], rtol=1e-5, atol=2e-3)  # boxes, input pixels
    np.testing.assert_allclose(got[:, 4:], expected[:, 4:], atol=1e-5)  # class scores: untouched path
