"""Normalisations: BatchNorm (its epsilon compared, or rescaled exactly), LayerNorm over the
channels, GroupNorm."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer import layout
from transfer.errors import IncompatibleWeightsError
from transfer.kinds.base import (
    Arrays,
    LayerKind,
    LayerParams,
    PairContext,
    bias,
    keras_is,
    renamed,
)


def _batchnorm_same(arrays: Arrays, context: PairContext) -> Arrays:
    if len(arrays) != 4:
        raise IncompatibleWeightsError("BatchNorm needs all four tensors (scale, offset, mean, "
                                       "variance) on both sides.")
    return list(arrays)  # the same order in both frameworks


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


BATCHNORM = LayerKind(
    name="batchnorm",
    display="BatchNorm",
    **renamed(("weight", "bias", "running_mean", "running_var"), ("gamma", "beta", "moving_mean", "moving_variance"),
              _batchnorm_same),
    keras_layer=keras_is("BatchNormalization"),
    onnx_ops=("BatchNormalization",), onnx_node=lambda op, attribute, shapes: len(shapes) == 4,
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
)

LAYERNORM = LayerKind(
    name="layernorm",  # over the channels only: Keras axis=-1; torch LayerNorm((C,)), LayerNorm2d
    display="LayerNorm",
    **renamed(("weight", "bias"), ("gamma", "beta")),
    keras_layer=_keras_channel_layernorm,
    torch_module=lambda m, torch: isinstance(m, torch.nn.LayerNorm) and len(m.normalized_shape) == 1,
    # gamma/beta without moving statistics: a LayerNormalization or a GroupNormalization;
    # the target decides (`guessed_from_file`)
    keras_file=lambda names, shapes: _norm_vectors(shapes) and "moving_mean" not in names,
    torch_file=lambda shapes: set(shapes) == {"weight", "bias"} and _norm_vectors(list(shapes.values())),
    probe_shape=lambda c: (3, 3, c.keras_side.tensors[0].shape[0]),
    torch_op=lambda F, t, x, p: F.layer_norm(x.permute(0, 2, 3, 1), t[0].shape, t[0], bias(t),
                                             p.epsilon).permute(0, 3, 1, 2),
    keras_op=lambda ops, a, x, p: ops.layer_normalization(x, a[0], bias(a), axis=-1, epsilon=p.epsilon),
    carries_epsilon=True,
)

GROUPNORM = LayerKind(
    name="groupnorm",  # Keras GroupNormalization(axis=-1) <-> torch GroupNorm
    display="GroupNorm",
    **renamed(("weight", "bias"), ("gamma", "beta")),
    keras_layer=lambda layer, keras: (isinstance(layer, keras.layers.GroupNormalization)
                                      and layer.axis in (-1, 3)),
    torch_module=lambda m, torch: isinstance(m, torch.nn.GroupNorm),
    keras_file=lambda names, shapes: False,  # read as a layernorm; the target decides
    torch_file=lambda shapes: False,
    probe_shape=lambda c: (3, 3, c.keras_side.tensors[0].shape[0]),
    torch_op=lambda F, t, x, p: F.group_norm(x, p.groups, t[0], bias(t), p.epsilon),
    keras_op=_keras_group_norm,
    carries_epsilon=True,
    keras_groups=lambda layer: int(layer.groups),
    torch_groups=lambda module: int(module.num_groups),
)
