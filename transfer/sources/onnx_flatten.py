"""A dense layer's input order in an ONNX graph, read from the graph: the nodes between the
feature map and the Gemm/MatMul (Flatten, Reshape, Transpose, ...) run with onnx's reference
evaluator (numpy, no runtime) on an index-coded map. The map is taken as NCHW, the layout
torch exports."""

from __future__ import annotations

from typing import Any

import numpy as np

from transfer.flatten_order import HWC, FlattenOrder, NotEstablished, Order, permutation

_REARRANGING = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
# identity on the non-negative index code (Dropout at inference)
_TRANSPARENT = ("Relu", "Dropout", "Identity", "LeakyRelu")
# what a Reshape's shape may be computed from (torch writes Constant, Shape, Gather, Concat)
_SHAPE_OPS = ("Constant", "Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Slice", "Cast")


def onnx_dense_order(graph: Any, opsets: list[Any], dense: Any, hwc: HWC | None, features: int) -> Order:
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    producers = {output: node for node in graph.node for output in node.output}
    initializers = {t.name: t for t in graph.initializer}
    chain: list[Any] = []
    value = dense.input[0]
    while value in producers and producers[value].op_type in _REARRANGING + _TRANSPARENT:
        chain.append(producers[value])
        value = producers[value].input[0]
    if not any(n.op_type in _REARRANGING for n in chain):
        return None
    needed: list[Any] = []
    constants: dict[str, Any] = {}

    def add_inputs(node: Any, data: str) -> bool:
        for name in node.input[1:] if node in chain else node.input:
            if not name or name == data or name in constants:
                continue
            if name in initializers:
                constants[name] = initializers[name]
            elif name in producers and producers[name].op_type in _SHAPE_OPS:
                if producers[name] not in needed:
                    needed.append(producers[name])
                    if not add_inputs(producers[name], data):
                        return False
            else:
                return False
        return True

    if not all(add_inputs(node, value) for node in chain):
        return NotEstablished(f"the graph's nodes in front of '{dense.name}' depend on more than the flattened map")
    height, width, channels = hwc if hwc is not None else (1, 1, features)
    size = height * width * channels
    ordered = [n for n in graph.node if n in needed or n in chain]  # the graph's own order
    exact = size < 2**24  # every index exact in float32
    elem, dtype = (TensorProto.FLOAT, np.float32) if exact else (TensorProto.DOUBLE, np.float64)
    sub = helper.make_graph(ordered, "flatten_order",
                            [helper.make_tensor_value_info(value, elem, [1, channels, height, width])],
                            [helper.make_tensor_value_info(dense.input[0], elem, None)],
                            list(constants.values()))
    try:
        evaluator: Any = ReferenceEvaluator(helper.make_model(sub, opset_imports=opsets))
        coded = np.arange(size, dtype=dtype).reshape(1, channels, height, width)
        result = np.asarray(evaluator.run(None, {value: coded})[0])
    except Exception as exc:  # noqa: BLE001  (the reference evaluator raises many types: say why)
        return NotEstablished(f"the graph's nodes in front of '{dense.name}' do not run on a "
                              f"{channels}x{height}x{width} map ({type(exc).__name__}: {str(exc)[:160]})")
    positions = permutation(result, size)
    if positions is None:
        return NotEstablished(f"the graph's nodes in front of '{dense.name}' do not only reorder the map")
    to_hwc = np.arange(size).reshape(height, width, channels).transpose(2, 0, 1).reshape(-1)
    steps = ", ".join(n.op_type for n in chain if n.op_type in _REARRANGING)
    return FlattenOrder.of((height, width, channels), to_hwc[positions],
                           f"read from the ONNX graph ('{value}', taken as NCHW, then {steps})")
