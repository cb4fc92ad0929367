"""Transformer layers: multi-head attention (torch `nn.MultiheadAttention` or a fused-qkv module
<-> Keras `MultiHeadAttention`) and lone token embeddings (class token, position embedding),
with the declared resampling of a position embedding onto another grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from transfer import layout
from transfer.errors import IncompatibleWeightsError
from transfer.kinds.base import (
    Arrays,
    LayerKind,
    LayerParams,
    PairContext,
)
from transfer.resample import prefix_tokens_between, resample_position_embedding

# Multi-head attention (issue 22): torch `nn.MultiheadAttention` (its own `in_proj_weight` and
# `in_proj_bias`, and its child `out_proj`, one layer here) <-> Keras `MultiHeadAttention`. The
# torch tensors are told apart by shape (the in-projection has three times the rows of the
# output projection), so their order does not matter; the Keras ones come in the layer's order
# (query, key, value, output; each kernel followed by its bias).

def _torch_attention_parts(arrays: Sequence[Any]) -> tuple[Any, Any, Any, Any]:
    """(in-projection weight, its bias or None, output weight, its bias or None), numpy or torch;
    either bias may be absent (timm's `qkv_bias=False` keeps the output projection's)."""
    matrices = [a for a in arrays if a.ndim == 2]
    vectors = [a for a in arrays if a.ndim == 1]
    inner = [m for m in matrices if m.shape[0] == 3 * m.shape[1]]
    if len(matrices) != 2 or len(inner) != 1 or len(matrices) + len(vectors) != len(arrays):
        raise IncompatibleWeightsError(f"an attention layer's torch tensors are in_proj_weight (3d, d), "
                                       f"out_proj.weight (d, d) and optionally their biases; received shapes "
                                       f"{[tuple(a.shape) for a in arrays]}.")
    w_in = inner[0]
    w_out = next(m for m in matrices if m is not w_in)
    b_in = [v for v in vectors if v.shape[0] == w_in.shape[0]]
    b_out = [v for v in vectors if v.shape[0] == w_out.shape[0]]
    if len(b_in) > 1 or len(b_out) > 1 or len(b_in) + len(b_out) != len(vectors):
        raise IncompatibleWeightsError(f"the attention biases {[tuple(v.shape) for v in vectors]} do not fit the "
                                       f"weights {tuple(w_in.shape)} and {tuple(w_out.shape)}.")
    return w_in, (b_in or [None])[0], w_out, (b_out or [None])[0]


def _keras_attention_parts(arrays: Sequence[Any]) -> tuple[list[Any], list[Any] | None, Any, Any]:
    """([query, key, value] kernels, their biases or None, output kernel, its bias or None)."""
    ndims = [len(a.shape) for a in arrays]
    if ndims == [3, 2, 3, 2, 3, 2, 3, 1]:
        return [arrays[0], arrays[2], arrays[4]], [arrays[1], arrays[3], arrays[5]], arrays[6], arrays[7]
    if ndims == [3, 3, 3, 3]:
        return list(arrays[:3]), None, arrays[3], None
    raise IncompatibleWeightsError(f"a Keras MultiHeadAttention holds query, key, value and output kernels "
                                   f"(3-D), each with its bias or none; received shapes "
                                   f"{[tuple(a.shape) for a in arrays]}.")


def _check_heads(torch_heads: int | None, keras_heads: int) -> None:
    if torch_heads is not None and torch_heads != keras_heads:
        raise IncompatibleWeightsError(f"the torch attention has {torch_heads} heads and the Keras one "
                                       f"{keras_heads}: the same tensors would compute another function.")


def _attention_to_keras(arrays: Arrays, context: PairContext) -> Arrays:
    w_in, b_in, w_out, b_out = _torch_attention_parts(arrays)
    heads = context.target.tensors[0].shape[1]  # the query kernel (d, h, k)
    _check_heads(context.source.groups, heads)
    kernels = layout.attention_in_proj_to_keras(w_in, heads)
    out_kernel = layout.attention_out_proj_to_keras(w_out, heads)
    if len(context.target.tensors) == 4:  # use_bias=False
        if (b_in is not None and np.any(b_in)) or (b_out is not None and np.any(b_out)):
            raise IncompatibleWeightsError("the torch attention has non-zero biases and the Keras "
                                           "MultiHeadAttention none (use_bias=False).")
        return [*kernels, out_kernel]
    b_in = b_in if b_in is not None else np.zeros(w_in.shape[0], w_in.dtype)  # no bias: a zero bias, exactly
    b_out = b_out if b_out is not None else np.zeros(w_out.shape[0], w_out.dtype)
    q, k, v = layout.attention_in_bias_to_keras(b_in, heads)
    return [kernels[0], q, kernels[1], k, kernels[2], v, out_kernel, b_out]


def _attention_to_torch(arrays: Arrays, context: PairContext) -> Arrays:
    kernels, biases, out_kernel, out_bias = _keras_attention_parts(arrays)
    features, heads, width = kernels[0].shape
    _check_heads(context.target.groups, heads)
    if heads * width != features or tuple(out_kernel.shape) != (heads, width, features):
        raise IncompatibleWeightsError(f"torch's MultiheadAttention needs heads x key_dim == value_dim x heads == "
                                       f"the input and output width; the Keras layer has kernels "
                                       f"{[tuple(k.shape) for k in kernels]} and output {tuple(out_kernel.shape)}.")
    w_in, b_in = layout.attention_qkv_to_torch(kernels, biases)
    w_out = layout.attention_out_proj_to_torch(out_kernel)
    wanted = {"in_bias": False, "out_bias": False}
    out: Arrays = []
    for spec in context.target.tensors:  # in the torch layer's own order, told apart by shape
        if len(spec.shape) == 2:
            out.append(w_in if spec.shape[0] == 3 * spec.shape[1] else w_out)
        elif spec.shape[0] == w_in.shape[0]:
            wanted["in_bias"] = True
            out.append(b_in if b_in is not None else np.zeros(w_in.shape[0], w_in.dtype))
        else:
            wanted["out_bias"] = True
            out.append(out_bias if out_bias is not None else np.zeros(w_out.shape[0], w_out.dtype))
    for key, bias in (("in_bias", b_in), ("out_bias", out_bias)):
        if not wanted[key] and bias is not None and np.any(bias):
            which = "query/key/value" if key == "in_bias" else "output"
            raise IncompatibleWeightsError(f"the Keras MultiHeadAttention has non-zero {which} biases and the torch "
                                           "attention none there (bias=False).")
    return out


def _attention_probe(context: PairContext) -> tuple[int, ...]:
    """Queries, keys and values of 4 tokens each, stacked on the token axis: three different
    inputs, so that a q/k/v mix-up changes the output."""
    return (3 * 4, context.keras_side.tensors[0].shape[0])


def _attention_torch(F: Any, t: list[Any], x: Any, p: LayerParams) -> Any:
    w_in, b_in, w_out, b_out = _torch_attention_parts(t)
    if not p.groups:
        raise IncompatibleWeightsError("the number of attention heads is known on neither side.")
    tokens = x.shape[1] // 3
    q, k, v = (x[:, i * tokens:(i + 1) * tokens].transpose(0, 1) for i in range(3))  # (T, N, d)
    out, _ = F.multi_head_attention_forward(q, k, v, w_in.shape[1], p.groups, w_in, b_in, None, None, False,
                                            0.0, w_out, b_out, training=False, need_weights=False)
    return out.transpose(0, 1)


def _attention_keras(ops: Any, a: Arrays, x: Any, p: LayerParams) -> Any:
    """What keras.layers.MultiHeadAttention computes (query scaled by 1/sqrt(key_dim))."""
    kernels, biases, out_kernel, out_bias = _keras_attention_parts(a)
    tokens = x.shape[1] // 3
    inputs = [x[:, i * tokens:(i + 1) * tokens] for i in range(3)]
    q, k, v = (ops.einsum("btd,dhk->bthk", inp, kernel) + (biases[i] if biases else 0.0)
               for i, (inp, kernel) in enumerate(zip(inputs, kernels)))
    scores = ops.einsum("bthk,bshk->bhts", q * (1.0 / float(np.sqrt(kernels[0].shape[2]))), k)
    y = ops.einsum("bthk,hkd->btd", ops.einsum("bhts,bshk->bthk", ops.softmax(scores, axis=-1), v), out_kernel)
    return y + out_bias if out_bias is not None else y


def _torch_attention_module(module: Any, torch: Any) -> bool:
    """An `nn.MultiheadAttention` whose function Keras' layer computes: one embedding width for
    queries, keys and values (the fused in_proj), no extra key/value biases, no zero attention."""
    return (isinstance(module, torch.nn.MultiheadAttention) and bool(module._qkv_same_embed_dim)
            and module.bias_k is None and module.bias_v is None and not module.add_zero_attn
            and isinstance(module.out_proj, torch.nn.Linear))


def _fused_qkv_module(module: Any, torch: Any) -> bool:
    """timm's `Attention` (and its likes): no tensors of its own, a `qkv` Linear (3d from d) and a
    `proj` Linear (d from d) as children, nothing else but identities and dropouts (no q/k
    normalisation), an int `num_heads` dividing d, and the usual scale head_dim ** -0.5. Its
    `qkv` stacks q, k and v by rows as `in_proj_weight` does."""
    if list(module.parameters(recurse=False)) or list(module.buffers(recurse=False)):
        return False
    nn = torch.nn
    children = dict(module.named_children())
    qkv, proj, heads = children.get("qkv"), children.get("proj"), getattr(module, "num_heads", None)
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(heads, int) and heads > 0):
        return False
    width = qkv.in_features
    if qkv.out_features != 3 * width or (proj.in_features, proj.out_features) != (width, width) or width % heads:
        return False
    scale = getattr(module, "scale", None)
    if scale is not None and not np.isclose(float(scale), (width // heads) ** -0.5, rtol=1e-6, atol=0):
        return False
    return all(isinstance(child, (nn.Identity, nn.Dropout)) for name, child in children.items()
               if name not in ("qkv", "proj"))


def _torch_attention(module: Any, torch: Any) -> bool:
    return _torch_attention_module(module, torch) or _fused_qkv_module(module, torch)


def torch_merged_children(module: Any, torch: Any) -> tuple[str, ...]:
    """Children of `module` whose tensors belong to its own layer (named `child.tensor`): the
    `out_proj` of an `nn.MultiheadAttention`, the `qkv` and `proj` of a timm-style attention;
    each is one Keras MultiHeadAttention. () for any other module."""
    if _torch_attention_module(module, torch):
        return ("out_proj",)
    return ("qkv", "proj") if _fused_qkv_module(module, torch) else ()


def torch_file_merges(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[str, str]]:
    """State-dict keys (with their shapes) that belong to another module's layer, as (layer,
    tensor name), as `torch_merged_children` groups a live module: the `out_proj.weight` and
    `out_proj.bias` of a module holding an `in_proj_weight` (`nn.MultiheadAttention`), and the
    `qkv.*` and `proj.*` of a module with a `qkv.weight` (3d, d) and a `proj.weight` (d, d) and
    nothing else (timm's attention)."""
    merged = {}
    for key in shapes:
        module, _, tensor = key.rpartition(".")
        parent, _, child = module.rpartition(".")
        prefix = f"{parent}." if parent else ""
        if child == "out_proj" and f"{prefix}in_proj_weight" in shapes:
            merged[key] = (parent or "(root)", f"out_proj.{tensor}")
        elif child in ("qkv", "proj") and _fused_qkv_file(shapes, prefix):
            merged[key] = (parent or "(root)", f"{child}.{tensor}")
    return merged


def _fused_qkv_file(shapes: dict[str, tuple[int, ...]], prefix: str) -> bool:
    qkv, proj = shapes.get(f"{prefix}qkv.weight"), shapes.get(f"{prefix}proj.weight")
    if qkv is None or proj is None or len(qkv) != 2 or qkv[0] != 3 * qkv[1] or tuple(proj) != (qkv[1], qkv[1]):
        return False
    inside = {key[len(prefix):] for key in shapes if key.startswith(prefix) and "." not in key[len(prefix):]}
    children = {key[len(prefix):].split(".")[0] for key in shapes if key.startswith(prefix)} - inside
    return not inside and children == {"qkv", "proj"}


def _keras_attention_layer(layer: Any, keras: Any) -> bool:
    """A MultiHeadAttention over the token axis of (batch, tokens, features) inputs, its output
    as wide as its query input (no `output_shape`)."""
    if not isinstance(layer, keras.layers.MultiHeadAttention):
        return False
    axes = getattr(layer, "_attention_axes", None)
    return (axes is None or tuple(axes) == (1,)) and getattr(layer, "_output_shape", None) is None


def _keras_attention_file(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> bool:
    return [len(s) for s in shapes] in ([3, 2, 3, 2, 3, 2, 3, 1], [3, 3, 3, 3])


def _torch_attention_file(shapes: dict[str, tuple[int, ...]]) -> bool:
    names = set(shapes)
    for inner, outer in (("in_proj", "out_proj."), ("qkv.", "proj.")):
        weight = f"{inner}_weight" if inner == "in_proj" else f"{inner}weight"
        bias = f"{inner}_bias" if inner == "in_proj" else f"{inner}bias"
        if ({weight, f"{outer}weight"} <= names <= {weight, bias, f"{outer}weight", f"{outer}bias"}
                and len(shapes[weight]) == 2 and shapes[weight][0] == 3 * shapes[weight][1]):
            return True
    return False


# Class tokens (1, 1, d) and position embeddings (1, T, d): loose variables, like the layer
# scale. torchvision's ViT keeps `class_token` on the model itself and `pos_embedding` on its
# encoder; a Keras model holds each in a layer of one variable. The same tensor on both sides.

def _lone_embedding(shapes: dict[str, tuple[int, ...]]) -> bool:
    if len(shapes) != 1:
        return False
    (name, shape), = shapes.items()
    return name not in ("weight", "bias") and len(shape) == 3 and shape[0] == 1


_NOT_EMBEDDINGS = ("kernel", "depthwise_kernel", "pointwise_kernel", "bias", "alpha", "gamma", "beta", "embeddings")


def _keras_lone_embedding(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> bool:
    return (len(shapes) == 1 and len(shapes[0]) == 3 and shapes[0][0] == 1
            and names[0].rsplit("/", 1)[-1] not in _NOT_EMBEDDINGS)


def _embedding_as_is(arrays: Arrays, context: PairContext) -> Arrays:
    return [layout.embedding_as_is(arrays[0], context.target.tensors[0].shape)]


def _resample_embedding(arrays: Arrays, context: PairContext, mode: str, prefix_tokens: int | None) -> Arrays:
    """The declared change: the source's position embedding resampled onto the target's grid."""
    source, shape = arrays[0], tuple(context.target.tensors[0].shape)
    if source.ndim != 3 or len(shape) != 3:
        raise IncompatibleWeightsError(f"only a position embedding (1, tokens, features) is resampled; received "
                                       f"{source.shape} for a target of shape {shape}.")
    prefix = prefix_tokens if prefix_tokens is not None else prefix_tokens_between(source.shape[1], shape[1])
    return [resample_position_embedding(source, shape, mode, prefix)]


MULTI_HEAD_ATTENTION = LayerKind(
    name="multi_head_attention",  # torch nn.MultiheadAttention (with its out_proj) <-> Keras MultiHeadAttention
    torch_tensors=("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"),
    keras_tensors=("query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel", "value/bias",
                   "attention_output/kernel", "attention_output/bias"),
    to_keras=_attention_to_keras, to_torch=_attention_to_torch,
    # derived from the layout ops (s: q, k and v, which Keras keeps as three tensors)
    describe_to_keras=(f"in_proj -> query/key/value {layout.ATTENTION_IN.describe()}, "
                       f"out_proj -> output {layout.ATTENTION_OUT.describe()}"),
    describe_to_torch=(f"query/key/value -> in_proj {layout.ATTENTION_IN.inverse.describe()}, "
                       f"output -> out_proj {layout.ATTENTION_OUT.inverse.describe()}"),
    keras_layer=_keras_attention_layer, torch_module=_torch_attention,
    keras_file=lambda names, shapes: _keras_attention_file(names, shapes),
    torch_file=_torch_attention_file,
    probe_shape=_attention_probe, torch_op=_attention_torch, keras_op=_attention_keras,
    # the heads: a torch module's num_heads, a Keras layer's (its kernels say it too); a
    # mismatch is refused (the plan compares them; the converters check a file's)
    keras_groups=lambda layer: int(layer.num_heads), torch_groups=lambda module: int(module.num_heads),
    same_tensor_count=False,  # torch 4 (or 2) tensors, Keras 8 (or 4); the converters check them
    # torch's module returns (output, weights), which the stack check does not take apart yet
    output_comparable=False,
)

TOKEN_EMBEDDING = LayerKind(
    name="token_embedding",  # a lone (1, T, d) variable: a class token, a position embedding
    torch_tensors=("<parameter>",), keras_tensors=("<variable>",),
    to_keras=_embedding_as_is, to_torch=_embedding_as_is,
    describe_to_keras="(1,T,d) as is", describe_to_torch="(1,T,d) as is",
    # a layer of no other kind with one (1, T, d) variable that is no kernel (a bias-free 1-wide
    # Conv1D's) nor a PReLU's (1, 1, C) alpha
    keras_layer=lambda layer, keras: len(layer.weights) == 1 and _keras_lone_embedding(
        [layer.weights[0].name], [tuple(int(d) for d in layer.weights[0].shape)]),
    # a module of no other kind owning one (1, T, d) parameter (torchvision's VisionTransformer
    # its class_token, its Encoder the pos_embedding)
    torch_module=lambda m, torch: _lone_embedding({n: tuple(t.shape) for n, t in m.named_parameters(recurse=False)})
                                  and not list(m.named_buffers(recurse=False)),
    keras_file=_keras_lone_embedding,
    torch_file=_lone_embedding,
    probe_shape=lambda c: tuple(c.keras_side.tensors[0].shape[1:]),
    torch_op=lambda F, t, x, p: x + t[0],
    keras_op=lambda ops, a, x, p: x + a[0],
    output_comparable=False,  # its torch "layer" is the module that owns it (the whole model)
    resample=_resample_embedding,
)
