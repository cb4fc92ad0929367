"""Numerical verification: each moved layer, and the mapped stack, run on a seeded probe
input in both frameworks and compared.

Per layer, the reference is computed from the *source* tensors as read from the source, with
the source framework's own op; the candidate from the tensors now in the *target* model, with
the target framework's op (for a pair within one framework the tensors must be identical).
Where the mapping covers a contiguous stack from the input (every weighted layer before the
last mapped one is mapped, on both sides) and the source is runnable, the two models' outputs
at that layer are compared too. Fast-math (TF32) is switched off while checking.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np

from transfer import _frameworks, layout
from transfer.engine import Pair, WeightTarget, adapted_channels, convert_pair, flatten_of, input_axis
from transfer.errors import VerificationError

LAYER_TOLERANCE = 1e-5  # relative max-abs difference, float32
STACK_TOLERANCE = 1e-4  # errors of many layers add up
PROBE_SEED = 20_240_613


@dataclass
class Check:
    source: str
    target: str
    method: str
    max_abs_diff: float
    rel_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.rel_diff <= self.tolerance)


@dataclass
class Verification:
    stage: str
    layers: list[Check] = field(default_factory=list)
    stack: Check | None = None
    stack_note: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.layers) and (self.stack is None or self.stack.ok)

    def to_dict(self) -> dict[str, Any]:
        data = {"stage": self.stage, "ok": self.ok,
                "tolerance": {"layer": LAYER_TOLERANCE, "stack": STACK_TOLERANCE, "measure": "max|a-b| / max|reference|"},
                "layers": [{**asdict(c), "ok": c.ok} for c in self.layers],
                "stack": {**asdict(self.stack), "ok": self.stack.ok} if self.stack else None}
        if self.stack_note:
            data["stack_note"] = self.stack_note
        return data

    def raise_if_failed(self, where: str) -> None:
        failed = [c for c in self.layers if not c.ok] + ([self.stack] if self.stack and not self.stack.ok else [])
        if failed:
            first = failed[0]
            raise VerificationError(
                f"{where}: verification failed ({self.stage}): first diverging layer '{first.target}' "
                f"(from '{first.source}', {first.method}): relative difference {first.rel_diff:.3g} > "
                f"{first.tolerance:g}, max abs {first.max_abs_diff:.3g}; {len(failed)} check(s) failed.")


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


def verify_transfer(pairs: list[Pair], source: Any, target: WeightTarget, stage: str,
                    source_model: Any = None) -> Verification:
    """Check every pair, then the stack when it applies. Raises nothing; see `.ok`."""
    result = Verification(stage)
    rng = np.random.default_rng(PROBE_SEED)
    with exact_math():
        for pair in pairs:
            result.layers.append(_check_layer(pair, source.read(pair.source.name),
                                              target.read(pair.target.name), rng))
        if source_model is None:
            result.stack_note = "no runnable source model (a weights file of an unknown architecture)"
            return result
        if any(pair.rule.adapt for pair in pairs):
            result.stack_note = "input channels adapted: the two models take different inputs"
            return result
        stack = _stack_layers(pairs, _layer_order(source_model), target)
        if isinstance(stack, str):
            result.stack_note = stack
        else:
            result.stack = _check_stack(stack, source_model, target.model)
    return result


def _check_layer(pair: Pair, source_arrays: list[np.ndarray], target_arrays: list[np.ndarray],
                 rng: np.random.Generator) -> Check:
    source, target = pair.source, pair.target
    if source.framework == target.framework:
        expected = convert_pair(pair, source_arrays)
        diffs = [_rel(e.astype(t.dtype), t) for e, t in zip(expected, target_arrays)]
        worst = max(diffs, key=lambda d: d[1]) if diffs else (0.0, 0.0)
        return Check(source.name, target.name, "tensors compared", worst[0], worst[1], 0.0)
    adapted = adapted_channels(pair)
    if adapted:  # the reference applies the same declared adaptation, in the source's layout
        axis = input_axis(pair.kind, source.framework)
        source_arrays = [layout.adapt_in_channels(source_arrays[0], axis, adapted[1], pair.rule.adapt),
                         *source_arrays[1:]]
    probe = _probe(pair, target_arrays, rng)
    reference = _apply(source.framework, pair, source, source_arrays, probe)
    candidate = _apply(target.framework, pair, target, target_arrays, probe)
    diff, rel = _rel(reference, candidate)
    return Check(source.name, target.name, f"{pair.kind} on a probe, {source.framework} vs {target.framework}",
                 diff, rel, LAYER_TOLERANCE)


def _keras_side(pair: Pair) -> Any:
    return pair.target if pair.target.framework == "keras" else pair.source


def _probe(pair: Pair, target_arrays: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A channels-last probe the layer accepts (built from the Keras side's kernel shape)."""
    shape = list(_keras_side(pair).tensors[0].shape)
    adapted = adapted_channels(pair)
    if adapted:
        shape[2] = adapted[1]
    if pair.kind in ("conv2d", "depthwise_conv2d"):
        return rng.normal(size=(2, shape[0] + 3, shape[1] + 4, shape[2])).astype(np.float32)
    if pair.kind == "conv2d_transpose":
        return rng.normal(size=(2, 4, 5, shape[3])).astype(np.float32)
    if pair.kind == "batchnorm":
        return rng.normal(size=(2, 3, 3, shape[0])).astype(np.float32)
    if pair.kind == "dense":
        flatten = flatten_of(pair)
        size = (2, *flatten) if flatten else (2, shape[0])
        return rng.normal(size=size).astype(np.float32)
    raise VerificationError(f"no probe is defined for {pair.kind} layers.")


def _apply(framework: str, pair: Pair, spec: Any, arrays: list[np.ndarray], probe: np.ndarray) -> np.ndarray:
    """Run one layer's op in `framework` on the channels-last probe; return channels-last."""
    arrays = [np.asarray(a, np.float32) for a in arrays]
    return _apply_torch(pair, spec, arrays, probe) if framework == "torch" else _apply_keras(pair, spec, arrays, probe)


def _apply_torch(pair: Pair, spec: Any, arrays: list[np.ndarray], probe: np.ndarray) -> np.ndarray:
    torch = _frameworks.torch()
    functional = torch.nn.functional
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    weight, bias = tensors[0], (tensors[1] if len(tensors) > 1 else None)
    if pair.kind == "dense":
        x = torch.from_numpy(probe)
        if x.ndim == 4:
            x = torch.flatten(x.permute(0, 3, 1, 2), 1)  # torch flattens CHW
        return functional.linear(x, weight, bias).numpy()
    x = torch.from_numpy(np.ascontiguousarray(probe.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        if pair.kind == "conv2d":
            y = functional.conv2d(x, weight, bias)
        elif pair.kind == "depthwise_conv2d":
            y = functional.conv2d(x, weight, bias, groups=x.shape[1])
        elif pair.kind == "conv2d_transpose":
            y = functional.conv_transpose2d(x, weight, bias)
        else:
            y = functional.batch_norm(x, tensors[2], tensors[3], weight, bias, False, 0.0, _epsilon(pair, spec))
    return y.numpy().transpose(0, 2, 3, 1)


def _apply_keras(pair: Pair, spec: Any, arrays: list[np.ndarray], probe: np.ndarray) -> np.ndarray:
    ops = _frameworks.keras().ops
    kernel, bias = arrays[0], (arrays[1] if len(arrays) > 1 else None)
    if pair.kind == "dense":
        y = ops.matmul(ops.reshape(probe, (probe.shape[0], -1)), kernel)  # Keras flattens HWC
    elif pair.kind == "conv2d":
        y = ops.conv(probe, kernel, strides=1, padding="valid")
    elif pair.kind == "depthwise_conv2d":
        y = ops.depthwise_conv(probe, kernel, strides=1, padding="valid")
    elif pair.kind == "conv2d_transpose":
        y = ops.conv_transpose(probe, kernel, strides=1, padding="valid")
    else:
        return _np(ops.batch_normalization(probe, arrays[2], arrays[3], axis=-1, offset=arrays[1],
                                           scale=arrays[0], epsilon=_epsilon(pair, spec)))
    return _np(y + bias if bias is not None else y)


def _epsilon(pair: Pair, spec: Any) -> float:
    """A side's BatchNorm epsilon; an unknown one (a Keras weights file) is the other side's,
    which is what the transfer assumed (and reported)."""
    other = pair.target if spec is pair.source else pair.source
    return spec.epsilon if spec.epsilon is not None else other.epsilon


def _np(tensor: Any) -> np.ndarray:
    keras = _frameworks.keras()
    return np.asarray(keras.ops.convert_to_numpy(tensor))


def _layer_order(model: Any) -> list[str]:
    """Weighted layers in the model's own order (files such as safetensors sort their keys)."""
    if _is_keras(model):
        from transfer.keras_models import iter_weighted_layers

        return [name for name, _ in iter_weighted_layers(model)]
    from transfer.torch_models import layer_specs

    return list(layer_specs(model))


def _stack_layers(pairs: list[Pair], source_order: list[str], target: WeightTarget) -> Pair | str:
    """The last pair of the longest mapped prefix on both sides, or why there is none."""
    mapped_sources = {p.source.name: p for p in pairs}
    mapped_targets = {p.target.name for p in pairs}
    last: Pair | None = None
    for name in source_order:
        if name not in mapped_sources:
            break
        last = mapped_sources[name]
    if last is None:
        return "the first weighted source layer is not mapped"
    target_names = list(target.layers())
    prefix = target_names[: target_names.index(last.target.name) + 1]
    if not all(name in mapped_targets for name in prefix):
        return f"target layers in front of '{last.target.name}' are not mapped"
    return last


def _check_stack(last: Pair, source_model: Any, target_model: Any) -> Check:
    probe = _stack_probe(source_model, target_model)
    reference = _layer_output(source_model, last.source.name, probe)
    candidate = _layer_output(target_model, last.target.name, probe)
    reference, candidate = _same_activation(last, source_model, target_model, reference, candidate)
    diff, rel = _rel(reference, candidate)
    return Check(last.source.name, last.target.name, "model outputs at the last mapped layer",
                 diff, rel, STACK_TOLERANCE)


def _stack_probe(source_model: Any, target_model: Any) -> np.ndarray:
    """One image the size both models accept: the Keras input shape where fixed, else 64x64."""
    keras_model = target_model if _is_keras(target_model) else source_model if _is_keras(source_model) else None
    height = width = 64
    channels = None
    if keras_model is not None:
        shape = keras_model.input_shape
        height, width, channels = shape[1] or 64, shape[2] or 64, shape[3]
    if channels is None:
        torch_model = target_model if not _is_keras(target_model) else source_model
        first_conv = next(m for m in torch_model.modules() if hasattr(m, "in_channels"))
        channels = first_conv.in_channels
    return np.random.default_rng(PROBE_SEED + 1).normal(0, 1, size=(1, height, width, channels)).astype(np.float32)


def _is_keras(model: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def _layer_output(model: Any, name: str, probe: np.ndarray) -> np.ndarray:
    if _is_keras(model):
        keras = _frameworks.keras()
        layer = model.get_layer(name)
        output = layer.output[0] if isinstance(layer.output, (list, tuple)) else layer.output
        return _np(keras.Model(model.input, output)(probe, training=False))
    torch = _frameworks.torch()
    captured: list[Any] = []
    # clone: an in-place ReLU after the module would otherwise overwrite what we captured
    handle = model.get_submodule(name).register_forward_hook(
        lambda module, inputs, output: captured.append(output.detach().clone()))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(probe.transpose(0, 3, 1, 2))))
    finally:
        handle.remove()
        model.train(was_training)
    return captured[0].numpy().transpose(0, 2, 3, 1) if captured[0].ndim == 4 else captured[0].numpy()


def _same_activation(last: Pair, source_model: Any, target_model: Any, reference: np.ndarray,
                     candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras convs and denses may hold their activation; torch modules never do. Apply the
    Keras layer's activation to the torch side's output so like is compared with like."""
    if _is_keras(source_model) == _is_keras(target_model):
        return reference, candidate
    keras_model, name = (source_model, last.source.name) if _is_keras(source_model) else (target_model, last.target.name)
    activation = getattr(keras_model.get_layer(name), "activation", None)
    if activation is None:
        return reference, candidate
    if _is_keras(source_model):
        return reference, _np(activation(candidate))
    return _np(activation(reference)), candidate
