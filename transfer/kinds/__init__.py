"""The table of layer kinds: everything the tool knows about one kind of weighted layer, in
one entry, grouped by family (`conv`, `dense`, `norm`, `scale`, `attention`; the entry's shape
is `transfer.kinds.base.LayerKind`).

An entry says which tensors the kind has in each framework, how they convert between the
PyTorch and Keras layouts (pure numpy, from `transfer.layout`), how to recognise the kind in a
live model or in a weights file, and how to run one layer of it in each framework on a probe
input for verification. `suggest` aligns layers through the same converters. Adding a kind:
one `LayerKind` in its family's module and its place in `KINDS` below (docs/development.md).
`KINDS` is written out, not collected at import: recognisers are tried in this order. Kinds
travel as these objects; a name (`kind(name)`) is for reports and people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from transfer.errors import IncompatibleWeightsError
from transfer.kinds.attention import MULTI_HEAD_ATTENTION, TOKEN_EMBEDDING, torch_file_merges, torch_merged_children
from transfer.kinds.base import HWC, Arrays, LayerKind, LayerParams, LayerSpec, PairContext
from transfer.kinds.conv import (
    CONV2D,
    CONV2D_TRANSPOSE,
    DEPTHWISE_CONV2D,
    POINTWISE,
    SEPARABLE_CONV2D,
    torch_separable_children,
)
from transfer.kinds.dense import DENSE
from transfer.kinds.norm import BATCHNORM, GROUPNORM, LAYERNORM
from transfer.kinds.scale import CHANNEL_SCALE, PRELU

__all__ = ["BATCHNORM", "CHANNEL_SCALE", "CONV2D", "CONV2D_TRANSPOSE", "DENSE", "DEPTHWISE_CONV2D", "GROUPNORM", "HWC",
           "KINDS", "LAYERNORM", "MULTI_HEAD_ATTENTION", "OTHER", "POINTWISE", "PRELU", "SEPARABLE_CONV2D",
           "TOKEN_EMBEDDING", "Arrays", "LayerKind", "LayerParams", "LayerSpec", "PairContext", "torch_file_merges",
           "torch_merged_children", "torch_separable_children"]

KINDS: tuple[LayerKind, ...] = (
    CONV2D_TRANSPOSE,
    SEPARABLE_CONV2D,
    DEPTHWISE_CONV2D,
    CONV2D,
    DENSE,
    BATCHNORM,
    LAYERNORM,
    GROUPNORM,
    PRELU,
    CHANNEL_SCALE,
    POINTWISE,
    MULTI_HEAD_ATTENTION,
    TOKEN_EMBEDDING,
)

BY_NAME: dict[str, LayerKind] = {kind.name: kind for kind in KINDS}


def _unconvertible(arrays: Arrays, context: PairContext) -> Arrays:
    raise IncompatibleWeightsError(
        f"no PyTorch <-> Keras layout conversion is known for '{context.source.name}' (a layer of no known kind); "
        f"known kinds: {', '.join(BY_NAME)}.")


def _never(*anything: Any) -> bool:
    return False


def _no_probe(*anything: Any) -> Any:
    raise IncompatibleWeightsError("a layer of no known kind has no probe op.")


# a weighted layer of no known kind: movable only within one framework, as is. Not in KINDS: no
# layer is recognised as it, it is what a layer is when no entry recognises it.
OTHER = LayerKind(
    name="other", torch_tensors=(), keras_tensors=(), to_keras=_unconvertible, to_torch=_unconvertible,
    describe_to_keras="none", describe_to_torch="none", keras_layer=_never, torch_module=_never, keras_file=_never,
    torch_file=_never, probe_shape=_no_probe, torch_op=_no_probe, keras_op=_no_probe)


def kind(name: str) -> LayerKind:
    """The table entry of a kind by its name (as reports write it), or an error naming the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise IncompatibleWeightsError(
            f"no PyTorch <-> Keras layout conversion is known for {name} layers; known kinds: "
            f"{', '.join(BY_NAME)}.") from None


def keras_layer_kind(layer: Any, keras: Any) -> LayerKind:
    return next((k for k in KINDS if k.keras_layer(layer, keras)), OTHER)


def torch_module_kind(module: Any, torch: Any) -> LayerKind:
    return next((k for k in KINDS if k.torch_module(module, torch)), OTHER)


def keras_file_kind(names: Sequence[str], shapes: Sequence[tuple[int, ...]]) -> LayerKind:
    """Kind of a Keras layer known only from a weights file (short weight names, shapes)."""
    return next((k for k in KINDS if k.keras_file(names, shapes)), OTHER)


def torch_file_kind(shapes: dict[str, tuple[int, ...]]) -> LayerKind:
    """Kind of a torch module known only by its state-dict entries (name -> shape)."""
    return next((k for k in KINDS if k.torch_file(shapes)), OTHER)


ONNX_WEIGHTED_OPS = frozenset(op for k in KINDS for op in k.onnx_ops)  # other nodes' constants are no weights


def onnx_node_kind(op: str, attribute: Callable[[str, Any], Any],
                   shapes: Sequence[tuple[int, ...]]) -> LayerKind | None:
    """Kind of an ONNX node with stored weights (shapes as stored). A node of a weighted type
    that no kind takes is OTHER when it holds a conv kernel (4-D: a grouped conv, a layer the
    tool cannot convert) and None otherwise (a constant operand, such as a MatMul's 3-D one)."""
    if op not in ONNX_WEIGHTED_OPS:
        return None
    found = next((k for k in KINDS if op in k.onnx_ops and k.onnx_node(op, attribute, shapes)), None)
    return found or (OTHER if len(shapes[0]) == 4 else None)


# kinds a file cannot tell apart: the first is what names and shapes suggest; a target layer of
# one of the others then decides
_FILE_LOOKALIKES = {CONV2D: (CONV2D_TRANSPOSE, DEPTHWISE_CONV2D), LAYERNORM: (GROUPNORM, CHANNEL_SCALE)}


def guessed_from_file(source_kind: LayerKind, target_kind: LayerKind) -> bool:
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


def pair_kind(source: LayerSpec, target: LayerSpec) -> LayerKind | None:
    """The kind whose conversion moves `source`'s tensors into `target`, or None.

    Besides equal kinds: a depthwise conv in one framework is a grouped conv2d in the other
    (Keras' ConvNeXt writes it as `Conv2D(groups=C)`), and a 1x1 conv and a dense layer are the
    same map (`pointwise`)."""
    if source.kind is target.kind:
        return source.kind
    if {source.kind, target.kind} == {DEPTHWISE_CONV2D, CONV2D}:
        grouped = source if source.kind is CONV2D else target
        if (grouped.groups or 0) > 1 or _keras_file_grouped_kernel(grouped):
            return CONV2D
    if source.kind_from_file and guessed_from_file(source.kind, target.kind):
        return target.kind
    if {source.kind, target.kind} == {CONV2D, DENSE}:
        return POINTWISE
    return None
