"""Live Keras models: list weighted layers, read and write their weights, freeze by name."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from transfer import _frameworks
from transfer.layers import FlattenInfo, Kind, LayerSpec, TensorSpec


def iter_weighted_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, layer) for every layer that owns weights; nested models are walked and their
    layers named `outer/inner`."""
    keras = _frameworks.keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_weighted_layers(layer, f"{prefix}{layer.name}/")
        elif layer.weights:
            yield f"{prefix}{layer.name}", layer


def layer_kind(layer: Any) -> Kind:
    layers = _frameworks.keras().layers
    for cls, kind in ((layers.Conv2DTranspose, "conv2d_transpose"),
                      (layers.DepthwiseConv2D, "depthwise_conv2d"),
                      (layers.Conv2D, "conv2d"), (layers.Dense, "dense"),
                      (layers.BatchNormalization, "batchnorm")):
        if isinstance(layer, cls):
            return kind  # type: ignore[return-value]
    return "other"


def flatten_info(model: Any, layer: Any) -> FlattenInfo:
    """(H, W, C) of the feature map a Flatten layer fed into this Dense layer, else None.

    Keras' Flatten always flattens in HWC order (it moves channels last first when the data
    format is channels_first), so H, W, C here are that order's dimensions.
    """
    keras = _frameworks.keras()
    try:
        dense_input = layer.input
    except (AttributeError, ValueError):  # a layer called several times has no single input
        return "unknown"
    for candidate in _all_layers(model):
        if isinstance(candidate, keras.layers.Flatten) and candidate.output is dense_input:
            shape = tuple(candidate.input.shape[1:])
            if len(shape) != 3 or None in shape:
                return "unknown" if None in shape else None
            if candidate.data_format == "channels_first":
                shape = (shape[1], shape[2], shape[0])
            return (int(shape[0]), int(shape[1]), int(shape[2]))
    return None


def _all_layers(model: Any) -> Iterator[Any]:
    keras = _frameworks.keras()
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def layer_specs(model: Any) -> dict[str, LayerSpec]:
    """Every weighted layer of a live Keras model, in model order."""
    specs: dict[str, LayerSpec] = {}
    for name, layer in iter_weighted_layers(model):
        kind = layer_kind(layer)
        specs[name] = LayerSpec(
            name=name, framework="keras", kind=kind,
            tensors=tuple(TensorSpec(w.name, tuple(int(d) for d in w.shape), str(w.dtype))
                          for w in layer.weights),
            epsilon=float(layer.epsilon) if kind == "batchnorm" else None,
            epsilon_origin="the Keras layer" if kind == "batchnorm" else "",
            flatten=flatten_info(model, layer) if kind == "dense" else "unknown",
        )
    return specs


class KerasModelWeights:
    """Reads and writes the weights of a live Keras model by layer name."""

    framework = "keras"

    def __init__(self, model: Any, description: str | None = None):
        self.model = model
        self.description = description or f"Keras model '{model.name}'"
        self._layers = dict(iter_weighted_layers(model))
        self._specs: dict[str, LayerSpec] | None = None

    def layers(self) -> dict[str, LayerSpec]:
        if self._specs is None:
            self._specs = layer_specs(self.model)
        return self._specs

    def read(self, name: str) -> list[np.ndarray]:
        return [np.asarray(w) for w in self._layers[name].get_weights()]

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None:
        """Set the weights of each named layer (shapes were checked by the engine)."""
        for name, arrays in updates.items():
            self._layers[name].set_weights(arrays)

    def freeze(self, names: list[str]) -> None:
        for name in names:
            self._layers[name].trainable = False
