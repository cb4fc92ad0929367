"""The table of layer kinds: everything the tool knows about one kind of weighted layer, in
one entry.

An entry says which tensors the kind has in each framework, how they convert between the
PyTorch and Keras layouts (pure numpy, from `transfer.layout`), how to recognise the kind in a
live model or in a weights file, and how to run one layer of it in each framework on a probe
input for verification. `suggest` aligns layers through the same converters. Adding a kind is
adding one `LayerKind` to `KINDS` (see README, "Adding a layer kind").

No framework is imported here: recognisers receive the framework's layer or module, probe ops
receive the framework module (`torch.nn.functional`, `keras.ops`) from the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transfer import layout
from transfer.errors import IncompatibleWeightsError

if TYPE_CHECKING:
    from transfer.layers import LayerSpec

Arrays = list[np.ndarray]
HWC = tuple[int, int, int]


@dataclass(frozen=True)
class LayerParams:
    """What a probe op needs beyond the tensors: one side's configuration."""

    epsilon: float | None = None  # normalisations
    groups: int | None = None  # GroupNorm's groups; a grouped conv's groups


@dataclass(frozen=True)
class PairContext:
    """What a converter or probe may need to know about one source -> target pair."""

    source: LayerSpec
    target: LayerSpec
    flatten: HWC | None = None  # dense only: a plain flatten of this (H, W, C) map on each side
    in_channels: int | None = None  # input channels of the probe when they were adapted
    # dense only: the target's input i is the source's input rows[i] (the planned flatten orders)
    rows: np.ndarray | None = None

    @property
    def keras_side(self) -> LayerSpec:
        return self.target if self.target.framework == "keras" else self.source


@dataclass(frozen=True)
class LayerKind:
    """One kind of weighted layer.

    Attributes:
        name: the kind's name in reports and mapping errors.
        torch_tensors / keras_tensors: tensor names in each framework's own order.
        to_keras / to_torch: convert one layer's tensors across frameworks (pure numpy).
        describe_to_keras / describe_to_torch: the conversion as the report states it.
        keras_layer: is this Keras layer of the kind? (checked in table order)
        torch_module: is this torch module of the kind? (checked in table order)
        keras_file: from a Keras weights file's short weight names and shapes.
        torch_file: from a state dict's tensor names (of one module) and shapes.
        probe_shape: channels-last probe input shape (batch excluded) for verification.
        torch_op(F, tensors, x, params): the layer on an NCHW (or flat) torch tensor.
        keras_op(ops, arrays, x, params): the layer on an NHWC (or flat) Keras tensor.
        keras_groups / torch_groups: the layer's groups (GroupNorm, grouped conv), else None.
        rescale_epsilon(arrays, source_eps, target_eps): exact compensation of an epsilon
            change, where one exists (BatchNorm: its variance is a stored tensor).
        same_framework: the conversion within one framework, where it is not the identity.
    """

    name: str
    torch_tensors: tuple[str, ...]
    keras_tensors: tuple[str, ...]
    to_keras: Callable[[Arrays, PairContext], Arrays]
    to_torch: Callable[[Arrays, PairContext], Arrays]
    describe_to_keras: str
    describe_to_torch: str
    keras_layer: Callable[[Any, Any], bool]
    torch_module: Callable[[Any, Any], bool]
    keras_file: Callable[[Sequence[str], Sequence[tuple[int, ...]]], bool]
    torch_file: Callable[[dict[str, tuple[int, ...]]], bool]
    probe_shape: Callable[[PairContext], tuple[int, ...]]
    torch_op: Callable[[Any, list[Any], Any, LayerParams], Any]
    keras_op: Callable[[Any, Arrays, Any, LayerParams], Any]
    carries_epsilon: bool = False  # a normalisation: its epsilon is compared (or rescaled for)
    keras_groups: Callable[[Any], int | None] = lambda layer: None
    torch_groups: Callable[[Any], int | None] = lambda module: None
    rescale_epsilon: Callable[[Arrays, float, float], Arrays] | None = None
    same_framework: Callable[[Arrays, PairContext], Arrays] | None = None
    # the layer's output is the same point of the network in both frameworks (false for a loose
    # variable: its torch "layer" is the whole module that owns it)
    output_comparable: bool = True
    # the two sides hold the same number of tensors (a separable pair may fold a bias: no)
    same_tensor_count: bool = True
    reads_flattened: bool = False  # may read a flattened feature map (the CHW vs HWC row order)
    input_channel_axis: dict[str, int] | None = None  # kernel axis of input channels, for `adapt`

    def convert(self, arrays: Arrays, context: PairContext) -> Arrays:
        """Source tensors -> the target framework's layout (same framework: unchanged)."""
        if context.source.framework == context.target.framework:
            return self.same_framework(arrays, context) if self.same_framework else list(arrays)
        return self.to_keras(arrays, context) if context.target.framework == "keras" else self.to_torch(arrays, context)

    def describe(self, source_framework: str, target_framework: str) -> str:
        if source_framework == target_framework:
            return "none (same framework)"
        return self.describe_to_keras if target_framework == "keras" else self.describe_to_torch


def _first(convert: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays, PairContext], Arrays]:
    """A converter that changes the kernel and passes the bias (and the rest) through."""
    return lambda arrays, context: [convert(arrays[0]), *arrays[1:]]


def _bias(arrays: Sequence[Any]) -> Any:
    return arrays[1] if len(arrays) > 1 else None


def _conv_probe(context: PairContext) -> tuple[int, ...]:
    kh, kw, channels, _ = context.keras_side.tensors[0].shape
    return (kh + 3, kw + 4, context.in_channels or channels)


def _depthwise_to_keras(arrays: Arrays, context: PairContext) -> Arrays:
    channels = context.target.tensors[0].shape[2]
    return [layout.depthwise_torch_to_keras(arrays[0], channels), *arrays[1:]]


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
    return F.linear(x, t[0], _bias(t))


def _dense_keras(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    y = ops.matmul(ops.reshape(x, (x.shape[0], -1)), a[0])  # Keras flattens HWC
    return y + a[1] if len(a) > 1 else y


def _batchnorm_same(arrays: Arrays, context: PairContext) -> Arrays:
    if len(arrays) != 4:
        raise IncompatibleWeightsError("BatchNorm needs all four tensors (scale, offset, mean, "
                                       "variance) on both sides.")
    return list(arrays)  # the same order in both frameworks


def _with_bias(y: Any, arrays: Arrays) -> Any:
    return y + arrays[1] if len(arrays) > 1 else y


def _keras_is(*class_names: str) -> Callable[[Any, Any], bool]:
    return lambda layer, keras: isinstance(layer, tuple(getattr(keras.layers, c) for c in class_names))


def _torch_conv(depthwise: bool) -> Callable[[Any, Any], bool]:
    """A depthwise conv has one group per input channel; any other (grouped) conv is a conv2d."""
    def match(module: Any, torch: Any) -> bool:
        if not isinstance(module, torch.nn.Conv2d):
            return False
        return (module.groups == module.in_channels > 1) == depthwise
    return match


def _ndim(shapes: Sequence[tuple[int, ...]], ndim: int) -> bool:
    return bool(shapes) and len(shapes[0]) == ndim


def _same(arrays: Arrays, context: PairContext) -> Arrays:
    return list(arrays)  # the same tensors, in the same order, in both frameworks


def _grouped_conv_probe(context: PairContext) -> tuple[int, ...]:
    kh, kw, channels, _ = context.keras_side.tensors[0].shape
    groups = context.source.groups or context.target.groups or 1  # a file does not store them
    return (kh + 3, kw + 4, context.in_channels or channels * groups)


def _norm_vectors(shapes: Sequence[tuple[int, ...]]) -> bool:
    return len(shapes) in (1, 2) and all(len(s) == 1 for s in shapes)


def _keras_channel_layernorm(layer: Any, keras: Any) -> bool:
    """A LayerNormalization over the last (channel) axis only, without RMS scaling."""
    if not isinstance(layer, keras.layers.LayerNormalization) or getattr(layer, "rms_scaling", False):
        return False
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(layer.input.shape) if _has_single_input(layer) else None
    return len(axes) == 1 and (axes[0] == -1 or (rank is not None and axes[0] == rank - 1))


def _has_single_input(layer: Any) -> bool:
    try:
        layer.input  # noqa: B018 - raises for a layer called several times or never
    except (AttributeError, ValueError):
        return False
    return True


def _keras_group_norm(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    n, h, w, c = x.shape
    groups = p.groups or 1
    grouped = ops.reshape(x, (n, h, w, groups, c // groups))
    mean = ops.mean(grouped, axis=(1, 2, 4), keepdims=True)
    variance = ops.var(grouped, axis=(1, 2, 4), keepdims=True)
    normalised = ops.reshape((grouped - mean) / ops.sqrt(variance + p.epsilon), (n, h, w, c))
    return normalised * a[0] + a[1] if len(a) > 1 else normalised * a[0]


def _lone_scale(shapes: dict[str, tuple[int, ...]]) -> bool:
    if len(shapes) != 1:
        return False
    (name, shape), = shapes.items()
    return name not in ("weight", "bias") and (len(shape) == 1 or (len(shape) == 3 and shape[1:] == (1, 1)))


def _to_target_scale(arrays: Arrays, context: PairContext) -> Arrays:
    return [layout.channel_scale(arrays[0], context.target.tensors[0].shape)]


def _to_target_alpha(arrays: Arrays, context: PairContext) -> Arrays:
    return [layout.prelu_alpha(arrays[0], context.target.tensors[0].shape)]


def _prelu_probe(context: PairContext) -> tuple[int, ...]:
    """A map for an alpha shared over H and W, a vector for one after a dense layer."""
    shape = context.keras_side.tensors[0].shape
    return (3, 3, max(shape[-1], 2)) if len(shape) == 3 else (max(shape[-1], 2),)


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
        return F.conv2d(x, t[0], _bias(t))
    return F.linear(x.permute(0, 2, 3, 1), t[0], _bias(t)).permute(0, 3, 1, 2)


def _pointwise_keras(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    kernel = a[0] if a[0].ndim == 2 else a[0][0, 0]
    return _with_bias(ops.matmul(x, kernel), a)


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
    channels = context.target.tensors[0].shape[2]
    out = [layout.depthwise_torch_to_keras(dw, channels), pw.transpose(2, 3, 1, 0)]
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
    dw = layout.depthwise_keras_to_torch(depthwise)
    pw = np.ascontiguousarray(pointwise.transpose(3, 2, 0, 1))
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


KINDS: tuple[LayerKind, ...] = (
    LayerKind(
        name="conv2d_transpose",
        torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
        to_keras=_first(layout.conv_transpose_torch_to_keras),
        to_torch=_first(layout.conv_transpose_keras_to_torch),
        describe_to_keras="IOHW -> HWOI", describe_to_torch="HWOI -> IOHW",
        keras_layer=_keras_is("Conv2DTranspose"),
        torch_module=lambda m, torch: isinstance(m, torch.nn.ConvTranspose2d),
        keras_file=lambda names, shapes: False,  # a file cannot tell it from a conv2d
        torch_file=lambda shapes: False,
        probe_shape=lambda c: (4, 5, c.keras_side.tensors[0].shape[3]),
        torch_op=lambda F, t, x, p: F.conv_transpose2d(x, t[0], _bias(t)),
        keras_op=lambda ops, a, x, p: _with_bias(ops.conv_transpose(x, a[0], strides=1, padding="valid"), a),
    ),
    LayerKind(
        name="separable_conv2d",  # Keras SeparableConv2D <-> a torch module of a depthwise and a 1x1 conv
        torch_tensors=("<depthwise>.weight", "<pointwise>.weight", "<pointwise>.bias"),
        keras_tensors=("depthwise_kernel", "pointwise_kernel", "bias"),
        to_keras=_separable_to_keras, to_torch=_separable_to_torch,
        describe_to_keras="depthwise (C*m,1,H,W) -> (H,W,C,m), pointwise (O,C*m,1,1) -> (1,1,C*m,O)",
        describe_to_torch="depthwise (H,W,C,m) -> (C*m,1,H,W), pointwise (1,1,C*m,O) -> (O,C*m,1,1)",
        keras_layer=_keras_is("SeparableConv2D"),
        torch_module=lambda m, torch: torch_separable_children(m, torch) is not None,
        keras_file=lambda names, shapes: "pointwise_kernel" in names,
        torch_file=lambda shapes: False,  # a state dict cannot tell a separable pair from two convs
        probe_shape=lambda c: (c.keras_side.tensors[0].shape[0] + 3, c.keras_side.tensors[0].shape[1] + 4,
                               c.keras_side.tensors[0].shape[2]),
        torch_op=_separable_torch, keras_op=_separable_keras, same_tensor_count=False,
    ),
    LayerKind(
        name="depthwise_conv2d",
        torch_tensors=("weight", "bias"), keras_tensors=("depthwise_kernel", "bias"),
        to_keras=_depthwise_to_keras, to_torch=_first(layout.depthwise_keras_to_torch),
        describe_to_keras="(C*m,1,H,W) -> (H,W,C,m)", describe_to_torch="(H,W,C,m) -> (C*m,1,H,W)",
        keras_layer=_keras_is("DepthwiseConv2D"),
        torch_module=_torch_conv(depthwise=True),
        torch_groups=lambda module: int(module.groups),
        keras_file=lambda names, shapes: any("depthwise" in n for n in names),
        torch_file=lambda shapes: False,  # looks like a conv2d in a state dict; the target decides
        probe_shape=_conv_probe,
        torch_op=lambda F, t, x, p: F.conv2d(x, t[0], _bias(t), groups=x.shape[1]),
        keras_op=lambda ops, a, x, p: _with_bias(ops.depthwise_conv(x, a[0], strides=1, padding="valid"), a),
    ),
    LayerKind(
        name="conv2d",
        torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
        to_keras=_first(layout.conv_torch_to_keras), to_torch=_first(layout.conv_keras_to_torch),
        describe_to_keras="OIHW -> HWIO", describe_to_torch="HWIO -> OIHW",
        keras_layer=_keras_is("Conv2D"),
        torch_module=_torch_conv(depthwise=False),
        keras_file=lambda names, shapes: _ndim(shapes, 4),
        torch_file=lambda shapes: len(shapes.get("weight", ())) == 4,
        probe_shape=_grouped_conv_probe,
        torch_op=lambda F, t, x, p: F.conv2d(x, t[0], _bias(t), groups=p.groups or 1),
        # keras.ops.conv infers the groups from the input and kernel channels
        keras_op=lambda ops, a, x, p: _with_bias(ops.conv(x, a[0], strides=1, padding="valid"), a),
        input_channel_axis={"keras": 2, "torch": 1},  # HWIO, OIHW
        keras_groups=lambda layer: int(layer.groups),
        torch_groups=lambda module: int(module.groups),
    ),
    LayerKind(
        name="dense",
        torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
        to_keras=_dense_to_keras, to_torch=_dense_to_torch,
        describe_to_keras="(out,in) -> (in,out)", describe_to_torch="(in,out) -> (out,in)",
        keras_layer=_keras_is("Dense"),
        torch_module=lambda m, torch: isinstance(m, torch.nn.Linear),
        keras_file=lambda names, shapes: _ndim(shapes, 2),
        torch_file=lambda shapes: len(shapes.get("weight", ())) == 2,
        probe_shape=_dense_probe,
        torch_op=_dense_torch, keras_op=_dense_keras, reads_flattened=True,
    ),
    LayerKind(
        name="batchnorm",
        torch_tensors=("weight", "bias", "running_mean", "running_var"),
        keras_tensors=("gamma", "beta", "moving_mean", "moving_variance"),
        to_keras=_batchnorm_same, to_torch=_batchnorm_same,
        describe_to_keras="weight,bias,running_mean,running_var -> gamma,beta,moving_mean,moving_variance",
        describe_to_torch="gamma,beta,moving_mean,moving_variance -> weight,bias,running_mean,running_var",
        keras_layer=_keras_is("BatchNormalization"),
        torch_module=lambda m, torch: isinstance(m, torch.nn.modules.batchnorm._BatchNorm),
        # the moving statistics tell a BatchNormalization from a LayerNormalization (gamma, beta)
        keras_file=lambda names, shapes: {"moving_mean", "moving_variance"} <= set(names),
        torch_file=lambda shapes: "running_mean" in shapes and "running_var" in shapes,
        probe_shape=lambda c: (3, 3, c.keras_side.tensors[0].shape[0]),
        torch_op=lambda F, t, x, p: F.batch_norm(x, t[2], t[3], t[0], t[1], False, 0.0, p.epsilon),
        keras_op=lambda ops, a, x, p: ops.batch_normalization(x, a[2], a[3], axis=-1, offset=a[1],
                                                              scale=a[0], epsilon=p.epsilon),
        carries_epsilon=True,
        rescale_epsilon=lambda a, source_eps, target_eps: [
            layout.batchnorm_rescale_gamma(a[0], a[3], source_eps, target_eps), *a[1:]],
    ),
    LayerKind(
        name="layernorm",  # over the channels only: Keras axis=-1; torch LayerNorm((C,)), LayerNorm2d
        torch_tensors=("weight", "bias"), keras_tensors=("gamma", "beta"),
        to_keras=_same, to_torch=_same,
        describe_to_keras="weight,bias -> gamma,beta", describe_to_torch="gamma,beta -> weight,bias",
        keras_layer=_keras_channel_layernorm,
        torch_module=lambda m, torch: isinstance(m, torch.nn.LayerNorm) and len(m.normalized_shape) == 1,
        # gamma/beta without moving statistics: a LayerNormalization or a GroupNormalization;
        # the target decides (`guessed_from_file`)
        keras_file=lambda names, shapes: _norm_vectors(shapes) and "moving_mean" not in names,
        torch_file=lambda shapes: set(shapes) == {"weight", "bias"} and _norm_vectors(list(shapes.values())),
        probe_shape=lambda c: (3, 3, c.keras_side.tensors[0].shape[0]),
        torch_op=lambda F, t, x, p: F.layer_norm(x.permute(0, 2, 3, 1), t[0].shape, t[0], _bias(t),
                                                 p.epsilon).permute(0, 3, 1, 2),
        keras_op=lambda ops, a, x, p: ops.layer_normalization(x, a[0], _bias(a), axis=-1, epsilon=p.epsilon),
        carries_epsilon=True,
    ),
    LayerKind(
        name="groupnorm",  # Keras GroupNormalization(axis=-1) <-> torch GroupNorm
        torch_tensors=("weight", "bias"), keras_tensors=("gamma", "beta"),
        to_keras=_same, to_torch=_same,
        describe_to_keras="weight,bias -> gamma,beta", describe_to_torch="gamma,beta -> weight,bias",
        keras_layer=lambda layer, keras: (isinstance(layer, keras.layers.GroupNormalization)
                                          and layer.axis in (-1, 3)),
        torch_module=lambda m, torch: isinstance(m, torch.nn.GroupNorm),
        keras_file=lambda names, shapes: False,  # read as a layernorm; the target decides
        torch_file=lambda shapes: False,
        probe_shape=lambda c: (3, 3, c.keras_side.tensors[0].shape[0]),
        torch_op=lambda F, t, x, p: F.group_norm(x, p.groups, t[0], _bias(t), p.epsilon),
        keras_op=_keras_group_norm,
        carries_epsilon=True,
        keras_groups=lambda layer: int(layer.groups),
        torch_groups=lambda module: int(module.num_groups),
    ),
    LayerKind(
        name="prelu",  # torch PReLU(C) <-> Keras PReLU(shared_axes=[1, 2]) after a conv, or after a dense
        torch_tensors=("weight",), keras_tensors=("alpha",),
        to_keras=_to_target_alpha, to_torch=_to_target_alpha,
        describe_to_keras="alpha (C,) -> (1,1,C) or (C,)", describe_to_torch="alpha (1,1,C) or (C,) -> (C,)",
        keras_layer=_keras_is("PReLU"),
        torch_module=lambda m, torch: isinstance(m, torch.nn.PReLU),
        keras_file=lambda names, shapes: list(names) == ["alpha"],
        torch_file=lambda shapes: list(shapes) == ["weight"] and len(shapes["weight"]) == 1,
        probe_shape=_prelu_probe,
        torch_op=lambda F, t, x, p: F.prelu(x, t[0]),
        keras_op=lambda ops, a, x, p: ops.where(x >= 0, x, x * a[0]),
    ),
    LayerKind(
        name="channel_scale",  # a lone per-channel vector: ConvNeXt's layer scale
        torch_tensors=("layer_scale",), keras_tensors=("gamma",),
        to_keras=_to_target_scale, to_torch=_to_target_scale,
        describe_to_keras="(C,1,1) or (C,) -> (C,)", describe_to_torch="(C,) -> the module's (C,1,1) or (C,)",
        # a layer of no other kind with one 1-D variable (Keras' ConvNeXt `LayerScale`)
        keras_layer=lambda layer, keras: len(layer.weights) == 1 and len(layer.weights[0].shape) == 1,
        # a module of no other kind owning one (C,) or (C,1,1) parameter (torchvision's CNBlock)
        torch_module=lambda m, torch: _lone_scale({n: tuple(t.shape) for n, t in m.named_parameters(recurse=False)})
                                      and not list(m.named_buffers(recurse=False)),
        keras_file=lambda names, shapes: len(shapes) == 1 and len(shapes[0]) == 1,
        torch_file=_lone_scale,
        probe_shape=lambda c: (3, 3, c.keras_side.tensors[0].shape[0]),
        torch_op=lambda F, t, x, p: x * t[0].reshape(1, -1, 1, 1),
        keras_op=lambda ops, a, x, p: x * a[0],
        output_comparable=False,
    ),
    LayerKind(
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
    ),
)

BY_NAME: dict[str, LayerKind] = {kind.name: kind for kind in KINDS}
OTHER = "other"  # a weighted layer of no known kind: movable only within one framework, as is


def kind(name: str) -> LayerKind:
    """The table entry of a kind, or an error naming the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise IncompatibleWeightsError(
            f"no PyTorch <-> Keras layout conversion is known for {name} layers; known kinds: "
            f"{', '.join(BY_NAME)}.") from None


def carries_epsilon(name: str) -> bool:
    return name in BY_NAME and BY_NAME[name].carries_epsilon


def output_comparable(name: str) -> bool:
    return name not in BY_NAME or BY_NAME[name].output_comparable


def reads_flattened(name: str) -> bool:
    return name in BY_NAME and BY_NAME[name].reads_flattened


def keras_layer_kind(layer: Any, keras: Any) -> str:
    return next((k.name for k in KINDS if k.keras_layer(layer, keras)), OTHER)


def torch_module_kind(module: Any, torch: Any) -> str:
    return next((k.name for k in KINDS if k.torch_module(module, torch)), OTHER)


def keras_file_kind(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> str:
    """Kind of a Keras layer known only from a weights file (short weight names, shapes)."""
    return next((k.name for k in KINDS if k.keras_file(names, shapes)), OTHER)


def torch_file_kind(shapes: dict[str, tuple[int, ...]]) -> str:
    """Kind of a torch module known only by its state-dict entries (name -> shape)."""
    return next((k.name for k in KINDS if k.torch_file(shapes)), OTHER)


def keras_layer_groups(name: str, layer: Any) -> int | None:
    return BY_NAME[name].keras_groups(layer) if name in BY_NAME else None


def torch_module_groups(name: str, module: Any) -> int | None:
    return BY_NAME[name].torch_groups(module) if name in BY_NAME else None


# kinds a file cannot tell apart: the first is what names and shapes suggest; a target layer of
# one of the others then decides
_FILE_LOOKALIKES = {"conv2d": ("conv2d_transpose", "depthwise_conv2d"),
                    "layernorm": ("groupnorm", "channel_scale")}


def guessed_from_file(source_kind: str, target_kind: str) -> bool:
    """A 4-D weight read from a file looks like a plain conv, gamma and beta (or one vector)
    like a LayerNorm; a transposed or depthwise conv, a GroupNorm or a channel scale target then
    decides the kind."""
    return target_kind in _FILE_LOOKALIKES.get(source_kind, ())


def _keras_file_grouped_kernel(spec: LayerSpec) -> bool:
    """A 4-D kernel from a Keras file met a depthwise conv: a DepthwiseConv2D's (kh, kw, C, 1),
    or a Conv2D(groups=C)'s (kh, kw, 1, C)? Files name both `kernel` (Keras 3) or say nothing
    (`vars/0`); the shape tells, except for one channel, where both are the same map."""
    shape = spec.tensors[0].shape if spec.tensors else ()
    return (spec.kind_from_file and spec.framework == "keras" and len(shape) == 4
            and shape[2] == 1 and shape[3] > 1)


def pair_kind(source: LayerSpec, target: LayerSpec) -> str | None:
    """The kind whose conversion moves `source`'s tensors into `target`, or None.

    Besides equal kinds: a depthwise conv in one framework is a grouped conv2d in the other
    (Keras' ConvNeXt writes it as `Conv2D(groups=C)`), and a 1x1 conv and a dense layer are the
    same map (`pointwise`)."""
    if source.kind == target.kind:
        return source.kind
    if {source.kind, target.kind} == {"depthwise_conv2d", "conv2d"}:
        grouped = source if source.kind == "conv2d" else target
        if (grouped.groups or 0) > 1 or _keras_file_grouped_kernel(grouped):
            return "conv2d"
    if source.kind_from_file and guessed_from_file(source.kind, target.kind):
        return target.kind
    if {source.kind, target.kind} == {"conv2d", "dense"}:
        return "pointwise"
    return None
