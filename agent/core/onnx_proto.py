"""Read what the engine needs from an ONNX file's bytes, without the ``onnx`` package.

ONNX files are protobuf ``ModelProto`` messages. We walk the wire format for three things only: the
``metadata_props`` (Ultralytics stores class names, stride and image size there), and the graph's inputs
and outputs with their element types and shapes. The TensorRT path needs these too, on devices where
``onnx`` may not be installed. Anything malformed raises :class:`OnnxParseError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple, Union

Dim = Union[int, str, None]
"""A dimension: a fixed size, a symbolic name (dynamic), or None when the file says nothing."""


class OnnxParseError(ValueError):
    """The bytes are not a well-formed ONNX model."""


# ONNX TensorProto.DataType values we name in messages.
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, ONNX element type and dimensions."""

    name: str
    elem_type: int
    dims: Tuple[Dim, ...]

    @property
    def dtype_name(self) -> str:
        return ELEM_TYPES.get(self.elem_type, f"onnx-type-{self.elem_type}")


@dataclass(frozen=True)
class OnnxModelInfo:
    """What :func:`parse_onnx_model` extracts."""

    metadata: Dict[str, str]
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    opset: Optional[int]
    producer: str


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _read_varint(buf: memoryview, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxParseError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxParseError("varint too long")


def _fields(buf: memoryview) -> Iterator[Tuple[int, int, Union[int, memoryview]]]:
    """Yield ``(field_number, wire_type, value)``; length-delimited values are sub-views (no copy)."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise OnnxParseError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
            yield field, wire, value
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > end:
                raise OnnxParseError("length-delimited field runs past the end of its message")
            yield field, wire, buf[pos : pos + length]
            pos += length
        elif wire == _I64:
            if pos + 8 > end:
                raise OnnxParseError("truncated 64-bit field")
            yield field, wire, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        elif wire == _I32:
            if pos + 4 > end:
                raise OnnxParseError("truncated 32-bit field")
            yield field, wire, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        else:
            raise OnnxParseError(f"unsupported protobuf wire type {wire}")


def _text(value: Union[int, memoryview]) -> str:
    if not isinstance(value, memoryview):
        raise OnnxParseError("expected a string field")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OnnxParseError("string field is not UTF-8") from exc


def _msg(value: Union[int, memoryview]) -> memoryview:
    if not isinstance(value, memoryview):
        raise OnnxParseError("expected an embedded message")
    return value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_value_info(buf: memoryview) -> TensorSpec:
    name = ""
    elem_type = 0
    dims: List[Dim] = []
    for field, _, value in _fields(buf):
        if field == 1:
            name = _text(value)
        elif field == 2:  # TypeProto
            for tfield, _, tvalue in _fields(_msg(value)):
                if tfield != 1:  # only tensor_type
                    continue
                for ffield, _, fvalue in _fields(_msg(tvalue)):
                    if ffield == 1 and isinstance(fvalue, int):
                        elem_type = fvalue
                    elif ffield == 2:  # TensorShapeProto
                        for sfield, _, svalue in _fields(_msg(fvalue)):
                            if sfield != 1:
                                continue
                            dim: Dim = None
                            for dfield, _, dvalue in _fields(_msg(svalue)):
                                if dfield == 1 and isinstance(dvalue, int):
                                    dim = _signed64(dvalue)
                                elif dfield == 2:
                                    dim = _text(dvalue)
                            dims.append(dim)
    return TensorSpec(name=name, elem_type=elem_type, dims=tuple(dims))


def _tensor_name(buf: memoryview) -> str:
    for field, _, value in _fields(buf):
        if field == 8:
            return _text(value)
    return ""


def parse_onnx_model(data: Union[bytes, bytearray, memoryview]) -> OnnxModelInfo:
    """Parse an ONNX ``ModelProto`` from bytes.

    Raises:
        OnnxParseError: the bytes are not a well-formed ONNX model, or it has no graph or no input.
    """
    buf = memoryview(data)
    metadata: Dict[str, str] = {}
    graph: Optional[memoryview] = None
    opset: Optional[int] = None
    producer = ""
    ir_version: Optional[int] = None
    for field, wire, value in _fields(buf):
        if field == 1 and wire == _VARINT and isinstance(value, int):
            ir_version = value
        elif field == 2 and wire == _LEN:
            producer = _text(value)
        elif field == 7 and wire == _LEN:
            graph = _msg(value)
        elif field == 8 and wire == _LEN:  # OperatorSetIdProto: domain=1, version=2
            domain, version = "", None
            for ofield, _, ovalue in _fields(_msg(value)):
                if ofield == 1:
                    domain = _text(ovalue)
                elif ofield == 2 and isinstance(ovalue, int):
                    version = ovalue
            if domain in ("", "ai.onnx") and version is not None:
                opset = version
        elif field == 14 and wire == _LEN:  # StringStringEntryProto: key=1, value=2
            key, val = "", ""
            for efield, _, evalue in _fields(_msg(value)):
                if efield == 1:
                    key = _text(evalue)
                elif efield == 2:
                    val = _text(evalue)
            metadata[key] = val
    if ir_version is None or graph is None:
        raise OnnxParseError("not an ONNX model (no ir_version or no graph)")
    initializers: Set[str] = set()
    inputs: List[TensorSpec] = []
    outputs: List[TensorSpec] = []
    for field, wire, value in _fields(graph):
        if wire != _LEN:
            continue
        if field == 5:
            initializers.add(_tensor_name(_msg(value)))
        elif field == 11:
            inputs.append(_parse_value_info(_msg(value)))
        elif field == 12:
            outputs.append(_parse_value_info(_msg(value)))
    real_inputs = tuple(spec for spec in inputs if spec.name not in initializers)
    if not real_inputs:
        raise OnnxParseError("the graph has no input")
    if not outputs:
        raise OnnxParseError("the graph has no output")
    return OnnxModelInfo(metadata=metadata, inputs=real_inputs, outputs=tuple(outputs), opset=opset, producer=producer)
