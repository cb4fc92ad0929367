"""Per-channel vectors: PReLU's slopes, ConvNeXt's layer scale."""

from __future__ import annotations

from transfer import layout
from transfer.kinds.base import (
    Arrays,
    LayerKind,
    PairContext,
    keras_is,
)


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


PRELU = LayerKind(
    name="prelu",  # torch PReLU(C) <-> Keras PReLU(shared_axes=[1, 2]) after a conv, or after a dense
    torch_tensors=("weight",), keras_tensors=("alpha",),
    to_keras=_to_target_alpha, to_torch=_to_target_alpha,
    describe_to_keras="alpha (C,) -> (1,1,C) or (C,)", describe_to_torch="alpha (1,1,C) or (C,) -> (C,)",
    keras_layer=keras_is("PReLU"),
    torch_module=lambda m, torch: isinstance(m, torch.nn.PReLU),
    keras_file=lambda names, shapes: list(names) == ["alpha"],
    torch_file=lambda shapes: list(shapes) == ["weight"] and len(shapes["weight"]) == 1,
    probe_shape=_prelu_probe,
    torch_op=lambda F, t, x, p: F.prelu(x, t[0]),
    keras_op=lambda ops, a, x, p: ops.where(x >= 0, x, x * a[0]),
)

CHANNEL_SCALE = LayerKind(
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
    torch_used_after_children=True,  # CNBlock: layer_scale * block(x)
)
