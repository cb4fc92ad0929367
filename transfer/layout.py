"""Layout conversion between PyTorch and Keras, one small pure function per layer kind.

Every function takes and returns numpy arrays and never reshapes "to make it fit": a shape
that does not match the expected layout raises `IncompatibleWeightsError`. A layout that is a
reordering of axes is one `Rearrange` (`transfer.rearrange`): the other direction is its
`inverse` and the report's description its `describe()`, never written a second time.

    kind              PyTorch                       Keras
    conv2d            weight (out, in, kh, kw)      kernel (kh, kw, in, out)
    conv2d_transpose  weight (in, out, kh, kw)      kernel (kh, kw, out, in)
    depthwise_conv2d  weight (C*m, 1, kh, kw)       depthwise_kernel (kh, kw, C, m)
    dense             weight (out, in)              kernel (in, out)
    batchnorm         weight, bias, running_mean,   gamma, beta, moving_mean,
                      running_var (eps 1e-5)        moving_variance (eps 1e-3 by default)
"""

from __future__ import annotations

import numpy as np

from transfer.errors import IncompatibleWeightsError
from transfer.rearrange import Rearrange

HWC = tuple[int, int, int]


def _expect_ndim(array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise IncompatibleWeightsError(f"expected a {ndim}-D {what}; received shape {array.shape}.")


# Each layout is one `Rearrange`; the other direction is its inverse, and the report's
# description comes from the same pattern.
CONV = Rearrange("O I H W -> H W I O", ("torch Conv2d weight", "Keras Conv2D kernel"))
# both frameworks compute the gradient of a cross-correlation: no spatial flip
CONV_TRANSPOSE = Rearrange("I O H W -> H W O I", ("torch ConvTranspose2d weight", "Keras Conv2DTranspose kernel"))
# torch's output channel c*m + j is Keras' (c, j)
DEPTHWISE = Rearrange("(C m) 1 H W -> H W C m", ("torch depthwise Conv2d weight", "Keras depthwise kernel"))
DENSE = Rearrange("out in -> in out", ("torch Linear weight", "Keras Dense kernel"))
# a dense layer after a flatten: torch flattens the map in CHW order, Keras in HWC order
DENSE_AFTER_FLATTEN = Rearrange("out (C H W) -> (H W C) out", ("torch Linear weight", "Keras Dense kernel"))


def conv_torch_to_keras(weight: np.ndarray) -> np.ndarray:
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return CONV(weight)


def conv_keras_to_torch(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, in, out) -> (out, in, kh, kw)."""
    return CONV.inverse(kernel)


def conv_transpose_torch_to_keras(weight: np.ndarray) -> np.ndarray:
    """(in, out, kh, kw) -> (kh, kw, out, in)."""
    return CONV_TRANSPOSE(weight)


def conv_transpose_keras_to_torch(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, out, in) -> (in, out, kh, kw)."""
    return CONV_TRANSPOSE.inverse(kernel)


def depthwise_torch_to_keras(weight: np.ndarray, channels: int) -> np.ndarray:
    """(C*m, 1, kh, kw) -> (kh, kw, C, m)."""
    return DEPTHWISE(weight, C=channels)


def depthwise_keras_to_torch(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, C, m) -> (C*m, 1, kh, kw)."""
    return DEPTHWISE.inverse(kernel)


def dense_torch_to_keras(weight: np.ndarray, flatten: HWC | None = None) -> np.ndarray:
    """(out, in) -> (in, out). With `flatten=(H, W, C)`, the input was a flattened feature
    map: torch flattens it in CHW order and Keras in HWC order, so the rows are permuted."""
    if flatten is None:
        return DENSE(weight)
    _expect_ndim(weight, 2, "torch Linear weight (out, in)")
    _expect_flattened(weight.shape[1], flatten)
    height, width, channels = flatten
    return DENSE_AFTER_FLATTEN(weight, H=height, W=width, C=channels)


def dense_keras_to_torch(kernel: np.ndarray, flatten: HWC | None = None) -> np.ndarray:
    """(in, out) -> (out, in), permuting HWC-flattened rows into CHW order with `flatten`."""
    if flatten is None:
        return DENSE.inverse(kernel)
    _expect_ndim(kernel, 2, "Keras Dense kernel (in, out)")
    _expect_flattened(kernel.shape[0], flatten)
    height, width, channels = flatten
    return DENSE_AFTER_FLATTEN.inverse(kernel, H=height, W=width, C=channels)


def _expect_flattened(features: int, flatten: HWC) -> None:
    if features != flatten[0] * flatten[1] * flatten[2]:
        raise IncompatibleWeightsError(
            f"the dense layer has {features} inputs, but a flattened {flatten[0]}x{flatten[1]}"
            f"x{flatten[2]} (H x W x C) map has {flatten[0] * flatten[1] * flatten[2]}.")


def pointwise_to_dense(weight: np.ndarray, framework: str) -> np.ndarray:
    """A 1x1 conv kernel -> the same map as a dense kernel of that framework: torch (O, I, 1, 1)
    -> (O, I); Keras (1, 1, I, O) -> (I, O)."""
    _expect_ndim(weight, 4, "1x1 conv kernel")
    spatial = weight.shape[2:] if framework == "torch" else weight.shape[:2]
    if tuple(spatial) != (1, 1):
        raise IncompatibleWeightsError(f"only a 1x1 conv exchanges weights with a dense layer; "
                                       f"received a {spatial[0]}x{spatial[1]} kernel {weight.shape}.")
    return weight[:, :, 0, 0] if framework == "torch" else weight[0, 0]


def dense_to_pointwise(kernel: np.ndarray, framework: str) -> np.ndarray:
    """A dense kernel -> a 1x1 conv kernel of the same framework: torch (O, I) -> (O, I, 1, 1);
    Keras (I, O) -> (1, 1, I, O)."""
    _expect_ndim(kernel, 2, "dense kernel")
    return kernel[:, :, None, None] if framework == "torch" else kernel[None, None]


def channel_scale(vector: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-channel scale between its two spellings: (C,) (Keras, channels last) and
    (C, 1, 1) (torch, broadcast over H and W of an NCHW map). Nothing else is accepted."""
    channels = vector.size
    allowed = {(channels,), (channels, 1, 1)}
    if vector.shape not in allowed or tuple(shape) not in allowed:
        raise IncompatibleWeightsError(f"a per-channel scale is (C,) or (C, 1, 1); received "
                                       f"{vector.shape} for a target of shape {tuple(shape)}.")
    return vector.reshape(shape)


def prelu_alpha(alpha: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """PReLU's slopes between torch, (C,) or one shared (1,), and Keras: (1, 1, C) after a conv
    with `shared_axes=[1, 2]`, (C,) after a dense layer, ones where shared. A Keras alpha per
    position (H, W, C) has no torch counterpart."""
    def channels(s: tuple[int, ...]) -> int | None:
        return s[-1] if s and all(d == 1 for d in s[:-1]) else None

    source, target = tuple(alpha.shape), tuple(shape)
    if channels(source) is None or channels(target) is None:
        per_position = source if channels(source) is None else target
        raise IncompatibleWeightsError(f"a PReLU with one slope per position {per_position} has no counterpart "
                                       "in the other framework (torch's PReLU has one slope per channel, or one "
                                       "for all): build the Keras PReLU with shared_axes=[1, 2].")
    if channels(source) != channels(target):
        raise IncompatibleWeightsError(f"the PReLU slopes are {source} and the target's {target}: one per channel "
                                       "on one side, one for all on the other (torch: nn.PReLU(num_parameters=C); "
                                       "Keras: shared_axes).")
    return alpha.reshape(target)


def batchnorm_rescale_gamma(gamma: np.ndarray, variance: np.ndarray, source_epsilon: float,
                            target_epsilon: float) -> np.ndarray:
    """gamma' such that gamma' / sqrt(var + eps_target) == gamma / sqrt(var + eps_source):
    the same normalisation, exactly, under another epsilon."""
    scale = np.sqrt(variance.astype(np.float64) + target_epsilon) / np.sqrt(
        variance.astype(np.float64) + source_epsilon)
    return (gamma.astype(np.float64) * scale).astype(gamma.dtype)


ADAPT_POLICIES = ("timm", "sum", "repeat", "zero_rest")


def adapt_in_channels(weight: np.ndarray, axis: int, channels: int, policy: str) -> np.ndarray:
    """A conv kernel with `channels` inputs made from one with another count (input axis `axis`).

    sum: one channel, the sum over the source's (a grey image seen as equal R, G, B);
    repeat: the source channels tiled and scaled by source/target count (timm's
    adapt_input_conv), keeping the expected activation scale; zero_rest: the source channels
    first, zeros for the extra ones (a 4-band image with zero in band 4 gives the RGB output);
    timm: sum for one channel, repeat otherwise.
    """
    source = weight.shape[axis]
    if policy == "timm":
        policy = "sum" if channels == 1 else "repeat"
    if policy == "sum":
        if channels != 1:
            raise IncompatibleWeightsError(f"adapt 'sum' makes 1 input channel; the target has {channels}.")
        return weight.sum(axis=axis, keepdims=True, dtype=np.float64).astype(weight.dtype)
    if policy == "repeat":
        reps = -(-channels // source)
        tiled = np.concatenate([weight] * reps, axis=axis).take(range(channels), axis=axis)
        return (tiled * (source / channels)).astype(weight.dtype)
    if policy == "zero_rest":
        if channels < source:
            raise IncompatibleWeightsError(f"adapt 'zero_rest' adds input channels; the target has "
                                           f"{channels}, fewer than the source's {source}.")
        pad = [(0, 0)] * weight.ndim
        pad[axis] = (0, channels - source)
        return np.pad(weight, pad)
    raise IncompatibleWeightsError(f"unknown input-channel policy {policy!r}; known: {', '.join(ADAPT_POLICIES)}.")


def permute_dense_inputs(matrix: np.ndarray, rows: np.ndarray | None, framework: str) -> np.ndarray:
    """Reorder a dense layer's inputs: the result's input `i` is the given matrix's input
    `rows[i]`. torch holds inputs on axis 1 (out, in), Keras on axis 0 (in, out)."""
    _expect_ndim(matrix, 2, "dense weight")
    if rows is None:
        return matrix
    axis = 1 if framework == "torch" else 0
    if matrix.shape[axis] != rows.size:
        raise IncompatibleWeightsError(f"the dense weight has {matrix.shape[axis]} inputs; the flattened "
                                       f"map has {rows.size} elements.")
    return np.take(matrix, rows, axis=axis)


# Multi-head attention (issue 22). torch `nn.MultiheadAttention(d, h)`: `in_proj_weight` (3d, d)
# holds the q, k and v projections stacked by rows (each (d, d), head j in rows j*k:(j+1)*k,
# k = d / h), `in_proj_bias` (3d,), `out_proj` a Linear (d, d) reading the heads' outputs
# concatenated in head order. Keras `MultiHeadAttention(h, key_dim=k)`: `query`, `key`, `value`
# kernels (d, h, k) with biases (h, k), the output kernel (h, k, d) with bias (d,). Below, s is
# which of q, k and v.
ATTENTION_IN = Rearrange("(s h k) d -> s d h k", ("torch in_proj_weight", "Keras query, key and value kernels"))
ATTENTION_IN_BIAS = Rearrange("(s h k) -> s h k", ("torch in_proj_bias", "Keras query, key and value biases"))
ATTENTION_OUT = Rearrange("out (h k) -> h k out", ("torch out_proj.weight", "Keras MultiHeadAttention output kernel"))


def attention_in_proj_to_keras(weight: np.ndarray, heads: int) -> list[np.ndarray]:
    """torch `in_proj_weight` (3d, d_in) -> Keras query, key and value kernels (d_in, h, k)."""
    _expect_ndim(weight, 2, "torch in_proj_weight (3 * embed_dim, embed_dim)")
    rows = weight.shape[0]
    if rows % 3 or (rows // 3) % heads:
        raise IncompatibleWeightsError(f"an in_proj_weight stacks q, k and v: (3 * h * k, d) with h={heads} "
                                       f"heads; received shape {weight.shape}.")
    return [np.ascontiguousarray(kernel) for kernel in ATTENTION_IN(weight, s=3, h=heads)]


def attention_in_bias_to_keras(bias: np.ndarray, heads: int) -> list[np.ndarray]:
    """torch `in_proj_bias` (3d,) -> Keras query, key and value biases (h, k)."""
    _expect_ndim(bias, 1, "torch in_proj_bias (3 * embed_dim,)")
    if bias.size % 3 or (bias.size // 3) % heads:
        raise IncompatibleWeightsError(f"an in_proj_bias stacks q, k and v: (3 * h * k,) with h={heads} heads; "
                                       f"received shape {bias.shape}.")
    return list(ATTENTION_IN_BIAS(bias, s=3, h=heads))


def attention_qkv_to_torch(kernels: list[np.ndarray],
                           biases: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Keras query, key and value kernels (d_in, h, k) (and biases (h, k)) -> torch
    `in_proj_weight` (3 h k, d_in) (and `in_proj_bias` (3 h k,))."""
    for kernel in kernels:
        _expect_ndim(kernel, 3, "Keras MultiHeadAttention query/key/value kernel (d, heads, key_dim)")
    if len({k.shape for k in kernels}) != 1:
        raise IncompatibleWeightsError(f"torch's in_proj needs query, key and value kernels of one shape "
                                       f"(key_dim == value_dim, one input width); received "
                                       f"{[k.shape for k in kernels]}.")
    weight = ATTENTION_IN.inverse(np.stack(kernels))
    bias = None if biases is None else ATTENTION_IN_BIAS.inverse(np.stack(biases))
    return np.ascontiguousarray(weight), bias


def attention_out_proj_to_keras(weight: np.ndarray, heads: int) -> np.ndarray:
    """torch `out_proj.weight` (d_out, h k) -> Keras output kernel (h, k, d_out)."""
    _expect_ndim(weight, 2, "torch out_proj.weight (embed_dim, embed_dim)")
    if weight.shape[1] % heads:
        raise IncompatibleWeightsError(f"out_proj.weight reads h={heads} heads' outputs; received shape "
                                       f"{weight.shape}.")
    return np.ascontiguousarray(ATTENTION_OUT(weight, h=heads))


def attention_out_proj_to_torch(kernel: np.ndarray) -> np.ndarray:
    """Keras output kernel (h, k, d_out) -> torch `out_proj.weight` (d_out, h k)."""
    _expect_ndim(kernel, 3, "Keras MultiHeadAttention output kernel (heads, key_dim, d)")
    return np.ascontiguousarray(ATTENTION_OUT.inverse(kernel))


def embedding_as_is(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A class token (1, 1, d) or a position embedding (1, T, d): the same tensor in both
    frameworks (tokens on axis 1, features last). Another T is another grid: resampling it is a
    change of the tensor (`transfer.resample`), never done here."""
    _expect_ndim(array, 3, "token or position embedding (1, tokens, features)")
    if tuple(array.shape) != tuple(shape):
        hint = (" A position embedding onto another grid needs the rule option `resample: bicubic` (or "
                "bilinear), which changes the tensor." if array.shape[2:] == tuple(shape)[2:] else "")
        raise IncompatibleWeightsError(f"an embedding moves as is: the source's is {array.shape}, the "
                                       f"target's {tuple(shape)}.{hint}")
    return array
