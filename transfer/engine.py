"""The engine: resolve a mapping against a source and a target, check every tensor, then
write all of them or none.

`plan_transfer` reads metadata only (names, shapes, dtypes) and raises on any problem;
`execute` reads the planned source tensors, converts and checks them all, and only then
assigns them to the target, so an error leaves the target exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from transfer import layout
from transfer.errors import IncompatibleWeightsError, MappingError, StrictModeError
from transfer.layers import Kind, LayerSpec
from transfer.mapping import Mapping, Rule, did_you_mean, is_declared

TORCH_BN = ("weight", "bias", "running_mean", "running_var")


class WeightTarget(Protocol):
    framework: str
    description: str
    model: Any

    def layers(self) -> dict[str, LayerSpec]: ...

    def read(self, name: str) -> list[np.ndarray]: ...

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None: ...

    def freeze(self, names: list[str]) -> None: ...


@dataclass(frozen=True)
class Pair:
    """One planned move: a source layer into a target layer by one rule."""

    source: LayerSpec
    target: LayerSpec
    rule: Rule
    kind: Kind

    @property
    def conversion(self) -> str:
        if self.source.framework == self.target.framework:
            return "none (same framework)"
        return layout.DESCRIPTIONS.get((self.source.framework, self.kind), "none")


@dataclass
class Plan:
    pairs: list[Pair]
    skipped: list[dict[str, Any]]  # {layer, reason, declared}
    untouched: list[dict[str, Any]]  # {layer, declared}
    frozen: list[str]
    notes: list[str] = field(default_factory=list)

    def strict_problems(self) -> list[str]:
        problems = [f"source layer '{s['layer']}' skipped: {s['reason']}"
                    for s in self.skipped if not s["declared"]]
        problems += [f"target layer '{u['layer']}' left at its initial value"
                     for u in self.untouched if not u["declared"]]
        return problems


def plan_transfer(mapping: Mapping, source: Any, target: WeightTarget, strict: bool = False) -> Plan:
    """Match every weighted source layer to a rule and check all shapes; read no tensor."""
    sources = source.layers()
    targets = target.layers()
    origin = mapping.origin
    _check_literal_rules(mapping, sources, targets, source.description)
    pairs: list[Pair] = []
    skipped: list[dict[str, Any]] = []
    used_rules: set[int] = set()
    receivers: dict[str, str] = {}
    for name, spec in sources.items():
        matches = [(i, rule, rule.target_for(name)) for i, rule in enumerate(mapping.rules)]
        matches = [m for m in matches if m[2] is not None]
        declared_skip = is_declared(name, mapping.skip)
        if len(matches) > 1:
            lines = " and ".join(_rule_where(r) for _, r, _ in matches)
            raise MappingError(f"{origin}: source layer '{name}' is matched by two rules ({lines}); "
                               "each source layer may match one rule.")
        if not matches:
            reason = "declared in skip" if declared_skip else "no rule matched"
            skipped.append({"layer": name, "reason": reason, "declared": declared_skip})
            continue
        index, rule, target_name = matches[0]
        used_rules.add(index)
        if declared_skip:
            raise MappingError(f"{origin}: source layer '{name}' is listed in skip and also "
                               f"matched by the rule {_rule_where(rule)}.")
        if target_name not in targets:
            raise MappingError(f"{origin}: {_rule_where(rule)}: source layer '{name}' maps to "
                               f"'{target_name}', which is not a weighted layer of "
                               f"{target.description}.{did_you_mean(target_name, list(targets))}")
        if target_name in receivers:
            raise MappingError(f"{origin}: source layers '{receivers[target_name]}' and '{name}' "
                               f"are both sent to target layer '{target_name}'.")
        receivers[target_name] = name
        pairs.append(Pair(spec, targets[target_name], rule,
                          pair_kind(spec, targets[target_name], origin, rule)))
    for index, rule in enumerate(mapping.rules):
        if rule.is_pattern and index not in used_rules:
            raise MappingError(f"{origin}: {_rule_where(rule)}: the pattern '{rule.source}' "
                               f"matches no weighted layer of {source.description}.")
    _check_shapes(pairs, origin)
    untouched = [{"layer": name, "declared": is_declared(name, mapping.untouched)}
                 for name in targets if name not in receivers]
    plan = Plan(pairs, skipped, untouched, _frozen(mapping, targets))
    unknown_eps = [p.source.name for p in pairs if p.kind == "batchnorm" and p.source.epsilon is None]
    if unknown_eps:
        plan.notes.append(f"BatchNorm epsilon of {len(unknown_eps)} source layer(s) unknown (Keras weight "
                          "files do not store it): assumed equal to the target's; set "
                          "source.batchnorm_epsilon to have it checked")
    unused = [p for p in mapping.skip if not any(is_declared(s, (p,)) for s in sources)]
    if unused:
        plan.notes.append(f"skip entries absent from this source: {', '.join(unused)}")
    if strict and plan.strict_problems():
        problems = plan.strict_problems()
        raise StrictModeError(f"{origin}: --strict: {len(problems)} undeclared "
                              f"{'difference' if len(problems) == 1 else 'differences'}: "
                              + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
                              + ". Declare them in the mapping's skip or untouched lists.")
    return plan


def _rule_where(rule: Rule) -> str:
    return f"line {rule.line} ('{rule.source}')" if rule.line else f"rule '{rule.source}'"


def _check_literal_rules(mapping: Mapping, sources: dict[str, LayerSpec],
                         targets: dict[str, LayerSpec], description: str) -> None:
    for rule in mapping.rules:
        if not rule.is_pattern and rule.source not in sources:
            raise MappingError(f"{mapping.origin}: {_rule_where(rule)}: {description} has no "
                               f"weighted layer '{rule.source}'.{did_you_mean(rule.source, list(sources))}")


def _frozen(mapping: Mapping, targets: dict[str, LayerSpec]) -> list[str]:
    frozen = []
    for pattern in mapping.freeze:
        matched = [name for name in targets if is_declared(name, (pattern,))]
        if not matched:
            raise MappingError(f"{mapping.origin}: freeze pattern '{pattern}' matches no weighted "
                               f"target layer.{did_you_mean(pattern, list(targets))}")
        frozen += [name for name in matched if name not in frozen]
    return frozen


def pair_kind(source: LayerSpec, target: LayerSpec, origin: str, rule: Rule) -> Kind:
    if source.kind == target.kind:
        return target.kind
    # A 4-D weight read from a file looks like a plain conv; the target's class decides.
    if source.kind_from_file and source.kind == "conv2d" and target.kind in (
            "conv2d_transpose", "depthwise_conv2d"):
        return target.kind
    if source.framework == target.framework and "other" in (source.kind, target.kind):
        return target.kind
    raise IncompatibleWeightsError(
        f"{origin}: {_rule_where(rule)}: source layer '{source.name}' is a {source.kind} layer "
        f"and target layer '{target.name}' a {target.kind} layer; they cannot exchange weights.")


def _check_shapes(pairs: list[Pair], origin: str) -> None:
    """Convert zero-stride dummies (no memory) to compare every final shape up front."""
    problems = []
    for pair in pairs:
        dummies = [np.broadcast_to(np.zeros((), np.float32), t.shape) for t in pair.source.tensors]
        try:
            converted = convert_pair(pair, dummies, origin)
        except IncompatibleWeightsError as exc:
            problems.append(str(exc))
            continue
        got = [list(a.shape) for a in converted]
        if got != pair.target.shapes:
            problems.append(f"{origin}: {_rule_where(pair.rule)}: shape mismatch: source layer "
                            f"'{pair.source.name}' {pair.source.shapes} gives {got} after "
                            f"conversion ({pair.conversion}); target layer '{pair.target.name}' "
                            f"has {pair.target.shapes}.")
    if problems:
        raise IncompatibleWeightsError("\n".join(problems))


def convert_pair(pair: Pair, arrays: list[np.ndarray], origin: str = "<mapping>") -> list[np.ndarray]:
    """Source tensors of one pair -> the target's layout (same order as the target's)."""
    source, target = pair.source, pair.target
    where = f"{origin}: {_rule_where(pair.rule)}: '{source.name}' -> '{target.name}'"
    if len(arrays) != len(target.tensors):
        raise IncompatibleWeightsError(
            f"{where}: the source layer has {len(arrays)} tensors "
            f"({', '.join(t.name for t in source.tensors)}) and the target layer "
            f"{len(target.tensors)} ({', '.join(t.name for t in target.tensors)}).")
    try:
        if source.framework != target.framework:
            arrays = _cross_framework(pair, arrays)
        if pair.rule.adapt:
            arrays = _adapt(pair, arrays)
        if pair.kind == "batchnorm":
            arrays = _match_epsilon(pair, arrays, where)
    except IncompatibleWeightsError as exc:
        if str(exc).startswith(origin):
            raise
        raise IncompatibleWeightsError(f"{where}: {exc}") from exc
    return arrays


def _cross_framework(pair: Pair, arrays: list[np.ndarray]) -> list[np.ndarray]:
    kind, to_keras = pair.kind, pair.target.framework == "keras"
    first, rest = arrays[0], list(arrays[1:])
    if kind in ("conv2d", "conv2d_transpose"):
        convert = layout.TORCH_TO_KERAS[kind] if to_keras else layout.KERAS_TO_TORCH[kind]
        return [convert(first)] + rest
    if kind == "depthwise_conv2d":
        if to_keras:
            return [layout.depthwise_torch_to_keras(first, pair.target.tensors[0].shape[2])] + rest
        return [layout.depthwise_keras_to_torch(first)] + rest
    if kind == "dense":
        flatten = flatten_of(pair)
        convert = layout.dense_torch_to_keras if to_keras else layout.dense_keras_to_torch
        return [convert(first, flatten)] + rest
    if kind == "batchnorm":
        if len(arrays) != 4:
            raise IncompatibleWeightsError("BatchNorm needs all four tensors (scale, offset, "
                                           "mean, variance) on both sides.")
        return list(arrays)  # same order in both frameworks
    raise IncompatibleWeightsError(f"no PyTorch <-> Keras layout conversion is known for "
                                   f"{pair.kind} layers.")


def input_axis(kind: str, framework: str) -> int:
    """Axis of a conv kernel's input channels: HWIO in Keras, OIHW in torch."""
    if kind != "conv2d":
        raise IncompatibleWeightsError(f"input-channel adaptation applies to conv2d layers, not {kind}.")
    return 2 if framework == "keras" else 1


def adapted_channels(pair: Pair) -> tuple[int, int] | None:
    """(source, target) input channels of an adapted pair, or None."""
    if not pair.rule.adapt:
        return None
    return (pair.source.tensors[0].shape[input_axis(pair.kind, pair.source.framework)],
            pair.target.tensors[0].shape[input_axis(pair.kind, pair.target.framework)])


def _adapt(pair: Pair, arrays: list[np.ndarray]) -> list[np.ndarray]:
    axis = input_axis(pair.kind, pair.target.framework)
    channels = pair.target.tensors[0].shape[axis]
    return [layout.adapt_in_channels(arrays[0], axis, channels, pair.rule.adapt)] + list(arrays[1:])


def flatten_of(pair: Pair) -> tuple[int, int, int] | None:
    """(H, W, C) of the map flattened before a dense layer, from the rule or the Keras model."""
    if pair.rule.flatten != "auto":
        if pair.rule.flatten is None:
            return None
        channels, height, width = pair.rule.flatten
        return (height, width, channels)
    keras_side = pair.target if pair.target.framework == "keras" else pair.source
    if keras_side.flatten == "unknown":
        raise IncompatibleWeightsError(
            "cannot tell whether this dense layer's input was flattened from a feature map "
            "(torch flattens CHW, Keras HWC: the rows must then be permuted). Add "
            "`flatten: [channels, height, width]` to the rule, or `flatten: false`.")
    return keras_side.flatten


def _match_epsilon(pair: Pair, arrays: list[np.ndarray], where: str) -> list[np.ndarray]:
    source_eps, target_eps = pair.source.epsilon, pair.target.epsilon
    if source_eps is None or target_eps is None or np.isclose(source_eps, target_eps, rtol=1e-9, atol=0):
        return arrays
    if pair.rule.epsilon == "rescale":
        return [layout.batchnorm_rescale_gamma(arrays[0], arrays[3], source_eps, target_eps)] + arrays[1:]
    raise IncompatibleWeightsError(
        f"{where}: BatchNorm epsilon differs: source {source_eps:g} ({pair.source.epsilon_origin}), "
        f"target {target_eps:g}. The normalisation would change. Build the target with epsilon="
        f"{source_eps:g}, or add `epsilon: rescale` to the rule to rescale gamma exactly.")


@dataclass(frozen=True)
class Moved:
    pair: Pair
    notes: tuple[str, ...]


# Up to this many source bytes, every tensor is read once and held until all are checked
# (fast). Above it, a first pass reads and checks every tensor without keeping it, and a
# second pass reads, converts and assigns one layer at a time, so peak memory stays near the
# target plus twice the largest tensor, at the cost of reading the source twice.
STAGE_LIMIT_BYTES = 256 << 20


def execute(plan: Plan, source: Any, target: WeightTarget, origin: str,
            stage_limit: int = STAGE_LIMIT_BYTES) -> list[Moved]:
    """Read, check and convert every planned tensor; assign them only when all are good.
    Freezing is left to the caller, after any verification."""
    total = sum(t.size * np.dtype(_numpy_dtype(t.dtype)).itemsize for p in plan.pairs for t in p.source.tensors)
    if total <= stage_limit:
        prepared = [_prepare(pair, source, origin) for pair in plan.pairs]
        target.assign({pair.target.name: arrays for pair, arrays, _ in prepared})
        moved = [Moved(pair, notes) for pair, _, notes in prepared]
    else:
        moved = [Moved(pair, _prepare(pair, source, origin)[2]) for pair in plan.pairs]  # check all
        for pair in plan.pairs:
            target.assign({pair.target.name: _prepare(pair, source, origin)[1]})
    return moved


def _numpy_dtype(name: str) -> str:
    return "float32" if name == "bfloat16" else name


def _prepare(pair: Pair, source: Any, origin: str) -> tuple[Pair, list[np.ndarray], tuple[str, ...]]:
    """One pair's source tensors, checked and converted to the target's layout and dtype."""
    arrays = source.read(pair.source.name)
    notes = _check_values(pair, arrays, source)
    final = []
    for array, spec in zip(convert_pair(pair, arrays, origin), pair.target.tensors):
        if list(array.shape) != list(spec.shape):  # planned shapes were checked; files can lie
            raise IncompatibleWeightsError(
                f"{getattr(source, 'path', source.description)}: layer '{pair.source.name}' "
                f"holds shape {array.shape}, but its header said otherwise; target "
                f"'{pair.target.name}' needs {spec.shape}.")
        if str(array.dtype) != spec.dtype:
            notes.append(f"cast {array.dtype} -> {spec.dtype}")
        final.append(np.ascontiguousarray(array, dtype=np.dtype(spec.dtype)))
    return pair, final, tuple(dict.fromkeys(notes))


def _all_finite(array: np.ndarray) -> bool:
    """Fast path: a NaN or an infinity makes the sum of squares non-finite (one BLAS pass, no
    temporary array). A non-finite sum can also come from huge finite values, so the caller
    then counts exactly."""
    flat = array.reshape(-1)
    return bool(np.isfinite(np.vdot(flat, flat))) if flat.dtype.kind == "f" and flat.size else True


def _check_values(pair: Pair, arrays: list[np.ndarray], source: Any) -> list[str]:
    notes = []
    for spec, array in zip(pair.source.tensors, arrays):
        if not np.issubdtype(array.dtype, np.floating):
            raise IncompatibleWeightsError(
                f"{getattr(source, 'path', source.description)}: tensor '{spec.name}' of layer "
                f"'{pair.source.name}' has dtype {array.dtype}; weights must be floating point.")
        if _all_finite(array):
            continue
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise IncompatibleWeightsError(
                f"{getattr(source, 'path', source.description)}: tensor '{spec.name}' of layer "
                f"'{pair.source.name}' holds {bad} NaN or infinite value(s); nothing was transferred.")
    return notes
