"""The shape of the kind table: `LayerKind` (one kind of weighted layer, everything the tool
knows about it), `LayerSpec` (one weighted layer of a model or a file, of a kind), what
converters and probe ops receive (`PairContext`, `LayerParams`), and the small helpers every
family of kinds uses. A layer and its kind refer to each other, so they live in one module.
No framework is imported here: recognisers receive the framework's layer or module, probe ops
the framework module, from the caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from transfer.layers import FROM_FILE, Framework, TensorSpec

if TYPE_CHECKING:
    from transfer.flatten_order import Order
    from transfer.rearrange import Rearrange

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


@dataclass(frozen=True, eq=False)
class LayerKind:
    """One kind of weighted layer. Kinds are compared by identity: each is one object of the
    table (`transfer.kinds.KINDS`, or `transfer.kinds.OTHER`).

    Attributes:
        name: the kind's name in reports and mapping errors.
        torch_tensors / keras_tensors: tensor names in each framework's own order.
        to_keras / to_torch: convert one layer's tensors across frameworks (pure numpy).
        describe_to_keras / describe_to_torch: the conversion as the report states it.
        keras_layer: is this Keras layer of the kind? (checked in table order)
        torch_module: is this torch module of the kind? (checked in table order)
        keras_file: from a Keras weights file's short weight names and shapes.
        onnx_ops / onnx_node: an ONNX node of these types, and which of them is of the kind.
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
    # a torch loose variable that its module applies after the module's children (ConvNeXt's
    # layer scale, where Keras has a layer of its own): `suggest` aligns it behind them
    torch_used_after_children: bool = False
    # the two sides hold the same number of tensors (a separable pair may fold a bias: no)
    same_tensor_count: bool = True
    reads_flattened: bool = False  # may read a flattened feature map (the CHW vs HWC row order)
    input_channel_axis: dict[str, int] | None = None  # kernel axis of input channels, for `adapt`
    # a declared change of the tensor onto the target's shape (a rule's `resample: MODE`):
    # (arrays, context, mode, prefix tokens or None) -> arrays. Not a layout conversion: what it
    # returns is not the source's function, and verification must not call it equal to the source.
    resample: Callable[[Arrays, PairContext, str, int | None], Arrays] | None = None
    # ONNX: the node types that may be this kind, and whether a node of one of them is
    # (op type, its attribute reader (name, default) -> value, its stored weights' shapes)
    onnx_ops: tuple[str, ...] = ()
    onnx_node: Callable[[str, Callable[[str, Any], Any], Sequence[tuple[int, ...]]], bool] = (
        lambda op, attribute, shapes: True)
    display: str = ""  # how messages name the kind where its name is not how people write it ("BatchNorm")

    @property
    def title(self) -> str:
        return self.display or self.name

    def convert(self, arrays: Arrays, context: PairContext) -> Arrays:
        """Source tensors -> the target framework's layout (same framework: unchanged)."""
        if context.source.framework == context.target.framework:
            return self.same_framework(arrays, context) if self.same_framework else list(arrays)
        return self.to_keras(arrays, context) if context.target.framework == "keras" else self.to_torch(arrays, context)

    def describe(self, source_framework: str, target_framework: str) -> str:
        if source_framework == target_framework:
            return "none (same framework)"
        return self.describe_to_keras if target_framework == "keras" else self.describe_to_torch


@dataclass(frozen=True)
class LayerSpec:
    """A layer with weights: its kind and its tensors in the framework's own order."""

    name: str
    framework: Framework
    kind: LayerKind
    tensors: tuple[TensorSpec, ...]
    epsilon: float | None = None  # normalisations only
    epsilon_origin: str = ""  # where `epsilon` comes from (model, file, or an assumed default)
    flatten: Order = FROM_FILE  # a live Keras Dense layer's input order (torch's needs the other side)
    kind_from_file: bool = False  # kind guessed from names and shapes, not from a class
    groups: int | None = None  # GroupNorm's groups, a (grouped) conv's groups; None: unknown
    class_name: str = ""  # the layer's or module's class (for messages), "" when read from a file

    @property
    def params(self) -> int:
        return sum(t.size for t in self.tensors)

    @property
    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.tensors]


def reversible(op: Rearrange, keras_sizes: Callable[[PairContext], dict[str, int]] | None = None) -> dict[str, Any]:
    """A kind's `to_keras`, `to_torch` and both descriptions, from one layout op of its first
    tensor (torch -> Keras; the rest pass through): the inverse and the words are derived.
    `keras_sizes` gives the axes a torch tensor does not tell (a depthwise conv's channels)."""
    def to_keras(arrays: Arrays, context: PairContext) -> Arrays:
        return [op(arrays[0], **(keras_sizes(context) if keras_sizes else {})), *arrays[1:]]

    return {"to_keras": to_keras, "to_torch": first(op.inverse),
            "describe_to_keras": op.describe(), "describe_to_torch": op.inverse.describe()}


def renamed(torch_tensors: tuple[str, ...], keras_tensors: tuple[str, ...],
            convert: Callable[[Arrays, PairContext], Arrays] | None = None) -> dict[str, Any]:
    """A kind whose tensors keep their layout and change only their names (the norms): both
    tensor lists, the converters (`convert`, by default the tensors as they are) and the
    descriptions, derived from the names."""
    convert = convert or same
    return {"torch_tensors": torch_tensors, "keras_tensors": keras_tensors, "to_keras": convert, "to_torch": convert,
            "describe_to_keras": f"{','.join(torch_tensors)} -> {','.join(keras_tensors)}",
            "describe_to_torch": f"{','.join(keras_tensors)} -> {','.join(torch_tensors)}"}


def first(convert: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays, PairContext], Arrays]:
    """A converter that changes the kernel and passes the bias (and the rest) through."""
    return lambda arrays, context: [convert(arrays[0]), *arrays[1:]]


def bias(arrays: Sequence[Any]) -> Any:
    return arrays[1] if len(arrays) > 1 else None


def with_bias(y: Any, arrays: Arrays) -> Any:
    return y + arrays[1] if len(arrays) > 1 else y


def keras_is(*class_names: str) -> Callable[[Any, Any], bool]:
    return lambda layer, keras: isinstance(layer, tuple(getattr(keras.layers, c) for c in class_names))


def ndim(shapes: Sequence[tuple[int, ...]], ndim: int) -> bool:
    return bool(shapes) and len(shapes[0]) == ndim


def same(arrays: Arrays, context: PairContext) -> Arrays:
    return list(arrays)  # the same tensors, in the same order, in both frameworks
