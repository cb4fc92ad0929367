"""A dense layer's inputs on both sides of a pair: each side's order read from its model
(`transfer.flatten_order`), a mapping's `flatten:` hint for a side no model tells about, and
the row permutation between them. What was declared rather than read is listed as unproven.

The hint `flatten: [C, H, W]` declares a plain flatten of a C x H x W map on each side whose
order cannot be read (torch: C, H, W order; Keras' Flatten: H, W, C); `flatten: false` declares
that the input was not flattened from a map. A side read from its model wins over the hint, and
a hint that contradicts a model is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from transfer import _frameworks
from transfer.adapter import Weights
from transfer.errors import IncompatibleWeightsError
from transfer.flatten_order import HWC, FlattenOrder, NotEstablished, Order, row_permutation, torch_order
from transfer.kinds import LayerSpec

HINT = ("Add `flatten: [channels, height, width]` to the rule (a plain flatten of that map: torch "
        "flattens C, H, W, Keras' Flatten H, W, C), or `flatten: false` (not flattened from a map).")


@dataclass(frozen=True, eq=False)
class DenseInputs:
    """Both sides' input orders (None: a vector) and `rows`: the target's input i is the
    source's input rows[i] (None: the same order)."""

    source: FlattenOrder | None
    target: FlattenOrder | None
    rows: np.ndarray | None
    unproven: tuple[str, ...] = ()

    def describe(self) -> str:
        sides = [f"{role}: {order.describe() if order else 'a vector'}"
                 for role, order in (("source", self.source), ("target", self.target))]
        return "; ".join(sides)


def features_of(spec: LayerSpec) -> int:
    """Inputs of a dense layer: torch (out, in), Keras (in, out)."""
    shape = spec.tensors[0].shape
    return int(shape[1] if spec.framework == "torch" else shape[0])


def _live_model(weights: Weights, framework: str, establish: bool) -> tuple[Any, str]:
    """The model behind an adapter (a live one, or a weights file's rebuilt known model)."""
    model = getattr(weights, "model", None)
    if model is not None and _frameworks.framework_of(model) == framework:
        return model, ""
    if not establish:
        return None, "--check reads no weights, so a weights file's model is not rebuilt"
    model, why = weights.runnable()
    if model is not None and _frameworks.framework_of(model) == framework:
        return model, ""
    return None, why or "a weights file of an unknown architecture has no model to read"


def _keras_side(weights: Weights, spec: LayerSpec, establish: bool) -> Order:
    if not isinstance(spec.flatten, NotEstablished):
        return spec.flatten
    model, why = _live_model(weights, "keras", establish)
    if model is None:
        return NotEstablished(f"{spec.flatten.reason}; {why}")
    from transfer.live import adapter_for

    rebuilt = adapter_for(model).layers().get(spec.name)
    return rebuilt.flatten if rebuilt is not None else NotEstablished(f"the rebuilt model has no layer '{spec.name}'")


def _torch_side(weights: Weights, spec: LayerSpec, hwc: HWC | None, establish: bool) -> Order:
    graph_order = getattr(weights, "dense_input_order", None)  # a graph file that records its reshapes (ONNX)
    if graph_order is not None:
        return graph_order(spec.name, hwc, features_of(spec))
    model, why = _live_model(weights, "torch", establish)
    if model is None:
        return NotEstablished(why)
    return torch_order(model, spec.name, hwc, features_of(spec), _frameworks.torch())


def resolve_dense_inputs(pair: Any, source: Weights, target: Weights, where: str, establish: bool) -> DenseInputs:
    """Read both sides' orders, apply the rule's hint to what no model tells, and derive the rows.
    `pair` is a `transfer.plan.Pair` (source, target, rule)."""
    sides = (("source", source, pair.source), ("target", target, pair.target))
    hint = pair.rule.flatten
    hint_hwc: HWC | None = (hint[1], hint[2], hint[0]) if isinstance(hint, tuple) else None
    features = features_of(pair.source)
    orders: dict[str, Order] = {role: _keras_side(w, spec, establish)
                                for role, w, spec in sides if spec.framework == "keras"}
    read_maps = [o for o in orders.values() if isinstance(o, FlattenOrder)]
    hwc = read_maps[0].hwc if read_maps else hint_hwc
    if hint_hwc is not None and read_maps and read_maps[0].hwc != hint_hwc:
        height, width, channels = read_maps[0].hwc
        raise IncompatibleWeightsError(f"{where}: the rule says `flatten: {list(hint)}`, but the Keras model "
                                       f"flattens a {channels}x{height}x{width} map (C x H x W; "
                                       f"{read_maps[0].how}).")
    for role, w, spec in sides:
        if spec.framework == "torch":
            orders[role] = _torch_side(w, spec, hwc, establish)
    resolved: dict[str, FlattenOrder | None] = {}
    unproven: list[str] = []
    same_framework = pair.source.framework == pair.target.framework
    # a vector read from one model: the other side reads one too (channel order is the same in
    # both frameworks, as for every conv's input), so nothing is assumed about it
    vector_read = any(order is None for order in orders.values())
    for role, _, spec in sides:
        order = orders[role]
        if isinstance(order, FlattenOrder) and hint is None and not _identity(order):
            raise IncompatibleWeightsError(f"{where}: the rule says `flatten: false`, but the {role} model "
                                           f"flattens a map before '{spec.name}' ({order.describe()}).")
        if not isinstance(order, NotEstablished):
            resolved[role] = order
        elif hint_hwc is not None:
            resolved[role] = FlattenOrder.standard(hint_hwc, spec.framework, "declared in the mapping "
                                                   f"(flatten: {list(hint)}), not read from a model", False)
            unproven.append(f"{role} flatten order declared, not read from the model: {order.reason}")
        elif hint is None or vector_read:
            resolved[role] = None
            if not vector_read:
                unproven.append(f"{role} input declared not flattened (flatten: false), not read from the "
                                f"model: {order.reason}")
        elif not establish:
            resolved[role] = FlattenOrder.standard(hwc, spec.framework, "not read: --check reads no "
                                                   "weights", False) if hwc else None
        elif same_framework:
            # one framework, one convention: the other side's order, as for every layer's input
            # channels (an assumption is listed only where the two frameworks' conventions differ)
            resolved[role] = None
        else:
            raise IncompatibleWeightsError(f"{where}: cannot tell how the input of the dense layer "
                                           f"'{spec.name}' ({role}) was flattened: {order.reason}. {HINT}")
    if same_framework and hint == "auto" and not vector_read:
        for role, other in (("source", "target"), ("target", "source")):
            if isinstance(orders[role], NotEstablished):
                resolved[role] = resolved[other]
    source_order, target_order = resolved["source"], resolved["target"]
    if source_order is not None and target_order is not None and source_order.hwc != target_order.hwc:
        raise IncompatibleWeightsError(f"{where}: the two dense layers read different maps: source "
                                       f"{source_order.describe()}; target {target_order.describe()}.")
    try:
        rows = row_permutation(source_order, target_order, features)
    except ValueError as exc:
        raise IncompatibleWeightsError(f"{where}: {exc}.") from exc
    return DenseInputs(source_order, target_order, rows, tuple(unproven))


def _identity(order: FlattenOrder) -> bool:
    return bool(np.array_equal(order.positions, np.arange(order.size)))


def unplanned_dense_inputs(source: LayerSpec, target: LayerSpec, rule: Any) -> DenseInputs:
    """For a pair made outside a plan (`suggest`'s shape checks): each framework's plain flatten
    of the map the Keras side reports (or the rule declares); nothing is read from a model."""
    hint = rule.flatten
    if hint is None or source.framework == target.framework:
        return DenseInputs(None, None, None)
    keras_side = target if target.framework == "keras" else source
    if isinstance(hint, tuple):
        hwc: HWC | None = (hint[1], hint[2], hint[0])
    elif isinstance(keras_side.flatten, FlattenOrder):
        hwc = keras_side.flatten.hwc
    elif keras_side.flatten is None:
        hwc = None
    else:
        raise IncompatibleWeightsError(f"cannot tell whether this dense layer's input was flattened from a "
                                       f"feature map. {HINT}")
    if hwc is None:
        return DenseInputs(None, None, None)
    orders = {side.framework: FlattenOrder.standard(hwc, side.framework, "plain flatten", False)
              for side in (source, target)}
    rows = row_permutation(orders[source.framework], orders[target.framework], features_of(source))
    return DenseInputs(orders[source.framework], orders[target.framework], rows)
