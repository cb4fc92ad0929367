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
from transfer.plan import Pair, adapted_channels, convert_pair, flatten_of, input_axis
from transfer.report import LAYER_TOLERANCE, STACK_TOLERANCE, LayerCheck, Verification

PROBE_SEED = 20_240_613


def _rel(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    reference = np.asarray(reference, np.float64)
    candidate = np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    return diff, diff / max(float(np.max(np.abs(reference))) if reference.size else 0.0, 1e-30)


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
                    runnable: Runnable = (None, "no runnable source model")) -> Verification:
    """Check every pair, then the stack when it applies. Raises nothing; see `.ok`.
    `runnable` is `source.runnable()`, computed once by the caller for all stages."""
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
        else:
            _stack(result, pairs, source_model, target, why_not)
    return result


def compare_written(pairs: list[Pair], verified: Weights, written: Weights, stage: str) -> Verification:
    """The written file, reloaded, against the model just verified in memory: every tensor of
    every target layer bit for bit (a mapped layer is listed with its source; an unmapped one
    only if it differs). Exact, and cheaper than probing again."""
    result = Verification(stage, stack_note="the written tensors are compared bit for bit with the model "
                                            "verified in memory")
    sources = {pair.target.name: pair.source.name for pair in pairs}
    for name in verified.layers():
        expected, actual = verified.read(name), written.read(name)
        diffs = [_rel(e, a) for e, a in zip(expected, actual)]
        if len(expected) != len(actual):
            diffs.append((float("inf"), float("inf")))
        worst = max(diffs, key=lambda d: d[1]) if diffs else (0.0, 0.0)
        check = LayerCheck(sources.get(name, "(not mapped)"), name, "tensors compared with the verified model",
                           worst[0], worst[1], 0.0)
        if name in sources or not check.ok:
            result.layers.append(check)
    return result


def _stack(result: Verification, pairs: list[Pair], source_model: Any, target: Weights, note: str) -> None:
    """The stack check and, when it fails, the layer where the two models first diverge."""
    try:
        order = _layer_order(source_model)
        stack = _stack_pairs(pairs, order, target)
        if isinstance(stack, str):
            result.stack_note = stack
            return
        result.stack_note = note
        probe = _stack_probe(source_model, target.model)
        comparable = [p for p in stack if _output_reachable(p, source_model, target.model)]
        result.stack = _compare_outputs(comparable[-1:], source_model, target.model, probe,
                                        "model outputs at the last mapped layer")[0]
        if not result.stack.ok:
            result.localized = _first_divergence(comparable, source_model, target.model, probe)
    except (TransferWeightsError, ValueError, TypeError, RuntimeError, KeyError, AttributeError) as exc:
        # the models could not be run side by side: say so; the layer checks stand
        result.stack = None
        result.stack_note = f"the stack check could not run: {type(exc).__name__}: {str(exc)[:300]}"


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
        diffs = [_rel(e.astype(t.dtype), t) for e, t in zip(expected, target_arrays)]
        if len(expected) != len(target_arrays):
            diffs.append((float("inf"), float("inf")))
        worst = max(diffs, key=lambda d: d[1]) if diffs else (0.0, 0.0)
        return LayerCheck(source.name, target.name, "tensors compared", worst[0], worst[1], 0.0)
    adapted = adapted_channels(pair)
    if adapted:  # the reference applies the same declared adaptation, in the source's layout
        axis = input_axis(pair.kind, source.framework)
        source_arrays = [layout.adapt_in_channels(source_arrays[0], axis, adapted[1], str(pair.rule.adapt)),
                         *source_arrays[1:]]
    entry = kinds.kind(pair.kind)
    context = kinds.PairContext(source, target, flatten_of(pair) if kinds.reads_flattened(pair.kind) else None,
                                adapted[1] if adapted else None)
    probe = rng.normal(size=(2, *entry.probe_shape(context))).astype(np.float32)
    reference = run_layer(entry, source.framework, source_arrays, probe, _params(pair, source))
    candidate = run_layer(entry, target.framework, target_arrays, probe, _params(pair, target))
    diff, rel = _rel(reference, candidate)
    return LayerCheck(source.name, target.name, f"{pair.kind} on a probe, {source.framework} vs {target.framework}",
                      diff, rel, tolerance(pair, LAYER_TOLERANCE, 4))


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


def _is_keras(model: Any) -> bool:
    return _frameworks.framework_of(model) == "keras"


def _layer_order(model: Any) -> list[str]:
    """Weighted layers in the model's own order (files such as safetensors sort their keys)."""
    from transfer.adapter import adapter_for

    if _is_onnx(model):
        return list(model.layer_order)
    return list(adapter_for(model).layers())


def _is_onnx(model: Any) -> bool:
    from transfer.sources.onnx_files import OnnxGraph

    return isinstance(model, OnnxGraph)


def _output_reachable(pair: Pair, source_model: Any, target_model: Any) -> bool:
    """Whether both layers' outputs are the same point of the two networks and can be read:
    not a loose variable (its torch "layer" is the module owning it), and not a layer inside a
    Keras model nested as a layer (`stem/conv`: its output lives in the inner model's graph)."""
    nested = [name for name, model in ((pair.source.name, source_model), (pair.target.name, target_model))
              if _is_keras(model) and "/" in name]
    return kinds.output_comparable(pair.kind) and not nested


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
        return "the first weighted source layer is not mapped"
    target_names = list(target.layers())
    prefix = target_names[: target_names.index(stack[-1].target.name) + 1]
    if not all(name in mapped_targets for name in prefix):
        return f"target layers in front of '{stack[-1].target.name}' are not mapped"
    return stack


def _compare_outputs(pairs: list[Pair], source_model: Any, target_model: Any, probe: np.ndarray,
                     method: str = "model outputs at the layer") -> list[LayerCheck]:
    references = _layer_outputs(source_model, [p.source.name for p in pairs], probe)
    candidates = _layer_outputs(target_model, [p.target.name for p in pairs], probe)
    checks = []
    for pair, reference, candidate in zip(pairs, references, candidates):
        reference, candidate = _same_activation(pair, source_model, target_model, reference, candidate)
        diff, rel = _rel(*_squeezed_pixel(reference, candidate))
        limit = max([tolerance(p, STACK_TOLERANCE, 16) for p in pairs]
                    + [16 * _compute_epsilon(m) for m in (source_model, target_model)])
        checks.append(LayerCheck(pair.source.name, pair.target.name, method, diff, rel, limit))
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


def _compute_epsilon(model: Any) -> float:
    """Machine epsilon of a Keras model's compute dtype under a mixed-precision policy (its
    variables stay float32, its activations do not); 0 for full precision and for torch."""
    policy = getattr(model, "dtype_policy", None) if _is_keras(model) else None
    compute = getattr(policy, "compute_dtype", "float32")
    if compute in ("float16", "bfloat16"):
        return 2.0 ** -7 if compute == "bfloat16" else float(np.finfo(np.float16).eps)
    return 0.0


def _first_divergence(stack: list[Pair], source_model: Any, target_model: Any, probe: np.ndarray) -> list[LayerCheck]:
    """Outputs at every mapped layer of the stack, up to and including the first that differs."""
    checks = _compare_outputs(stack, source_model, target_model, probe)
    first = next((i for i, c in enumerate(checks) if not c.ok), len(checks) - 1)
    return checks[: first + 1]


def _stack_probe(source_model: Any, target_model: Any) -> np.ndarray:
    """One image the size both models accept: a fixed Keras or ONNX input size, else 64x64."""
    keras_model = target_model if _is_keras(target_model) else source_model if _is_keras(source_model) else None
    height = width = channels = None
    if keras_model is not None:
        _, height, width, channels = keras_model.input_shape
    if _is_onnx(source_model):  # an export has a fixed input size unless its axes were made dynamic
        _, onnx_channels, onnx_height, onnx_width = source_model.input_shape()
        for fixed, other in ((height, onnx_height), (width, onnx_width)):
            if fixed and other and fixed != other:
                raise ValueError(f"the ONNX graph takes {onnx_height}x{onnx_width} inputs and the Keras model "
                                 f"{height}x{width}; build the target at the graph's size (or export with "
                                 "dynamic height and width) to compare them")
        height, width, channels = height or onnx_height, width or onnx_width, channels or onnx_channels
    if channels is None:
        torch_model = target_model if not _is_keras(target_model) else source_model
        first_conv = next(m for m in torch_model.modules() if hasattr(m, "in_channels"))
        channels = first_conv.in_channels
    size = (1, height or 64, width or 64, channels)
    return np.random.default_rng(PROBE_SEED + 1).normal(0, 1, size=size).astype(np.float32)


def _keras_input(model: Any) -> Any:
    """The model's symbolic input (`model.input` is undefined on a Sequential never called)."""
    inputs = model.inputs
    return inputs[0] if len(inputs) == 1 else inputs


class _AllCaptured(Exception):
    """Raised by the last forward hook to stop a torch model once every output is captured."""


def _layer_outputs(model: Any, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
    """Outputs of the named layers on one probe, channels last, in one forward pass."""
    if _is_onnx(model):
        return list(model.outputs(names, probe))
    if _is_keras(model):
        keras = _frameworks.keras()
        outputs = []
        for name in names:
            output = model.get_layer(name).output
            outputs.append(output[0] if isinstance(output, (list, tuple)) else output)
        values = keras.Model(_keras_input(model), outputs)(probe, training=False)
        return [_np(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    torch = _frameworks.torch()
    captured: dict[str, Any] = {}

    def hook(name: str) -> Any:
        def keep(module: Any, inputs: Any, output: Any) -> None:  # None: a returned value would replace the output
            # clone: an in-place ReLU after the module would otherwise overwrite what we captured
            captured.setdefault(name, output.detach().clone())
            if len(captured) == len(set(names)):
                raise _AllCaptured  # the rest of the network is not needed
        return keep

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), contextlib.suppress(_AllCaptured):
            model(torch.from_numpy(np.ascontiguousarray(probe.transpose(0, 3, 1, 2))))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [captured[n].numpy().transpose(0, 2, 3, 1)
            if captured[n].ndim == 4 and not _channels_last_output(model.get_submodule(n), torch)
            else captured[n].numpy() for n in names]


def _channels_last_output(module: Any, torch: Any) -> bool:
    """A Linear, or a plain LayerNorm, acts on the last axis: on a 4-D map (ConvNeXt permutes to
    NHWC around them) its output is already channels last. LayerNorm2d overrides `forward`."""
    nn = torch.nn
    return isinstance(module, nn.Linear) or (isinstance(module, nn.LayerNorm)
                                            and type(module).forward is nn.LayerNorm.forward)


def _same_activation(pair: Pair, source_model: Any, target_model: Any, reference: np.ndarray,
                     candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras convs and denses may hold their activation; torch modules never do. Apply the
    Keras layer's activation to the torch side's output so like is compared with like."""
    if _is_keras(source_model) == _is_keras(target_model):
        return reference, candidate
    keras_is_source = _is_keras(source_model)
    keras_model, name = (source_model, pair.source.name) if keras_is_source else (target_model, pair.target.name)
    activation = getattr(keras_model.get_layer(name), "activation", None)
    if activation is None:
        return reference, candidate
    if _is_keras(source_model):
        return reference, _np(activation(candidate))
    return _np(activation(reference)), candidate
