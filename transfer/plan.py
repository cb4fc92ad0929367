"""The plan: a mapping resolved against a source's and a target's layer lists, every final
shape checked, before any tensor is read.

`plan_transfer` reads metadata only (names, shapes, dtypes) and raises on any problem;
`convert_pair` turns one pair's source tensors into the target's layout through the kind table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from transfer import bands as band_maps
from transfer import kinds, layout
from transfer.adapter import Weights
from transfer.bands import BandMap
from transfer.composed import ComposedSource, unprefixed
from transfer.dense_inputs import DenseInputs, resolve_dense_inputs, unplanned_dense_inputs
from transfer.errors import IncompatibleWeightsError, MappingError, StrictModeError
from transfer.kinds import LayerSpec
from transfer.mapping import Mapping, ModelSpec, Rule, did_you_mean, is_declared
from transfer.patterns import regex_hint, unused_entry_notes
from transfer.report import SkippedLayer, UntouchedLayer
from transfer.sources.known_models import KERAS_APPLICATIONS, TORCHVISION_MODELS


@dataclass(frozen=True)
class Pair:
    """One planned move: a source layer into a target layer by one rule."""

    source: LayerSpec
    target: LayerSpec
    rule: Rule
    kind: kinds.LayerKind
    # a dense layer's input orders on both sides and the row permutation between them (planned)
    inputs: DenseInputs | None = None
    # a first layer's input bands mapped by name (and a preprocessing folded in), as the rule declares
    bands: BandMap | None = None

    @property
    def assumptions(self) -> tuple[str, ...]:
        """What this pair's conversion rests on that no model said: proven only if a check
        that runs the models (the stack check) reaches the layer."""
        found = list(self.inputs.unproven) if self.inputs is not None else []
        if self.kind.carries_epsilon and (self.source.epsilon is None) != (self.target.epsilon is None):
            found.append("normalisation epsilon assumed equal on both sides (a weights file does not store it)")
        return tuple(found)

    @property
    def conversion(self) -> str:
        if self.rule.resample:
            return f"CHANGED: resampled ({self.rule.resample[0]}) onto the target's grid, not a layout conversion"
        if self.source.framework == self.target.framework:
            reordered = self.inputs is not None and self.inputs.rows is not None
            return "inputs reordered between the two flatten orders" if reordered else "none (same framework)"
        described = self.kind.describe(self.source.framework, self.target.framework)
        if self.inputs is not None and self.inputs.rows is not None:
            described += ", inputs reordered between the two flatten orders"
        return described

    @property
    def cross_framework(self) -> bool:
        return self.source.framework != self.target.framework


@dataclass
class Plan:
    pairs: list[Pair]
    skipped: list[SkippedLayer]
    untouched: list[UntouchedLayer]
    frozen: list[str]
    notes: list[str] = field(default_factory=list)

    def strict_problems(self) -> list[str]:
        problems = [f"source layer '{s.layer}' skipped: {s.reason}" for s in self.skipped if not s.declared]
        problems += [f"target layer '{u.layer}' left at its initial value" for u in self.untouched if not u.declared]
        return problems


def plan_transfer(mapping: Mapping, source: Weights, target: Weights, strict: bool = False,
                  establish: bool = True) -> Plan:
    """Match every weighted source layer to a rule and check all shapes; read no tensor. A dense
    layer's input order is read from the models (a weights file's through its rebuilt known
    model, unless `establish` is False: `--check` reads no weights)."""
    sources = source.layers()
    targets = target.layers()
    origin = mapping.origin
    _check_literal_rules(mapping, sources, targets, source.description)
    pairs: list[Pair] = []
    skipped: list[SkippedLayer] = []
    used_rules: set[int] = set()
    receivers: dict[str, str] = {}
    for name, spec in sources.items():
        matches = [(i, rule, to) for i, rule in enumerate(mapping.rules)
                   if (to := rule.target_for(name)) is not None]
        declared_skip = is_declared(name, mapping.skip)
        if len(matches) > 1:
            lines = " and ".join(_rule_where(r) for _, r, _ in matches)
            raise MappingError(f"{origin}: source layer '{name}' is matched by two rules ({lines}); "
                               "each source layer may match one rule.")
        if not matches:
            reason = "declared in skip" if declared_skip else "no rule matched"
            skipped.append(SkippedLayer(name, reason, declared_skip))
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
            names = list(sources)
            if rule.source_name is not None:  # the part's own names: the pattern is matched against them
                prefix = f"{rule.source_name}:"
                names = [name[len(prefix):] for name in names if name.startswith(prefix)]
            raise MappingError(f"{origin}: {_rule_where(rule)}: the pattern '{rule.source}' "
                               f"matches no weighted layer of {source.description}."
                               f"{regex_hint(rule.pattern, names)}")
    pairs = [dataclasses.replace(p, inputs=_dense_inputs(p, source, target, _where(origin, p), establish))
             if p.kind.reads_flattened and not p.rule.maps_bands else p for p in pairs]
    pairs = _band_pairs(pairs, mapping, source)
    _check_shapes(pairs, origin)
    untouched = [UntouchedLayer(name, is_declared(name, mapping.untouched))
                 for name in targets if name not in receivers]
    plan = Plan(pairs, skipped, untouched, _frozen(mapping, targets))
    unknown_eps = [p.source.name for p in pairs if p.kind.carries_epsilon and p.source.epsilon is None]
    if unknown_eps:
        plan.notes.append(f"normalisation epsilon of {len(unknown_eps)} source layer(s) unknown (Keras weight "
                          "files do not store it): assumed equal to the target's; set "
                          "source.batchnorm_epsilon to have it checked")
    plan.notes += unused_entry_notes("skip", mapping.skip, list(sources), [s.layer for s in skipped if not s.declared])
    plan.notes += unused_entry_notes("untouched", mapping.untouched, list(targets),
                                     [u.layer for u in untouched if not u.declared])
    if strict and plan.strict_problems():
        problems = plan.strict_problems()
        raise StrictModeError(f"{origin}: --strict: {len(problems)} undeclared "
                              f"{'difference' if len(problems) == 1 else 'differences'}: "
                              + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
                              + ". Declare them in the mapping's skip or untouched lists.")
    return plan


def _dense_inputs(pair: Pair, source: Weights, target: Weights, where: str, establish: bool) -> DenseInputs:
    """A dense layer's input orders; a layer of one of several sources is read from its own part."""
    if isinstance(source, ComposedSource):
        _, part, inner = source.part(pair.source.name)
        return resolve_dense_inputs(dataclasses.replace(pair, source=unprefixed(pair.source, inner)), part, target,
                                    where, establish)
    return resolve_dense_inputs(pair, source, target, where, establish)


def source_side(mapping: Mapping, source: Weights, layer: str) -> tuple[str | None, ModelSpec, Weights]:
    """The source a source layer comes from: (its name among several, or None; its spec; its adapter)."""
    if isinstance(source, ComposedSource):
        name, part, _ = source.part(layer)
        return name, mapping.sources[name], part
    return None, mapping.source, source


def source_bands(spec: ModelSpec, adapter: Weights) -> tuple[str, ...] | None:
    """A source's input bands: `bands:` in the mapping; else its known model's (Keras VGG16 and
    ResNet50: B, G, R; torchvision: R, G, B), unless the mapping names another convention; else
    those of its preprocessing convention (caffe: B, G, R; torch, tf: R, G, B)."""
    if spec.bands is not None:
        return spec.bands
    table: dict = KERAS_APPLICATIONS if spec.framework == "keras" else TORCHVISION_MODELS
    known = table.get(spec.model or "")
    convention = source_convention(spec, adapter)
    if known is not None and convention in (None, known.preprocessing):
        return tuple(known.bands)
    return band_maps.convention_bands(convention)


def source_convention(spec: ModelSpec, adapter: Weights) -> str | None:
    return getattr(adapter, "preprocessing", None) or spec.preprocessing


def target_bands(mapping: Mapping) -> tuple[str, ...] | None:
    """The target's input bands: `target.bands`, else those of `target.preprocessing`."""
    return mapping.target.bands or band_maps.convention_bands(mapping.target.preprocessing)


def _band_pairs(pairs: list[Pair], mapping: Mapping, source: Weights) -> list[Pair]:
    """Each pair whose rule maps bands (or folds the preprocessing) gets its checked band map;
    a target that declares bands other than its source's without any such rule is refused."""
    origin = mapping.origin
    by_rule: dict[int, str] = {}
    out = []
    for pair in pairs:
        if not pair.rule.maps_bands:
            out.append(pair)
            continue
        where = _where(origin, pair)
        if id(pair.rule) in by_rule:
            raise MappingError(f"{origin}: {_rule_where(pair.rule)}: a rule with `bands:` or `fold_preprocessing` "
                               f"maps one first layer; it matches '{by_rule[id(pair.rule)]}' and "
                               f"'{pair.source.name}'.")
        by_rule[id(pair.rule)] = pair.source.name
        # a first dense layer reads the bands as a vector (its inputs are the bands: checked below)
        inputs = DenseInputs(None, None, None) if pair.kind.reads_flattened else pair.inputs
        out.append(dataclasses.replace(pair, bands=_band_map(pair, mapping, source, where), inputs=inputs))
    if mapping.target.bands is not None and not by_rule and not mapping.composed:
        found = source_bands(mapping.source, source)
        if found is not None and tuple(found) != tuple(mapping.target.bands):
            raise MappingError(
                f"{origin}: target.bands [{', '.join(mapping.target.bands)}] differ from the source's "
                f"[{', '.join(found)}], and no rule says how the first layer's weights follow them: add `bands: {{}}` "
                "(same-named bands copied; entries for the others) to the first layer's rule.")
    return out


def _band_map(pair: Pair, mapping: Mapping, source: Weights, where: str) -> BandMap:
    _, spec, adapter = source_side(mapping, source, pair.source.name)
    if pair.kind not in band_maps.KINDS:
        raise IncompatibleWeightsError(f"{where}: `bands:` and `fold_preprocessing` apply to a first conv (plain, "
                                       f"depthwise, separable) or dense layer; this pair is {pair.kind.name}.")
    found = source_bands(spec, adapter)
    wanted = target_bands(mapping)
    if found is None or wanted is None:
        side = "source" if found is None else "target"
        raise MappingError(f"{where}: the rule maps input bands, but the {side}'s bands are not known: declare "
                           f"{side}.bands ([R, G, B], [B, G, R], [IR, R, G], ...)"
                           + (" or a known model / preprocessing convention." if side == "source" else
                              " or target.preprocessing."))
    fold = None
    if pair.rule.fold_preprocessing:
        convention = source_convention(spec, adapter)
        if convention is None:
            raise MappingError(f"{where}: fold_preprocessing: the source's preprocessing convention is unknown; "
                               "declare source.preprocessing (caffe, torch, tf, none).")
        fold = (convention, str(pair.rule.fold_into))
    result = band_maps.band_map(found, wanted, dict(pair.rule.bands or ()), fold, where)
    for role, spec_side, bands in (("source", pair.source, result.source), ("target", pair.target, result.target)):
        if pair.kind is kinds.CONV2D and (spec_side.groups or 1) > 1:
            raise IncompatibleWeightsError(f"{where}: the {role} layer is a grouped conv ({spec_side.groups} groups); "
                                           "bands map a plain, depthwise or separable first conv.")
        channels = band_maps.in_channels(pair.kind, spec_side.framework, [t.shape for t in spec_side.tensors],
                                         spec_side.groups)
        if channels is None:  # a torch depthwise weight read from a file: its groups are not stored
            first = spec_side.tensors[0].shape[0]
            channels = len(bands) if first % len(bands) == 0 else first
        if channels != len(bands):
            raise IncompatibleWeightsError(f"{where}: the {role} layer '{spec_side.name}' reads {channels} input "
                                           f"channel(s), but the {role}'s bands are {len(bands)} "
                                           f"({', '.join(bands)}).")
    return result


def _where(origin: str, pair: Pair) -> str:
    return f"{origin}: {_rule_where(pair.rule)}: '{pair.source.name}' -> '{pair.target.name}'"


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


def pair_kind(source: LayerSpec, target: LayerSpec, origin: str, rule: Rule) -> kinds.LayerKind:
    kind = kinds.pair_kind(source, target)
    if kind is None and source.framework == target.framework and kinds.OTHER in (source.kind, target.kind):
        kind = target.kind
    if kind is kinds.OTHER and source.framework != target.framework:
        unknown = [f"'{spec.name}' ({_what(spec)})" for spec in (source, target) if spec.kind is kinds.OTHER]
        raise IncompatibleWeightsError(
            f"{origin}: {_rule_where(rule)}: no PyTorch <-> Keras layout conversion is known for "
            f"{' and '.join(unknown)}; known kinds: {', '.join(kinds.BY_NAME)}.")
    if kind is None:
        raise IncompatibleWeightsError(
            f"{origin}: {_rule_where(rule)}: source layer '{source.name}' is {_what(source)} "
            f"and target layer '{target.name}' {_what(target)}; they cannot exchange weights.")
    if source.groups is not None and target.groups is not None and source.groups != target.groups:
        raise IncompatibleWeightsError(
            f"{origin}: {_rule_where(rule)}: source layer '{source.name}' has {source.groups} "
            f"group(s) and target layer '{target.name}' {target.groups}; the same tensors would "
            "compute a different function.")
    return kind


def _what(spec: LayerSpec) -> str:
    """A layer as a message names it: its kind, and its class where the kind says little."""
    if spec.kind is kinds.OTHER:
        return f"a {spec.class_name} layer, of no known kind" if spec.class_name else "a layer of no known kind"
    return f"a {spec.kind.name} layer ({spec.class_name})" if spec.class_name else f"a {spec.kind.name} layer"


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
    same_count = pair.kind.same_tensor_count
    if same_count and len(arrays) != len(target.tensors):
        raise IncompatibleWeightsError(
            f"{where}: the source layer has {len(arrays)} tensors "
            f"({', '.join(t.name for t in source.tensors)}) and the target layer "
            f"{len(target.tensors)} ({', '.join(t.name for t in target.tensors)}).")
    try:
        if pair.bands is not None:  # a declared change of the input bands, in the source's layout first
            arrays = band_maps.apply(pair.kind, source.framework, list(arrays), pair.bands)
        if pair.rule.resample:  # a declared change onto the target's shape (the layouts are the same)
            arrays = resampled(pair, arrays)
        elif source.framework != target.framework:
            arrays = _cross_framework(pair, arrays)
        elif pair.kind.reads_flattened and pair.inputs is not None and pair.inputs.rows is not None:
            arrays = [layout.permute_dense_inputs(arrays[0], pair.inputs.rows, source.framework), *arrays[1:]]
        if pair.rule.adapt:
            arrays = _adapt(pair, arrays)
        if pair.kind.carries_epsilon:
            arrays = _match_epsilon(pair, arrays, where)
    except IncompatibleWeightsError as exc:
        if str(exc).startswith(origin):
            raise
        raise IncompatibleWeightsError(f"{where}: {exc}") from exc
    return arrays


def _cross_framework(pair: Pair, arrays: list[np.ndarray]) -> list[np.ndarray]:
    return pair.kind.convert(arrays, kinds.PairContext(pair.source, pair.target, rows=_rows(pair)))


def resampled(pair: Pair, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The source's tensors resampled onto the target's shape, as the rule declares (a change of
    the tensor: the kind table's `resample`, a position embedding's only)."""
    hook = pair.kind.resample
    if hook is None or pair.rule.resample is None:
        able = [k.name for k in kinds.KINDS if k.resample is not None]
        raise IncompatibleWeightsError(f"`resample` applies to {', '.join(able)} layers (a position embedding), "
                                       f"not {pair.kind.name}.")
    mode, prefix = pair.rule.resample
    return hook(arrays, kinds.PairContext(pair.source, pair.target), mode, prefix)


def _rows(pair: Pair) -> np.ndarray | None:
    """The dense row permutation: planned, or (a pair made outside a plan, as `suggest` does)
    the plain flatten of each framework where the Keras model says a map was flattened."""
    if not pair.kind.reads_flattened:
        return None
    inputs = pair.inputs if pair.inputs is not None else unplanned_dense_inputs(pair.source, pair.target, pair.rule)
    return inputs.rows


def input_axis(kind: kinds.LayerKind, framework: str) -> int:
    """Axis of a kernel's input channels (the kind table's `input_channel_axis`)."""
    axes = kind.input_channel_axis
    if axes is None:
        adaptable = [k.name for k in kinds.KINDS if k.input_channel_axis]
        raise IncompatibleWeightsError(f"input-channel adaptation applies to {', '.join(adaptable)} layers, "
                                       f"not {kind.name}.")
    return axes[framework]


def adapted_channels(pair: Pair) -> tuple[int, int] | None:
    """(source, target) input channels of an adapted pair, or None."""
    if not pair.rule.adapt:
        return None
    return (pair.source.tensors[0].shape[input_axis(pair.kind, pair.source.framework)],
            pair.target.tensors[0].shape[input_axis(pair.kind, pair.target.framework)])


def _adapt(pair: Pair, arrays: list[np.ndarray]) -> list[np.ndarray]:
    axis = input_axis(pair.kind, pair.target.framework)
    channels = pair.target.tensors[0].shape[axis]
    return [layout.adapt_in_channels(arrays[0], axis, channels, pair.rule.adapt or "timm"), *arrays[1:]]


def _match_epsilon(pair: Pair, arrays: list[np.ndarray], where: str) -> list[np.ndarray]:
    source_eps, target_eps = pair.source.epsilon, pair.target.epsilon
    if source_eps is None or target_eps is None or np.isclose(source_eps, target_eps, rtol=1e-9, atol=0):
        return arrays
    entry = pair.kind
    rescale = entry.rescale_epsilon
    if pair.rule.epsilon == "rescale" and rescale is not None:
        return rescale(arrays, source_eps, target_eps)
    name = entry.title
    remedy = (f"Build the target with epsilon={source_eps:g}, or add `epsilon: rescale` to the rule "
              "to rescale gamma exactly." if rescale is not None else
              f"Build the target with epsilon={source_eps:g} (a {name} normalises by statistics of "
              "its input, so no change of its tensors can compensate).")
    raise IncompatibleWeightsError(
        f"{where}: {name} epsilon differs: source {source_eps:g} ({pair.source.epsilon_origin}), "
        f"target {target_eps:g}. The normalisation would change. {remedy}")
