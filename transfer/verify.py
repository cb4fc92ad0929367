"""Numerical verification: each moved layer, and the mapped stack, run on a seeded probe
input in both frameworks and compared.

Per layer, the reference is computed from the *source* tensors as read from the source, with
the source framework's op (from the kind table); the candidate from the tensors now in the
*target* model, with the target framework's op (for a pair within one framework the tensors
must be identical). Where the mapping covers a contiguous stack from the input (every weighted
layer before the last mapped one is mapped, on both sides) and the source is runnable, the two
models' outputs at that layer are compared too; when they differ, the outputs at every mapped
layer are compared to name the first one that diverges. What cannot run is said in
`stack_note`, never raised. Fast-math (TF32) is switched off while checking.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from transfer import _frameworks, kinds, layout
from transfer.adapter import Runnable, Weights
from transfer.errors import TransferWeightsError
from transfer.plan import Pair, adapted_channels, convert_pair, input_axis, resampled
from transfer.report import LAYER_TOLERANCE, STACK_TOLERANCE, WRITTEN_STAGE, LayerCheck, Verification
from transfer.runners import Runner, runner_for

PROBE_SEED = 20_240_613
# The stack probe's height and width where neither model fixes them: the smallest input the
# common backbones accept (Keras' applications say 32: five halvings to 1x1), and if the models
# cannot run at that size, the next.
FREE_SIZES = (32, 64)


def relative_difference(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """(max abs difference, that difference relative to the reference's largest magnitude); an
    all-zero reference is compared by absolute difference (a relative one would divide by 0)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.dtype == candidate.dtype and np.array_equal(reference, candidate):
        return 0.0, 0.0  # identical (NaN never is): no float64 copies of large tensors
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return diff, diff / scale if scale > 0 else diff


@contextlib.contextmanager
def exact_math() -> Iterator[None]:
    """TF32 off in torch and TensorFlow while checking (a no-op on CPUs)."""
    torch = sys.modules.get("torch")
    tf = sys.modules.get("tensorflow")
    saved = []
    if torch is not None:
        saved.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    if tf is not None:
        tf_saved = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0]
        if tf is not None:
            tf.config.experimental.enable_tensor_float_32_execution(tf_saved)


def verify_transfer(pairs: list[Pair], source: Weights, target: Weights, stage: str,
                    runnable: Runnable = (None, "no runnable source model"),
                    target_built_here: bool = False) -> Verification:
    """Check every pair, then the stack when it applies. Raises nothing; see `.ok`.
    `runnable` is `source.runnable()`, computed once by the caller for all stages;
    `target_built_here`: the target was built for this run (see `_retraced_target`)."""
    result = Verification(stage)
    rng = np.random.default_rng(PROBE_SEED)
    source_model, why_not = runnable
    with exact_math():
        for pair in pairs:
            result.layers.append(_check_layer(pair, source.read(pair.source.name),
                                              target.read(pair.target.name), rng))
        if source_model is None:
            result.stack_note = why_not or "no runnable source model"
        elif any(pair.rule.adapt for pair in pairs):
            result.stack_note = "input channels adapted: the two models take different inputs"
        elif any(pair.rule.resample for pair in pairs):
            result.stack_note = ("a position embedding resampled onto another grid: the two models take inputs of "
                                 "different sizes (the resampled layer is checked against the declared change)")
        else:
            _stack(result, pairs, source_model, target, why_not, target_built_here)
    return result


def compare_written(pairs: list[Pair], verified: Weights, written: Any, how: str) -> Verification:
    """The written file, read back (`how` says how), against the model just verified in memory:
    every tensor of every target layer bit for bit (a mapped layer is listed with its source; an
    unmapped one only if it differs). Exact, and cheaper than probing again."""
    result = Verification(WRITTEN_STAGE, read_back=how)
    sources = {pair.target.name: pair.source.name for pair in pairs}
    for name in verified.layers():
        expected, actual = verified.read(name), written.read(name)
        diffs = [relative_difference(e, a) for e, a in zip(expected, actual)]
        if len(expected) != len(actual):
            diffs.append((float("inf"), float("inf")))
        worst = max(diffs, key=lambda d: d[1]) if diffs else (0.0, 0.0)
        check = LayerCheck(sources.get(name, "(not mapped)"), name, "tensors compared with the verified model",
                           worst[0], worst[1], 0.0)
        if name in sources or not check.ok:
            result.layers.append(check)
    return result


def _stack(result: Verification, pairs: list[Pair], source_model: Any, target: Weights, note: str,
           target_built_here: bool) -> None:
    """The stack check: both models run on one probe, their outputs compared at the last mapped
    layer of the stack and at every layer whose conversion rests on an assumption; when one
    differs, the outputs at every mapped layer up to the first that diverges."""
    try:
        source_runner, built_runner = runner_for(source_model), runner_for(target.model)
        order = source_runner.order()  # a torch model's walks all its modules: once
        stack = _stack_pairs(pairs, order, target)
        if isinstance(stack, str):
            result.stack_note = stack
            return
        result.stack_note = note or stack_stop(pairs, order, target)
        comparable = [p for p in stack if source_runner.reachable(p.source.name)
                      and built_runner.reachable(p.target.name) and p.kind.output_comparable]
        if not comparable:
            result.stack_note = "no mapped layer of the stack has an output both models can show"
            return
        wanted = [p for p in comparable[:-1] if p.assumptions] + comparable[-1:]
        for size in FREE_SIZES:
            target_runner = _retraced_target(source_runner, built_runner, size) if target_built_here else built_runner
            probe = _stack_probe(source_runner, target_runner, size)
            try:
                checks = _compare_outputs(wanted, source_runner, target_runner, probe, "model outputs at the layer")
                break
            except (TransferWeightsError, ValueError, TypeError, RuntimeError):
                if size == FREE_SIZES[-1] or probe.shape[1] != size:  # too small for the models? the next size
                    raise
        result.stack_probe = "x".join(str(d) for d in probe.shape[1:])
        result.stack = checks[-1]
        result.stack_covered = [c.target for c in checks if c.ok]
        if not all(c.ok for c in checks):
            result.localized = _first_divergence(comparable, source_runner, target_runner, probe)
    except (TransferWeightsError, ValueError, TypeError, RuntimeError, KeyError, AttributeError) as exc:
        # the models could not be run side by side: say so; the layer checks stand
        result.stack = None
        result.stack_covered = []
        result.stack_note = f"the stack check could not run: {type(exc).__name__}: {str(exc)[:300]}"


def stack_stop(pairs: list[Pair], source_order: list[str], target: Weights) -> str:
    """Where the mapped stack ends and why (the first weighted layer not mapped), or ""."""
    mapped_sources = {p.source.name for p in pairs}
    first = next((name for name in source_order if name not in mapped_sources), None)
    if first is None:
        return ""
    before = [p.source.name for p in pairs if p.source.name in source_order[:source_order.index(first)]]
    where = f"after '{before[-1]}'" if before else "at the first layer"
    return (f"the stack check stops {where}: source layer '{first}' is not mapped (layers after it "
            "are checked on their own)")


def tolerance(pair: Pair, base: float, epsilons: int) -> float:
    """`base`, or `epsilons` x the target's machine epsilon where the target holds a narrower
    float type than the source (float32 weights rounded to float16 cannot agree to 1e-5)."""
    def epsilon(dtype: str) -> float:
        return 2.0 ** -7 if dtype == "bfloat16" else float(np.finfo(dtype).eps)

    narrowest = max((epsilon(t.dtype) for s, t in zip(pair.source.tensors, pair.target.tensors)
                     if np.dtype("float32" if t.dtype == "bfloat16" else t.dtype).kind == "f"
                     and epsilon(t.dtype) > epsilon(s.dtype)), default=0.0)
    return max(base, epsilons * narrowest)


def _check_layer(pair: Pair, source_arrays: list[np.ndarray], target_arrays: list[np.ndarray],
                 rng: np.random.Generator) -> LayerCheck:
    source, target = pair.source, pair.target
    if not pair.cross_framework:
        expected = convert_pair(pair, source_arrays)
        diffs = [relative_difference(e.astype(t.dtype), t) for e, t in zip(expected, target_arrays)]
        if len(expected) != len(target_arrays):
            diffs.append((float("inf"), float("inf")))
        worst = max(diffs, key=lambda d: d[1]) if diffs else (0.0, 0.0)
        return LayerCheck(source.name, target.name, "tensors compared", worst[0], worst[1], 0.0)
    adapted = adapted_channels(pair)
    if adapted:  # the reference applies the same declared adaptation, in the source's layout
        axis = input_axis(pair.kind, source.framework)
        source_arrays = [layout.adapt_in_channels(source_arrays[0], axis, adapted[1], str(pair.rule.adapt)),
                         *source_arrays[1:]]
    entry = pair.kind
    context = kinds.PairContext(source, target, in_channels=adapted[1] if adapted else None)
    method = f"{pair.kind.name} on a probe, {source.framework} vs {target.framework}"
    if pair.rule.resample:  # the reference applies the declared change: proven equal to it, never to the source
        source_arrays = resampled(pair, source_arrays)
        context = kinds.PairContext(target, target)  # the probe fits the resampled (target-shaped) tensors
        method += (f", against the source resampled ({pair.rule.resample[0]}) as declared: a CHANGED tensor, "
                   "not equal to the source's")
    probe = rng.normal(size=(2, *entry.probe_shape(context))).astype(np.float32)
    source_probe, target_probe = _dense_probes(pair, probe)
    reference = run_layer(entry, source.framework, source_arrays, source_probe, _params(pair, source))
    candidate = run_layer(entry, target.framework, target_arrays, target_probe, _params(pair, target))
    diff, rel = relative_difference(reference, candidate)
    return LayerCheck(source.name, target.name, method, diff, rel, tolerance(pair, LAYER_TOLERANCE, 4),
                      zero_reference=not np.any(reference))


def _dense_probes(pair: Pair, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A dense layer reading a flattened map: the probe is that map (flat, H, W, C order), and
    each side reads it in its own planned order; anything else: the same probe for both."""
    inputs = pair.inputs
    if inputs is None or (inputs.source is None and inputs.target is None):
        return probe, probe
    return tuple(probe[:, order.positions] if order is not None else probe  # type: ignore[return-value]
                 for order in (inputs.source, inputs.target))


def run_layer(entry: kinds.LayerKind, framework: str, arrays: list[np.ndarray], probe: np.ndarray,
              params: kinds.LayerParams | None = None) -> np.ndarray:
    """Run one layer's op in `framework` on the channels-last probe; return channels-last."""
    arrays = [np.array(a, np.float32) if not a.flags.writeable else np.ascontiguousarray(a, np.float32)
              for a in arrays]  # torch wants writable arrays (file-backed ones are read-only)
    if framework == "keras":
        return _np(entry.keras_op(_frameworks.keras().ops, arrays, probe, params or kinds.LayerParams()))
    torch = _frameworks.torch()
    tensors = [torch.from_numpy(a) for a in arrays]
    spatial = probe.ndim == 4
    x = torch.from_numpy(np.ascontiguousarray(probe.transpose(0, 3, 1, 2) if spatial else probe))
    with torch.no_grad():
        y = entry.torch_op(torch.nn.functional, tensors, x, params or kinds.LayerParams()).numpy()
    return y.transpose(0, 2, 3, 1) if y.ndim == 4 else y


def _params(pair: Pair, spec: Any) -> kinds.LayerParams:
    """A side's epsilon and groups; an unknown one (a weights file does not store them) is the
    other side's, which is what the transfer assumed (and reported)."""
    other = pair.target if spec is pair.source else pair.source
    return kinds.LayerParams(epsilon=spec.epsilon if spec.epsilon is not None else other.epsilon,
                             groups=spec.groups if spec.groups is not None else other.groups)


def _np(tensor: Any) -> np.ndarray:
    return np.asarray(_frameworks.keras().ops.convert_to_numpy(tensor))


def _stack_pairs(pairs: list[Pair], source_order: list[str], target: Weights) -> list[Pair] | str:
    """The pairs of the longest mapped prefix on both sides, in source order, or why there are none."""
    mapped_sources = {p.source.name: p for p in pairs}
    mapped_targets = {p.target.name for p in pairs}
    stack: list[Pair] = []
    for name in source_order:
        if name not in mapped_sources:
            break
        stack.append(mapped_sources[name])
    if not stack:
        first = source_order[0] if source_order else "(none)"
        return f"no stack check: the first weighted source layer '{first}' is not mapped"
    target_names = list(target.layers())
    prefix = target_names[: target_names.index(stack[-1].target.name) + 1]
    unmapped = [name for name in prefix if name not in mapped_targets]
    if unmapped:
        return (f"no stack check: target layer '{unmapped[0]}' in front of '{stack[-1].target.name}' is "
                "not mapped")
    return stack


def _compare_outputs(pairs: list[Pair], source: Runner, target: Runner, probe: np.ndarray,
                     method: str = "model outputs at the layer") -> list[LayerCheck]:
    references = source.outputs([p.source.name for p in pairs], probe)
    candidates = target.outputs([p.target.name for p in pairs], probe)
    limit = max([tolerance(p, STACK_TOLERANCE, 16) for p in pairs]
                + [16 * runner.compute_epsilon() for runner in (source, target)])
    checks = []
    for pair, reference, candidate in zip(pairs, references, candidates):
        reference, candidate = _same_activation(pair, source, target, reference, candidate)
        diff, rel = relative_difference(*_squeezed_pixel(reference, candidate))
        checks.append(LayerCheck(pair.source.name, pair.target.name, method, diff, rel, limit,
                                 zero_reference=not np.any(reference)))
    return checks


def _squeezed_pixel(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 1x1 conv on a pooled 1x1 map and a dense layer on the pooled vector are one map
    (`pointwise`): compare (N, 1, 1, C) with (N, C). Any other shape difference stays."""
    if a.shape != b.shape and a.ndim + b.ndim == 6 and a.size == b.size:
        four, two = (a, b) if a.ndim == 4 else (b, a)
        if four.shape[1:3] == (1, 1) and two.ndim == 2:
            squeezed = four.reshape(two.shape)
            return (squeezed, two) if a.ndim == 4 else (two, squeezed)
    return a, b


def _first_divergence(stack: list[Pair], source: Runner, target: Runner, probe: np.ndarray) -> list[LayerCheck]:
    """Outputs at every mapped layer of the stack, up to and including the first that differs."""
    checks = _compare_outputs(stack, source, target, probe)
    first = next((i for i, c in enumerate(checks) if not c.ok), len(checks) - 1)
    return checks[: first + 1]


def _retraced_target(source: Runner, target: Runner, size: int) -> Runner:
    """A target that fixes its input size (SegNet built at 256x256) while the source takes any,
    retraced through the same layers at the free size: the same layers and weights on a probe
    16 times smaller. Only for a target built for this run (retracing adds a node to each of its
    layers); one whose graph is fixed to its size (a Flatten before a Dense) keeps it."""
    source_hw, target_hw = source.input_hwc()[:2], target.input_hwc()[:2]
    if any(source_hw) or not any(target_hw) or any(d and d <= size for d in target_hw):
        return target
    return target.retraced(size, size) or target


def _stack_probe(source: Runner, target: Runner, size: int) -> np.ndarray:
    """One image the size both models accept: where one fixes a size, that size; else
    `size` x `size`."""
    fixed: list[tuple[str, tuple[int | None, int | None, int | None]]] = [
        ("source", source.input_hwc()), ("target", target.input_hwc())]
    agreed: list[int | None] = [None, None, None]
    for axis in range(3):
        values = {hwc[axis] for _, hwc in fixed if hwc[axis]}
        if len(values) > 1:
            shapes = "; ".join(f"{role} {hwc[0]}x{hwc[1]}x{hwc[2]}" for role, hwc in fixed)
            raise ValueError(f"the two models take inputs of different sizes ({shapes}); build the target at "
                             "the source's size (or export with dynamic height and width) to compare them")
        agreed[axis] = values.pop() if values else None
    height, width, channels = agreed
    if channels is None:
        raise ValueError("neither model says how many input channels it takes")
    shape = (1, height or size, width or size, channels)
    return np.random.default_rng(PROBE_SEED + 1).normal(0, 1, size=shape).astype(np.float32)


def _same_activation(pair: Pair, source: Runner, target: Runner, reference: np.ndarray,
                     candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras convs and denses may hold their activation; torch modules never do. Apply a layer's
    own activation to the other side's output when only one side holds one, so that like is
    compared with like."""
    source_activation = source.fused_activation(pair.source.name)
    target_activation = target.fused_activation(pair.target.name)
    if (source_activation is None) == (target_activation is None):
        return reference, candidate
    if source_activation is not None:
        return reference, _np(source_activation(candidate))
    return _np(target_activation(reference)), candidate  # type: ignore[misc]
