"""Runners: one interface that runs a model on a probe and returns the outputs of named layers,
channels last, whatever holds the model: a Keras model (functional or Sequential through its
graph; subclassed by being called on the probe), a torch module (forward hooks) or an ONNX graph
(onnxruntime). Verification asks a runner, never which framework it holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from transfer import _frameworks
from transfer.errors import UserCodeError


class Runner(Protocol):
    def order(self) -> list[str]:
        """Weighted layers in the model's own order."""

    def input_hwc(self) -> tuple[int | None, int | None, int | None]:
        """(H, W, C) the model takes; None where any size goes or nothing says."""

    def outputs(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        """Outputs of the named layers on one NHWC probe, channels last, in one pass."""

    def fused_activation(self, name: str) -> Callable[[Any], Any] | None:
        """The activation a layer applies inside itself (Keras convs and denses), else None."""

    def compute_epsilon(self) -> float:
        """Machine epsilon of the activations' dtype where narrower than float32, else 0."""

    def reachable(self, name: str) -> bool:
        """Whether the layer's output can be read (not inside a nested Keras model)."""

    def retraced(self, height: int, width: int) -> Runner | None:
        """The same layers (the same weights) traced again on an input of this size, for a
        model that fixes a larger one; None where the graph does not trace at that size."""


def runner_for(model: Any) -> Runner:
    from transfer.sources.onnx_files import OnnxGraph

    if isinstance(model, OnnxGraph):
        return OnnxRunner(model)
    framework = _frameworks.framework_of(model)
    if framework == "keras":
        return KerasRunner(model)
    if framework == "torch":
        return TorchRunner(model)
    raise TypeError(f"no runner for {type(model).__name__}")


def _user_forward_failed(model: Any, exc: Exception) -> UserCodeError:
    return UserCodeError(f"the model {type(model).__name__} raised while running the probe of the stack check: "
                         f"{type(exc).__name__}: {exc}")


class _PlainOutputs:
    """A runner whose layers hold no activation of their own, compute in full precision and
    can all be read (torch modules, ONNX nodes)."""

    def fused_activation(self, name: str) -> Callable[[Any], Any] | None:
        return None

    def compute_epsilon(self) -> float:
        return 0.0

    def reachable(self, name: str) -> bool:
        return True

    def retraced(self, height: int, width: int) -> Runner | None:
        return None  # torch modules and ONNX graphs with free sizes take any input as they are


class OnnxRunner(_PlainOutputs):
    def __init__(self, graph: Any):
        self.graph = graph

    def order(self) -> list[str]:
        return list(self.graph.layer_order)

    def input_hwc(self) -> tuple[int | None, int | None, int | None]:
        _, channels, height, width = self.graph.input_shape()
        return height, width, channels

    def outputs(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        return list(self.graph.outputs(names, probe))


class KerasRunner:
    def __init__(self, model: Any):
        self.model = model
        self.keras = _frameworks.keras()

    @property
    def functional(self) -> bool:
        """Has a graph of symbolic tensors (functional, or a Sequential that knows its input)."""
        try:
            return bool(self.model.inputs)
        except (AttributeError, ValueError):
            return False

    def order(self) -> list[str]:
        from transfer.keras_models import iter_weighted_layers

        return [name for name, _ in iter_weighted_layers(self.model)]

    def input_hwc(self) -> tuple[int | None, int | None, int | None]:
        if not self.functional:  # subclassed: nothing says; the first conv tells the channels
            first = next((layer for layer in _all_layers(self.model, self.keras)
                          if getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) == 4), None)
            return None, None, (int(first.kernel.shape[2]) if first is not None else None)
        shape = self.model.inputs[0].shape
        if len(shape) != 4:
            raise ValueError(f"the Keras model takes {len(shape) - 1}-D inputs; the stack check probes images")
        return shape[1], shape[2], shape[3]

    def outputs(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        if self.functional:
            return self._viewed(self.model.inputs, [self.model.get_layer(name).output for name in names], probe)
        return self._called(names, probe)

    def _viewed(self, inputs: list[Any], outputs: list[Any], probe: np.ndarray) -> list[np.ndarray]:
        """The graph from `inputs` to `outputs` (symbolic tensors) run on the probe."""
        outputs = [output[0] if isinstance(output, (list, tuple)) else output for output in outputs]
        view = self.keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs)
        values = view(probe, training=False)
        return [np.asarray(self.keras.ops.convert_to_numpy(v)) for v in (values if isinstance(values, (list, tuple))
                                                                         else [values])]

    def retraced(self, height: int, width: int) -> Runner | None:
        """`keras.models.clone_model` with every layer kept as it is (no copy, no new weights)
        on a new input: a second graph through the same layers, whose outputs are recorded as
        it is built. It adds a node to each layer, so it is only asked of a model built for
        this run. A graph fixed to its size (Flatten before a Dense) does not trace: None."""
        if not self.functional or len(self.model.inputs) != 1:
            return None
        channels = self.model.inputs[0].shape[-1]
        recorded: dict[str, Any] = {}

        def record(layer: Any, *args: Any, **kwargs: Any) -> Any:
            output = layer(*args, **kwargs)
            recorded.setdefault(layer.name, output)
            return output

        new_input = self.keras.Input((height, width, channels), dtype=self.model.inputs[0].dtype)
        try:
            self.keras.models.clone_model(self.model, input_tensors=new_input, clone_function=lambda layer: layer,
                                          call_function=record)
        except (ValueError, TypeError):  # a shape fixed somewhere in the graph
            return None
        return _RetracedKerasRunner(self.model, [new_input], recorded)

    def _called(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        """A subclassed model has no graph: call it on the probe with each named layer's
        `call` wrapped to keep what it returns."""
        captured: dict[str, Any] = {}
        layers = {name: self.model.get_layer(name) for name in names}

        def keeping(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                result = call(*args, **kwargs)
                captured.setdefault(name, result)
                return result
            return wrapped

        for name, layer in layers.items():
            layer.call = keeping(name, layer.call)
        try:
            self.model(probe, training=False)
        except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError) as exc:
            raise _user_forward_failed(self.model, exc) from exc
        finally:
            for layer in layers.values():
                del layer.call  # the class's own `call` again
        missing = [n for n in names if n not in captured]
        if missing:
            raise ValueError(f"the layers {missing} were not called by the model's `call`")
        return [np.asarray(self.keras.ops.convert_to_numpy(captured[n])) for n in names]

    def fused_activation(self, name: str) -> Callable[[Any], Any] | None:
        return getattr(self.model.get_layer(name), "activation", None)

    def compute_epsilon(self) -> float:
        compute = getattr(getattr(self.model, "dtype_policy", None), "compute_dtype", "float32")
        if compute in ("float16", "bfloat16"):
            return 2.0 ** -7 if compute == "bfloat16" else float(np.finfo(np.float16).eps)
        return 0.0

    def reachable(self, name: str) -> bool:
        return "/" not in name  # `stem/conv`: its output lives in the nested model's own graph


class _RetracedKerasRunner(KerasRunner):
    """A functional model's layers on the graph `KerasRunner.retraced` built."""

    def __init__(self, model: Any, inputs: list[Any], recorded: dict[str, Any]):
        super().__init__(model)
        self._inputs, self._recorded = inputs, recorded

    def input_hwc(self) -> tuple[int | None, int | None, int | None]:
        shape = self._inputs[0].shape
        return shape[1], shape[2], shape[3]

    def outputs(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        return self._viewed(self._inputs, [self._recorded[name] for name in names], probe)

    def retraced(self, height: int, width: int) -> Runner | None:
        return None


def _all_layers(model: Any, keras: Any) -> list[Any]:
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found += _all_layers(layer, keras)
    return found


class _AllCaptured(Exception):
    """Raised by the last forward hook to stop a torch model once every output is captured."""


class TorchRunner(_PlainOutputs):
    def __init__(self, model: Any):
        self.model = model
        self.torch = _frameworks.torch()

    def order(self) -> list[str]:
        from transfer.torch_models import layer_specs

        return list(layer_specs(self.model))

    def input_hwc(self) -> tuple[int | None, int | None, int | None]:
        first_conv = next((m for m in self.model.modules() if hasattr(m, "in_channels")), None)
        return None, None, (int(first_conv.in_channels) if first_conv is not None else None)

    def outputs(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        torch, model = self.torch, self.model
        captured: dict[str, Any] = {}

        def hook(name: str) -> Any:
            def keep(module: Any, inputs: Any, output: Any) -> None:  # None: a returned value would replace it
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
        except (TypeError, ValueError, RuntimeError, AttributeError, IndexError, KeyError) as exc:
            raise _user_forward_failed(model, exc) from exc
        finally:
            for handle in handles:
                handle.remove()
            model.train(was_training)
        missing = [n for n in names if n not in captured]
        if missing:
            raise ValueError(f"the modules {missing} were not called by the model's forward")
        return [captured[n].numpy().transpose(0, 2, 3, 1)
                if captured[n].ndim == 4 and not self._channels_last_output(model.get_submodule(n))
                else captured[n].numpy() for n in names]

    def _channels_last_output(self, module: Any) -> bool:
        """A Linear, or a plain LayerNorm, acts on the last axis: on a 4-D map (ConvNeXt permutes
        to NHWC around them) its output is already channels last. LayerNorm2d overrides `forward`."""
        nn = self.torch.nn
        return isinstance(module, nn.Linear) or (isinstance(module, nn.LayerNorm)
                                                and type(module).forward is nn.LayerNorm.forward)
