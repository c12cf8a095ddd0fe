"""Hand-encode minimal ONNX ModelProto bytes for tests (no ``onnx`` package: it is absent on Python 3.8).

Only the fields :mod:`agent.core.onnx_proto` reads are written: ir_version, producer, opset, graph inputs,
outputs and initializer names, metadata_props. The graphs have no nodes: they exercise parsing and
metadata checks, not a runtime.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

Dim = Union[int, str]


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def value_info(name: str, dims: Sequence[Dim], elem_type: int = 1) -> bytes:
    shape = b"".join(
        field_bytes(1, field_varint(1, d) if isinstance(d, int) else field_bytes(2, d.encode())) for d in dims
    )
    tensor_type = field_varint(1, elem_type) + field_bytes(2, shape)
    return field_bytes(1, name.encode()) + field_bytes(2, field_bytes(1, tensor_type))


def model_bytes(
    inputs: Sequence[Tuple[str, Sequence[Dim]]] = (("images", (1, 3, 64, 64)),),
    outputs: Sequence[Tuple[str, Sequence[Dim]]] = (("output0", (1, 6, 84)),),
    metadata: Optional[Dict[str, str]] = None,
    initializers: Sequence[str] = (),
    opset: int = 17,
) -> bytes:
    graph = field_bytes(2, b"g")
    for name in initializers:
        graph += field_bytes(5, field_bytes(8, name.encode()))
    for name, dims in inputs:
        graph += field_bytes(11, value_info(name, dims))
    for name, dims in outputs:
        graph += field_bytes(12, value_info(name, dims))
    body = field_varint(1, 8) + field_bytes(2, b"tests")
    body += field_bytes(8, field_bytes(1, b"") + field_varint(2, opset))
    body += field_bytes(7, graph)
    for key, value in (metadata or {}).items():
        body += field_bytes(14, field_bytes(1, key.encode()) + field_bytes(2, value.encode()))
    return body


DEFAULT_METADATA = {"names": "{0: 'a', 1: 'b'}", "imgsz": "[64, 64]", "stride": "32", "task": "detect"}
