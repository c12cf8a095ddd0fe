"""Export-time rewrites of an Ultralytics ONNX graph: same maths, cheaper on the edge runtimes.

``fuse_dfl_softmax``: the Detect head's DFL turns 16 distance bins into one distance per box side as the
expected value of a softmax over the bins: ``Softmax(axis=1)`` on ``(1, 16, 4, A)`` followed by a fixed
1x1 convolution whose weights are ``0, 1, ..., 15``. ONNX Runtime computes a softmax over a non-last axis by
transposing, running 4 x A rows of only 16 values and transposing back: 6 ms of a 47-84 ms YOLOv8n-640 run
on this project's CPU, in FP32 and INT8 alike (the DFL stays float in INT8). Rewritten as

    m = ReduceMax(x, axis=1);  e = Exp(x - m);  y = Conv(e, w) / ReduceSum(e, axis=1)

(the normalisation moved after the convolution, which is linear), it is a handful of element-wise passes
and two small reductions. Results agree with the original to float rounding (tests compare both graphs on
the same inputs); TensorRT parses every op involved.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np


class GraphRewriteError(Exception):
    """The graph does not have the structure a rewrite expects."""


def _opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise GraphRewriteError("model has no default-domain opset")


def _consumers(graph: Any, name: str) -> List[Any]:
    return [n for n in graph.node if name in n.input]


def _dfl_pair(graph: Any) -> Optional[Tuple[Any, Any]]:
    """The DFL's (Softmax, Conv) nodes, or None when the graph has no DFL (e.g. already rewritten)."""
    for node in graph.node:
        if node.op_type != "Softmax" or "/dfl/" not in node.name:
            continue
        users = _consumers(graph, node.output[0])
        if len(users) != 1 or users[0].op_type != "Conv":
            raise GraphRewriteError(f"{node.name}: expected one Conv after the DFL softmax, got {users}")
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if axis != 1:
            raise GraphRewriteError(f"{node.name}: expected a softmax over axis 1, got {axis}")
        return node, users[0]
    return None


def fuse_dfl_softmax(model: Any) -> bool:
    """Rewrite the DFL softmax + convolution of ``model`` (an ``onnx.ModelProto``) in place.

    Returns False when the model has no DFL softmax (nothing to do); raises GraphRewriteError when it has
    one in an unexpected shape, rather than guess.
    """
    from onnx import helper, numpy_helper  # noqa: PLC0415 (onnx: trainer extra only)

    graph = model.graph
    pair = _dfl_pair(graph)
    if pair is None:
        return False
    softmax, conv = pair
    weights = {init.name: init for init in graph.initializer}
    if len(conv.input) < 2 or conv.input[1] not in weights or len(conv.input) > 2:
        raise GraphRewriteError(f"{conv.name}: expected a bias-free convolution with constant weights")
    kernel = numpy_helper.to_array(weights[conv.input[1]])
    if kernel.ndim != 4 or kernel.shape[0] != 1 or kernel.shape[2:] != (1, 1):
        raise GraphRewriteError(f"{conv.name}: expected a (1, bins, 1, 1) kernel, got {kernel.shape}")

    prefix = softmax.name.rsplit("/", 1)[0] + "/"  # keeps "/dfl/" in every new name: INT8 leaves them float
    x, y = softmax.input[0], conv.output[0]
    axes_name = prefix + "softmax_axes"
    graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), axes_name))  # ReduceSum's (13+)
    if _opset(model) >= 18:  # ReduceMax took its axes as an input from opset 18, an attribute before
        reduce_max = helper.make_node("ReduceMax", [x, axes_name], [prefix + "max"], prefix + "ReduceMax", keepdims=1)
    else:
        reduce_max = helper.make_node("ReduceMax", [x], [prefix + "max"], prefix + "ReduceMax", axes=[1], keepdims=1)
    new_nodes = [reduce_max]
    new_nodes += [
        helper.make_node("Sub", [x, prefix + "max"], [prefix + "shifted"], prefix + "Sub"),
        helper.make_node("Exp", [prefix + "shifted"], [prefix + "exp"], prefix + "Exp"),
        helper.make_node("ReduceSum", [prefix + "exp", axes_name], [prefix + "sum"], prefix + "ReduceSum", keepdims=1),
    ]
    conv.input[0] = prefix + "exp"
    conv.output[0] = prefix + "weighted"
    divide = helper.make_node("Div", [prefix + "weighted", prefix + "sum"], [y], prefix + "Div")

    nodes = list(graph.node)
    at = nodes.index(softmax)
    nodes.remove(softmax)
    nodes[at:at] = new_nodes  # topological order: the new nodes where the softmax was, the Div after the Conv
    nodes.insert(nodes.index(conv) + 1, divide)
    del graph.node[:]
    graph.node.extend(nodes)
    # Shapes recorded for the old intermediate tensors are now wrong or dangling: let tools infer them again.
    kept = [v for v in graph.value_info if v.name not in (softmax.output[0], y)]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return True
