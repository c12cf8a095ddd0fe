"""The ONNX wire-format reader on hand-encoded models (and on the shipped demo model where onnx exists)."""

from __future__ import annotations

import pytest

from agent.core.onnx_proto import OnnxParseError, parse_onnx_model
from tests.agent.onnx_builder import DEFAULT_METADATA, model_bytes


def test_reads_metadata_inputs_outputs():
    info = parse_onnx_model(
        model_bytes(
            inputs=[("images", (1, 3, 64, 64)), ("w", (3,))],
            outputs=[("output0", (1, 6, 84))],
            metadata=DEFAULT_METADATA,
            initializers=["w"],
        )
    )
    assert info.metadata == DEFAULT_METADATA
    assert [i.name for i in info.inputs] == ["images"]  # initializers listed as inputs are not inputs
    assert info.inputs[0].dims == (1, 3, 64, 64)
    assert info.inputs[0].dtype_name == "float32"
    assert info.outputs[0].dims == (1, 6, 84)
    assert info.opset == 17


def test_symbolic_dims_are_names():
    info = parse_onnx_model(model_bytes(inputs=[("images", ("batch", 3, "h", "w"))]))
    assert info.inputs[0].dims == ("batch", 3, "h", "w")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an ONNX model"),
        (b"\x08\x08", "not an ONNX model"),  # ir_version only, no graph
        (b"\x0a\xff\x01abc", "runs past the end"),
        (b"\x0b", "wire type"),  # group start: not protobuf we accept
        (b"\x80", "truncated varint"),
        (b"PK\x03\x04 this is a zip file", None),
    ],
)
def test_malformed_bytes_raise_parse_error(data, message):
    with pytest.raises(OnnxParseError, match=message):
        parse_onnx_model(data)


def test_graph_without_inputs_is_rejected():
    with pytest.raises(OnnxParseError, match="no input"):
        parse_onnx_model(model_bytes(inputs=[]))


def test_truncated_real_model_is_rejected(demo_model_path):
    data = demo_model_path.read_bytes()
    with pytest.raises(OnnxParseError):
        parse_onnx_model(data[: len(data) // 2])


def test_agrees_with_onnx_package_on_demo_model(demo_model_path):
    onnx = pytest.importorskip("onnx", reason="the onnx package is only in the trainer environment")
    ours = parse_onnx_model(demo_model_path.read_bytes())
    ref = onnx.load(str(demo_model_path))
    assert ours.metadata == {p.key: p.value for p in ref.metadata_props}
    assert [i.name for i in ours.inputs] == [i.name for i in ref.graph.input]
    ref_dims = tuple(d.dim_value for d in ref.graph.input[0].type.tensor_type.shape.dim)
    assert ours.inputs[0].dims == ref_dims
