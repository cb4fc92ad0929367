"""The file formats, in one place: each a record (its name, framework, how a path is recognised,
whether a target can be written to it), and one `detect(path)`. Every module that needs to know
what a path is asks here; opening a format is dispatched on `Format.name` by the sources
(`transfer.sources.open_source`), writing by the adapters. Adding a format: a record here, a
reader in `transfer/sources/`, its branch in the dispatch, and its tests (docs/development.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transfer.errors import CheckpointError


@dataclass(frozen=True)
class Format:
    """One kind of weights file. `suffixes` are matched on the whole file name, longest first
    (`.safetensors.index.json` before `.json`); `writes` are the suffixes a target is written
    as; `whole_model` files hold an architecture too (a target can be loaded from one)."""

    name: str
    framework: str  # "keras" or "torch" (ONNX keeps torch's layouts)
    suffixes: tuple[str, ...]
    description: str
    writes: tuple[str, ...] = ()
    whole_model: bool = False


KERAS_MODEL = Format("keras-model", "keras", (".keras",), "a whole Keras model", writes=(".keras",), whole_model=True)
KERAS_SHARDED = Format("keras-sharded", "keras", (".weights.json",), "Keras 3 sharded weights (the index)")
KERAS_WEIGHTS = Format("keras-weights", "keras", (".weights.h5",), "Keras 3 weights", writes=(".weights.h5",))
KERAS_H5 = Format("keras-h5", "keras", (".h5", ".hdf5"), "Keras HDF5 weights (legacy, or Keras 3)")
SAFETENSORS_INDEX = Format("safetensors-index", "torch", (".safetensors.index.json",),
                           "sharded safetensors (the index)")
SAFETENSORS = Format("safetensors", "torch", (".safetensors",), "a safetensors state dict", writes=(".safetensors",))
TORCH_PICKLE = Format("torch-pickle", "torch", (".pth", ".pt", ".bin"), "a torch.save state dict",
                      writes=(".pth", ".pt"))
NUMPY_ARCHIVE = Format("numpy-archive", "torch", (".npz",), "a NumPy archive of a torch state dict "
                       "(`numpy.savez(path, **{key: tensor.numpy() ...})`)")
ONNX = Format("onnx", "torch", (".onnx",), "an ONNX graph")
FOLDER = Format("folder", "torch", (), "a Hugging Face / timm folder")

# in the order error messages list them
FORMATS: tuple[Format, ...] = (KERAS_WEIGHTS, KERAS_MODEL, KERAS_SHARDED, KERAS_H5, TORCH_PICKLE, SAFETENSORS,
                               SAFETENSORS_INDEX, NUMPY_ARCHIVE, ONNX, FOLDER)

# what a checkpoint folder may hold, in the order they are tried
SHARD_INDEX = "model.safetensors.index.json"
FOLDER_MEMBERS = (SHARD_INDEX, "model.safetensors", "pytorch_model.bin")


def _by_suffix() -> list[tuple[str, Format]]:
    return sorted(((s, f) for f in FORMATS for s in f.suffixes), key=lambda item: -len(item[0]))


def detect(path: Path) -> Format | None:
    """The format of `path` by its name (a folder is a checkpoint folder), or None."""
    if path.is_dir():
        return FOLDER
    name = path.name
    return next((fmt for suffix, fmt in _by_suffix() if name.endswith(suffix) and len(name) > len(suffix)), None)


def is_whole_model(path: Path | str) -> bool:
    """A file that holds an architecture as well as weights (a `.keras` model)."""
    found = detect(Path(path))
    return found is not None and found.whole_model


def known_suffix(path: Path | str) -> bool:
    return detect(Path(path)) not in (None, FOLDER)


def output_format(path: Path, framework: str) -> tuple[Format, str]:
    """The format and suffix a target of `framework` is written as at `path`, or a
    CheckpointError saying which suffixes exist."""
    allowed = [(s, f) for s, f in _by_suffix() if f.framework == framework and s in f.writes]
    for suffix, fmt in allowed:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return fmt, suffix
    names = " or ".join(s for f in FORMATS if f.framework == framework for s in f.writes)
    raise CheckpointError(f"{path}: a {framework} target is written as {names}; received '{path.name}'.")
