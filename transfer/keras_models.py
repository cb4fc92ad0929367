"""Live Keras models as adapters: list weighted layers, read and write their weights by layer
name, snapshot and restore, freeze by name, save and reload; and `.keras` files loaded safely."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transfer import _frameworks, kinds
from transfer.adapter import Closing, Runnable, Snapshot
from transfer.archive import check_zip
from transfer.buffers import Allocate
from transfer.errors import CheckpointError, IncompatibleWeightsError
from transfer.flatten_order import keras_order
from transfer.formats import KERAS_MODEL, is_whole_model, output_format
from transfer.keras_memory import TensorFlowMemory
from transfer.kinds import LayerSpec
from transfer.layers import FROM_FILE, TensorSpec
from transfer.output import atomic_write
from transfer.written import WrittenKerasFile, open_written_keras


def iter_weighted_layers(model: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, layer) for every layer that owns weights; nested models are walked and their
    layers named `outer/inner`."""
    keras = _frameworks.keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_weighted_layers(layer, f"{prefix}{layer.name}/")
        elif layer.weights:
            yield f"{prefix}{layer.name}", layer


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer, nested models' layers included (and the nested models themselves)."""
    keras = _frameworks.keras()
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def layer_specs(model: Any) -> dict[str, LayerSpec]:
    """Every weighted layer of a live Keras model, in model order."""
    keras = _frameworks.keras()
    specs: dict[str, LayerSpec] = {}
    for name, layer in iter_weighted_layers(model):
        kind = kinds.keras_layer_kind(layer, keras)
        specs[name] = LayerSpec(
            name=name, framework="keras", kind=kind,
            tensors=tuple(TensorSpec(w.name, tuple(int(d) for d in w.shape), str(w.dtype))
                          for w in layer.weights),
            epsilon=float(layer.epsilon) if kind.carries_epsilon else None,
            epsilon_origin="the Keras layer" if kind.carries_epsilon else "",
            flatten=keras_order(layer, keras) if kind.reads_flattened else FROM_FILE,
            groups=kind.keras_groups(layer), class_name=type(layer).__name__,
        )
    return specs


def custom_objects() -> dict[str, Any]:
    """The Keras layers this package defines, for `keras.saving.load_model`: SegNet's pooling
    layers and the ViT's class token, position embedding and class-token output."""
    from transfer.targets.keras_pooling import CUSTOM_OBJECTS
    from transfer.targets.keras_vit import CUSTOM_OBJECTS as VIT_OBJECTS

    return {**CUSTOM_OBJECTS, **VIT_OBJECTS}


def load_keras_file(path: Path) -> Any:
    """Load a `.keras` model in safe mode (no lambda or arbitrary code deserialised), after
    checking the archive itself (member names, links, compression ratio)."""
    keras = _frameworks.keras()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    check_zip(path)
    try:
        return keras.saving.load_model(path, custom_objects=custom_objects(), compile=False,
                                       safe_mode=True)
    except Exception as exc:  # keras raises many types here; all mean "not a loadable model"
        raise CheckpointError(f"{path}: cannot load the Keras model: {type(exc).__name__}: {exc}") from exc


def _unchanging_value(variable: Any, backend: str) -> Any:
    """The variable's current value, as something no later `assign` alters."""
    if backend == "tensorflow":
        return variable.value.read_value()  # an immutable tensor (TensorFlow copies on write)
    if backend == "jax":
        return variable.value  # jax arrays are immutable; assign replaces the array
    return np.array(variable.numpy(), copy=True)  # torch (and others) update in place


class KerasModelWeights(Closing):
    """Reads and writes the weights of a live Keras model by layer name."""

    framework = "keras"

    def __init__(self, model: Any, description: str | None = None, path: Path | None = None,
                 preprocessing: str | None = None):
        self.model = model
        self.description = description or f"Keras model '{model.name}'"
        self.path = path
        self.preprocessing = preprocessing
        self._layers = dict(iter_weighted_layers(model))
        self._specs: dict[str, LayerSpec] | None = None
        self._memory: TensorFlowMemory | None = None

    def layers(self) -> dict[str, LayerSpec]:
        if self._specs is None:
            self._specs = layer_specs(self.model)
        return self._specs

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        return [np.asarray(w) for w in self._layers[name].get_weights()]

    def view(self, name: str) -> list[np.ndarray]:
        return self.read(name)

    @property
    def memory(self) -> Allocate | None:
        """On TensorFlow, new tensors' memory (`transfer.keras_memory`): what is read into it
        is kept by the variables with no copy. Other backends copy in `set_weights`."""
        memory = self._tensorflow_memory()
        return memory.empty if memory is not None else None

    def _tensorflow_memory(self) -> TensorFlowMemory | None:
        if _frameworks.keras().backend.backend() != "tensorflow":
            return None
        if self._memory is None:
            self._memory = TensorFlowMemory()
        return self._memory

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None:
        """Set the weights of each named layer (shapes were checked by the engine). On
        TensorFlow each variable is assigned a tensor: the one an array handed out by
        `memory` lives in (adopted, no copy), or a new one holding a single copy of any other
        array, cast on the way (`set_weights` makes two). Not copied into the variables'
        memory in place: TensorFlow's whole-range slice assignment does that, but it puts the
        variable in copy-on-read mode for good, so every later read (each training step)
        would copy it (measured 2026-12-02)."""
        memory = self._tensorflow_memory()
        keras = _frameworks.keras()
        for name, arrays in updates.items():
            layer = self._layers[name]
            if memory is None or type(layer).set_weights is not keras.layers.Layer.set_weights:
                layer.set_weights(arrays)  # a layer with a set_weights of its own gets it called
                continue
            variables = layer.weights
            if len(variables) != len(arrays):
                raise IncompatibleWeightsError(f"layer '{name}' holds {len(variables)} weights; "
                                               f"received {len(arrays)} arrays.")
            for variable, array in zip(variables, arrays):
                variable.assign(memory.tensor_for(array, variable.dtype))

    def snapshot(self, names: Iterable[str], spill_above: int | None = None) -> Snapshot:
        """On TensorFlow and JAX a variable's value is an immutable tensor, which a later
        `assign` never changes: keeping a reference is a snapshot, at no cost. On the torch
        backend variables are updated in place, so their values are cloned."""
        backend = _frameworks.keras().backend.backend()
        snapshot = Snapshot([(layer, bool(layer.trainable)) for layer in all_layers(self.model)], spill_above)
        for name in names:
            variables = self._layers[name].weights
            values = [_unchanging_value(v, backend) for v in variables]
            snapshot.put(name, values, sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables))
        return snapshot

    def restore(self, snapshot: Snapshot) -> None:
        for name in snapshot.names():
            for variable, value in zip(self._layers[name].weights, snapshot.get(name)):
                variable.assign(value)
        for layer, trainable in snapshot.flags:
            if layer.trainable != trainable:
                layer.trainable = trainable

    def freeze(self, names: list[str]) -> None:
        for name in names:
            self._layers[name].trainable = False

    def save(self, path: Path, check: Callable[[Path], None] | None = None) -> None:
        """`.keras` (the whole model) or `.weights.h5`, written atomically."""
        fmt, suffix = output_format(path, self.framework)
        write = self.model.save if fmt is KERAS_MODEL else self.model.save_weights
        atomic_write(path, suffix, write, check)

    def written(self, path: Path) -> WrittenKerasFile | None:
        """The file `save` just wrote, its tensors read by layer name without building a model;
        None where that reading cannot account for it (then `reload`)."""
        return open_written_keras(path, self.model, list(self._layers), set(custom_objects()),
                                  whole_model=is_whole_model(path))

    def reload(self, path: Path) -> KerasModelWeights:
        """A fresh copy of the model holding the weights read back from `path`."""
        if is_whole_model(path):
            return KerasModelWeights(load_keras_file(path), f"Keras model file {path}", path=path)
        clone = _frameworks.keras().models.clone_model(self.model)
        clone.load_weights(str(path))
        return KerasModelWeights(clone, f"{self.description}, reloaded from {path.name}", path=path)

    def runnable(self) -> Runnable:
        return self.model, ""
