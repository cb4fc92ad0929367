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
class PairContext:
    """What a converter or probe may need to know about one source -> target pair."""

    source: LayerSpec
    target: LayerSpec
    flatten: HWC | None = None  # dense only: the (H, W, C) map flattened before it
    in_channels: int | None = None  # input channels of the probe when they were adapted

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
        torch_op(F, tensors, x, epsilon): the layer on an NCHW (or flat) torch tensor.
        keras_op(ops, arrays, x, epsilon): the layer on an NHWC (or flat) Keras tensor.
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
    torch_op: Callable[[Any, list[Any], Any, float | None], Any]
    keras_op: Callable[[Any, Arrays, Any, float | None], Any]
    carries_epsilon: bool = False  # a normalisation: its epsilon is compared (or rescaled for)
    reads_flattened: bool = False  # may read a flattened feature map (the CHW vs HWC row order)
    input_channel_axis: dict[str, int] | None = None  # kernel axis of input channels, for `adapt`

    def convert(self, arrays: Arrays, context: PairContext) -> Arrays:
        """Source tensors -> the target framework's layout (same framework: unchanged)."""
        if context.source.framework == context.target.framework:
            return list(arrays)
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
    return [layout.dense_torch_to_keras(arrays[0], context.flatten), *arrays[1:]]


def _dense_to_torch(arrays: Arrays, context: PairContext) -> Arrays:
    return [layout.dense_keras_to_torch(arrays[0], context.flatten), *arrays[1:]]


def _dense_probe(context: PairContext) -> tuple[int, ...]:
    return context.flatten if context.flatten else (context.keras_side.tensors[0].shape[0],)


def _dense_torch(F: Any, t: list[Any], x: Any, eps: float | None) -> Any:
    if x.ndim == 4:  # torch flattens CHW; the caller gave NCHW
        x = x.flatten(1)
    return F.linear(x, t[0], _bias(t))


def _dense_keras(ops: Any, a: Arrays, x: Any, eps: float | None) -> Any:
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


def _torch_conv(groups: str) -> Callable[[Any, Any], bool]:
    def match(module: Any, torch: Any) -> bool:
        nn = torch.nn
        if not isinstance(module, nn.Conv2d):
            return False
        return module.groups == 1 if groups == "one" else (module.groups == module.in_channels > 1)
    return match


def _ndim(shapes: Sequence[tuple[int, ...]], ndim: int) -> bool:
    return bool(shapes) and len(shapes[0]) == ndim


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
        torch_op=lambda F, t, x, eps: F.conv_transpose2d(x, t[0], _bias(t)),
        keras_op=lambda ops, a, x, eps: _with_bias(ops.conv_transpose(x, a[0], strides=1, padding="valid"), a),
    ),
    LayerKind(
        name="depthwise_conv2d",
        torch_tensors=("weight", "bias"), keras_tensors=("depthwise_kernel", "bias"),
        to_keras=_depthwise_to_keras, to_torch=_first(layout.depthwise_keras_to_torch),
        describe_to_keras="(C*m,1,H,W) -> (H,W,C,m)", describe_to_torch="(H,W,C,m) -> (C*m,1,H,W)",
        keras_layer=_keras_is("DepthwiseConv2D"),
        torch_module=_torch_conv("depthwise"),
        keras_file=lambda names, shapes: any("depthwise" in n for n in names),
        torch_file=lambda shapes: False,  # looks like a conv2d in a state dict; the target decides
        probe_shape=_conv_probe,
        torch_op=lambda F, t, x, eps: F.conv2d(x, t[0], _bias(t), groups=x.shape[1]),
        keras_op=lambda ops, a, x, eps: _with_bias(ops.depthwise_conv(x, a[0], strides=1, padding="valid"), a),
    ),
    LayerKind(
        name="conv2d",
        torch_tensors=("weight", "bias"), keras_tensors=("kernel", "bias"),
        to_keras=_first(layout.conv_torch_to_keras), to_torch=_first(layout.conv_keras_to_torch),
        describe_to_keras="OIHW -> HWIO", describe_to_torch="HWIO -> OIHW",
        keras_layer=_keras_is("Conv2D"),
        torch_module=_torch_conv("one"),
        keras_file=lambda names, shapes: _ndim(shapes, 4),
        torch_file=lambda shapes: len(shapes.get("weight", ())) == 4,
        probe_shape=_conv_probe,
        torch_op=lambda F, t, x, eps: F.conv2d(x, t[0], _bias(t)),
        keras_op=lambda ops, a, x, eps: _with_bias(ops.conv(x, a[0], strides=1, padding="valid"), a),
        input_channel_axis={"keras": 2, "torch": 1},  # HWIO, OIHW
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
        torch_op=lambda F, t, x, eps: F.batch_norm(x, t[2], t[3], t[0], t[1], False, 0.0, eps),
        keras_op=lambda ops, a, x, eps: ops.batch_normalization(x, a[2], a[3], axis=-1, offset=a[1],
                                                                scale=a[0], epsilon=eps),
        carries_epsilon=True,
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


def guessed_from_file(source_kind: str, target_kind: str) -> bool:
    """A 4-D weight read from a file looks like a plain conv; a transposed or depthwise conv
    target then decides the kind."""
    return source_kind == "conv2d" and target_kind in ("conv2d_transpose", "depthwise_conv2d")
