"""Convolutions: plain and grouped (conv2d), transposed, depthwise, separable, and the 1x1 conv
<-> dense equivalence (pointwise)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from transfer import layout
from transfer.errors import IncompatibleWeightsError
from transfer.kinds.base import (
    Arrays,
    LayerKind,
    LayerParams,
    LayerSpec,
    PairContext,
    bias,
    keras_is,
    ndim,
    reversible,
    with_bias,
)
from transfer.rearrange import Rearrange


def _conv_probe(context: PairContext) -> tuple[int, ...]:
    kh, kw, channels, _ = context.keras_side.tensors[0].shape
    return (kh + 3, kw + 4, context.in_channels or channels)


def _keras_channels(context: PairContext) -> dict[str, int]:
    return {"C": context.target.tensors[0].shape[2]}  # a Keras depthwise kernel's (kh, kw, C, m)


def _torch_conv(depthwise: bool) -> Callable[[Any, Any], bool]:
    """A depthwise conv has one group per input channel; any other (grouped) conv is a conv2d."""
    def match(module: Any, torch: Any) -> bool:
        if not isinstance(module, torch.nn.Conv2d):
            return False
        return (module.groups == module.in_channels > 1) == depthwise
    return match


def _onnx_ungrouped(op: str, attribute: Callable[[str, Any], Any], shapes: Sequence[tuple[int, ...]]) -> bool:
    return int(attribute("group", 1)) == 1


def _onnx_depthwise(op: str, attribute: Callable[[str, Any], Any], shapes: Sequence[tuple[int, ...]]) -> bool:
    """An ONNX Conv with one group per input channel: weight (C*m, 1, kh, kw), group C."""
    groups = int(attribute("group", 1))
    return groups > 1 and shapes[0][1] == 1 and shapes[0][0] % groups == 0


def _grouped_conv_probe(context: PairContext) -> tuple[int, ...]:
    kh, kw, channels, _ = context.keras_side.tensors[0].shape
    groups = context.source.groups or context.target.groups or 1  # a file does not store them
    return (kh + 3, kw + 4, context.in_channels or channels * groups)


def _pointwise_convert(arrays: Arrays, context: PairContext) -> Arrays:
    """1x1 conv or dense kernel -> the target's: through the (O, I) matrix of the map."""
    source, target = context.source, context.target
    kernel = arrays[0]
    matrix = layout.pointwise_to_dense(kernel, source.framework) if kernel.ndim == 4 else kernel
    if source.framework != target.framework:  # torch (O, I) <-> Keras (I, O)
        matrix = matrix.T
    if len(target.tensors[0].shape) == 4:
        matrix = layout.dense_to_pointwise(matrix, target.framework)
    return [np.ascontiguousarray(matrix), *arrays[1:]]


def _pointwise_in(spec: LayerSpec) -> int:
    shape = spec.tensors[0].shape  # torch (O, I) or (O, I, 1, 1); Keras (I, O) or (1, 1, I, O)
    return shape[1] if spec.framework == "torch" else shape[-2]


def _pointwise_torch(F: Any, t: list[Any], x: Any, p: LayerParams) -> Any:
    if t[0].ndim == 4:
        return F.conv2d(x, t[0], bias(t))
    return F.linear(x.permute(0, 2, 3, 1), t[0], bias(t)).permute(0, 3, 1, 2)


def _pointwise_keras(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    kernel = a[0] if a[0].ndim == 2 else a[0][0, 0]
    return with_bias(ops.matmul(x, kernel), a)


def torch_separable_children(module: Any, torch: Any) -> tuple[str, str] | None:
    """(depthwise, pointwise) child names when `module` is a separable conv written as a torch
    module of exactly two convs, a depthwise one then a 1x1 one on its output (timm's
    `SeparableConv2d`, or `nn.Sequential(dw, pw)`), with no weights of its own; else None."""
    children = list(module.named_children())
    if len(children) != 2 or list(module.parameters(recurse=False)):
        return None
    (dw_name, dw), (pw_name, pw) = children
    conv = torch.nn.Conv2d
    if not (isinstance(dw, conv) and isinstance(pw, conv)):
        return None
    if dw.groups == dw.in_channels > 1 and pw.groups == 1 and pw.kernel_size == (1, 1) \
            and pw.in_channels == dw.out_channels and pw.stride == (1, 1):
        return dw_name, pw_name
    return None


# the pointwise half of a separable pair reads the depthwise half's C*m outputs
_SEPARABLE_POINTWISE = Rearrange("O (C m) 1 1 -> 1 1 (C m) O",
                                 ("torch pointwise Conv2d weight", "Keras pointwise kernel"))


def _separable_parts(arrays: Arrays) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """torch order (depthwise weight, [bias], pointwise weight, [bias]) -> the four, None where absent."""
    weights = [i for i, a in enumerate(arrays) if a.ndim == 4]
    if len(weights) != 2:
        raise IncompatibleWeightsError(f"a separable conv pair has two 4-D kernels; received shapes "
                                       f"{[a.shape for a in arrays]}.")
    dw_i, pw_i = weights
    dw_bias = arrays[dw_i + 1] if dw_i + 1 < pw_i else None
    pw_bias = arrays[pw_i + 1] if pw_i + 1 < len(arrays) else None
    return arrays[dw_i], dw_bias, arrays[pw_i], pw_bias


def _separable_to_keras(arrays: Arrays, context: PairContext) -> Arrays:
    """Depthwise (C*m,1,kh,kw) -> (kh,kw,C,m), pointwise (O,C*m,1,1) -> (1,1,C*m,O); a depthwise
    bias b folds exactly into the one Keras bias: W_pw @ b + pointwise bias."""
    dw, dw_bias, pw, pw_bias = _separable_parts(arrays)
    sizes = _keras_channels(context)
    out = [layout.DEPTHWISE(dw, **sizes), _SEPARABLE_POINTWISE(pw, **sizes)]
    bias = pw_bias if pw_bias is not None else np.zeros(pw.shape[0], pw.dtype)
    if dw_bias is not None:
        bias = bias + pw[:, :, 0, 0] @ dw_bias
    if len(context.target.tensors) == 3:
        return [*out, bias.astype(pw.dtype)]
    if np.any(bias):
        raise IncompatibleWeightsError("the torch pair has a non-zero bias and the Keras "
                                       "SeparableConv2D none (use_bias=False).")
    return out


def _separable_to_torch(arrays: Arrays, context: PairContext) -> Arrays:
    """The inverse; a torch depthwise bias, if the module has one, is zero (Keras has none)."""
    depthwise, pointwise = arrays[0], arrays[1]
    bias = arrays[2] if len(arrays) > 2 else np.zeros(pointwise.shape[3], pointwise.dtype)
    names = [t.name.rsplit(".", 1)[-1] for t in context.target.tensors]
    dw = layout.DEPTHWISE.inverse(depthwise)
    pw = np.ascontiguousarray(_SEPARABLE_POINTWISE.inverse(pointwise, C=depthwise.shape[2]))
    out = [dw]
    if names[1] == "bias":  # the depthwise conv has a bias
        out.append(np.zeros(dw.shape[0], dw.dtype))
    out.append(pw)
    if names[-1] == "bias" and len(out) < len(names):
        out.append(bias)
    elif np.any(bias):
        raise IncompatibleWeightsError("the Keras SeparableConv2D has a non-zero bias and the torch "
                                       "pointwise conv none (bias=False).")
    return out


def _separable_torch(F: Any, t: list[Any], x: Any, p: LayerParams) -> Any:
    dw, dw_bias, pw, pw_bias = _separable_parts(t)
    return F.conv2d(F.conv2d(x, dw, dw_bias, groups=x.shape[1]), pw, pw_bias)


def _separable_keras(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    y = ops.separable_conv(x, a[0], a[1], strides=1, padding="valid")
    return y + a[2] if len(a) > 2 else y



# Multi-head attention (issue 22): torch `nn.MultiheadAttention` (its own `in_proj_weight` and
# `in_proj_bias`, and its child `out_proj`, one layer here) <-> Keras `MultiHeadAttention`. The
# torch tensors are told apart by shape (the in-projection has three times the rows of the
# output projection), so their order does not matter; the Keras ones come in the layer's order
# (query, key, value, output; each kernel followed by its bias).


CONV2D_TRANSPOSE = LayerKind(
    name="conv2d_transpose",
    torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
    **reversible(layout.CONV_TRANSPOSE),
    keras_layer=keras_is("Conv2DTranspose"),
    onnx_ops=("ConvTranspose",), onnx_node=_onnx_ungrouped,
    torch_module=lambda m, torch: isinstance(m, torch.nn.ConvTranspose2d),
    keras_file=lambda names, shapes: False,  # a file cannot tell it from a conv2d
    torch_file=lambda shapes: False,
    probe_shape=lambda c: (4, 5, c.keras_side.tensors[0].shape[3]),
    torch_op=lambda F, t, x, p: F.conv_transpose2d(x, t[0], bias(t)),
    keras_op=lambda ops, a, x, p: with_bias(ops.conv_transpose(x, a[0], strides=1, padding="valid"), a),
)

SEPARABLE_CONV2D = LayerKind(
    name="separable_conv2d",  # Keras SeparableConv2D <-> a torch module of a depthwise and a 1x1 conv
    torch_tensors=("<depthwise>.weight", "<pointwise>.weight", "<pointwise>.bias"),
    keras_tensors=("depthwise_kernel", "pointwise_kernel", "bias"),
    to_keras=_separable_to_keras, to_torch=_separable_to_torch,
    describe_to_keras=f"depthwise {layout.DEPTHWISE.describe()}, pointwise {_SEPARABLE_POINTWISE.describe()}",
    describe_to_torch=(f"depthwise {layout.DEPTHWISE.inverse.describe()}, "
                       f"pointwise {_SEPARABLE_POINTWISE.inverse.describe()}"),
    keras_layer=keras_is("SeparableConv2D"),
    torch_module=lambda m, torch: torch_separable_children(m, torch) is not None,
    keras_file=lambda names, shapes: "pointwise_kernel" in names,
    torch_file=lambda shapes: False,  # a state dict cannot tell a separable pair from two convs
    probe_shape=lambda c: (c.keras_side.tensors[0].shape[0] + 3, c.keras_side.tensors[0].shape[1] + 4,
                           c.keras_side.tensors[0].shape[2]),
    torch_op=_separable_torch, keras_op=_separable_keras, same_tensor_count=False,
)

DEPTHWISE_CONV2D = LayerKind(
    name="depthwise_conv2d",
    torch_tensors=("weight", "bias"), keras_tensors=("depthwise_kernel", "bias"),
    **reversible(layout.DEPTHWISE, keras_sizes=_keras_channels),
    keras_layer=keras_is("DepthwiseConv2D"),
    onnx_ops=("Conv",), onnx_node=_onnx_depthwise,
    torch_module=_torch_conv(depthwise=True),
    torch_groups=lambda module: int(module.groups),
    keras_file=lambda names, shapes: any("depthwise" in n for n in names),
    torch_file=lambda shapes: False,  # looks like a conv2d in a state dict; the target decides
    probe_shape=_conv_probe,
    torch_op=lambda F, t, x, p: F.conv2d(x, t[0], bias(t), groups=x.shape[1]),
    keras_op=lambda ops, a, x, p: with_bias(ops.depthwise_conv(x, a[0], strides=1, padding="valid"), a),
)

CONV2D = LayerKind(
    name="conv2d",
    torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
    **reversible(layout.CONV),
    keras_layer=keras_is("Conv2D"),
    # a grouped conv's groups are not read from ONNX yet: such a node is of no known kind
    onnx_ops=("Conv",), onnx_node=_onnx_ungrouped,
    torch_module=_torch_conv(depthwise=False),
    keras_file=lambda names, shapes: ndim(shapes, 4),
    torch_file=lambda shapes: len(shapes.get("weight", ())) == 4,
    probe_shape=_grouped_conv_probe,
    torch_op=lambda F, t, x, p: F.conv2d(x, t[0], bias(t), groups=p.groups or 1),
    # keras.ops.conv infers the groups from the input and kernel channels
    keras_op=lambda ops, a, x, p: with_bias(ops.conv(x, a[0], strides=1, padding="valid"), a),
    input_channel_axis={"keras": 2, "torch": 1},  # HWIO, OIHW
    keras_groups=lambda layer: int(layer.groups),
    torch_groups=lambda module: int(module.groups),
)

POINTWISE = LayerKind(
    name="pointwise",  # a 1x1 conv <-> a dense layer (squeeze-and-excitation, MobileNet heads)
    torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
    to_keras=_pointwise_convert, to_torch=_pointwise_convert, same_framework=_pointwise_convert,
    describe_to_keras="1x1 conv <-> dense: (O,I[,1,1]) -> (I,O) or (1,1,I,O)",
    describe_to_torch="1x1 conv <-> dense: (I,O) or (1,1,I,O) -> (O,I[,1,1])",
    # never recognised on its own: `pair_kind` picks it for a conv2d paired with a dense
    keras_layer=lambda layer, keras: False, torch_module=lambda m, torch: False,
    keras_file=lambda names, shapes: False, torch_file=lambda shapes: False,
    probe_shape=lambda c: (2, 3, _pointwise_in(c.keras_side)),
    torch_op=_pointwise_torch, keras_op=_pointwise_keras,
)
