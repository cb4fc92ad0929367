"""Dense layers: torch (out, in) <-> Keras (in, out), the inputs reordered between the two
flatten orders the plan read from the models (`transfer.dense_inputs`)."""

from __future__ import annotations

from typing import Any

from transfer import layout
from transfer.kinds.base import (
    Arrays,
    LayerKind,
    LayerParams,
    PairContext,
    bias,
    keras_is,
    ndim,
)


def _dense_to_keras(arrays: Arrays, context: PairContext) -> Arrays:
    if context.flatten is not None:
        return [layout.dense_torch_to_keras(arrays[0], context.flatten), *arrays[1:]]
    return [layout.permute_dense_inputs(arrays[0], context.rows, "torch").T, *arrays[1:]]


def _dense_to_torch(arrays: Arrays, context: PairContext) -> Arrays:
    if context.flatten is not None:
        return [layout.dense_keras_to_torch(arrays[0], context.flatten), *arrays[1:]]
    return [layout.permute_dense_inputs(arrays[0], context.rows, "keras").T, *arrays[1:]]


def _dense_probe(context: PairContext) -> tuple[int, ...]:
    """A plain flatten's map, or the input vector (the caller orders it for each side)."""
    return context.flatten if context.flatten else (context.keras_side.tensors[0].shape[0],)


def _dense_torch(F: Any, t: list[Any], x: Any, p: LayerParams) -> Any:
    if x.ndim == 4:  # torch flattens CHW; the caller gave NCHW
        x = x.flatten(1)
    return F.linear(x, t[0], bias(t))


def _dense_keras(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    y = ops.matmul(ops.reshape(x, (x.shape[0], -1)), a[0])  # Keras flattens HWC
    return y + a[1] if len(a) > 1 else y


DENSE = LayerKind(
    name="dense",
    torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
    to_keras=_dense_to_keras, to_torch=_dense_to_torch,
    describe_to_keras=layout.DENSE.describe(), describe_to_torch=layout.DENSE.inverse.describe(),
    keras_layer=keras_is("Dense"),
    onnx_ops=("Gemm", "MatMul"), onnx_node=lambda op, attribute, shapes: op == "Gemm" or len(shapes[0]) == 2,
    torch_module=lambda m, torch: isinstance(m, torch.nn.Linear),
    keras_file=lambda names, shapes: ndim(shapes, 2),
    torch_file=lambda shapes: len(shapes.get("weight", ())) == 2,
    probe_shape=_dense_probe,
    torch_op=_dense_torch, keras_op=_dense_keras, reads_flattened=True,
)
