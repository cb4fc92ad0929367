"""The tensors of a file this tool has just written, read straight from the file for the
written-file check, without building a model: a `.keras` archive's `model.weights.h5` (or a
`.weights.h5`) by the layer names Keras stores beside each layer's variables, a torch state dict
memory-mapped or a safetensors file by key.

Building the model again (a `.keras` deserialised in safe mode, a module deep-copied and loaded)
costs more than the transfer itself. Where this reading cannot account for the file as the
model's (a layer's name not stored, names repeated, nested models, a layer class a safe-mode
load might refuse), `None` is returned and the caller reloads the file as a whole model instead.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from transfer.archive import check_zip
from transfer.errors import CheckpointError

WEIGHTS_MEMBER = "model.weights.h5"  # where Keras 3 keeps the variables inside a `.keras` archive
CONFIG_MEMBER = "config.json"


class WrittenKerasFile:
    """A Keras 3 weights file Keras wrote from `model`: each weighted layer's `vars/0..n-1`,
    found by the `name` attribute Keras writes on the group (its paths count layers by class,
    `conv2d_7`, which a loader maps back to layers by the model's order)."""

    def __init__(self, path: Path, archive: io.BufferedReader | None, file: h5py.File, groups: dict[str, h5py.Group]):
        self.path = path
        self.how = (f"tensors read from {WEIGHTS_MEMBER} inside the file" if archive is not None
                    else "tensors read from the file")
        self._archive, self._file, self._groups = archive, file, groups

    def read(self, name: str) -> list[np.ndarray]:
        group = self._groups[name]
        try:
            return [np.asarray(group[key][()]) for key in sorted(group, key=int)]
        except (OSError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: cannot read back the tensors of layer '{name}': {exc}.") from exc

    def close(self) -> None:
        _close(self._file, self._archive)

    def __enter__(self) -> WrittenKerasFile:  # noqa: PYI034  (Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_written_keras(path: Path, model: Any, weighted: list[str], known_classes: set[str],
                       whole_model: bool) -> WrittenKerasFile | None:
    """The written file read by layer name, or None where it cannot be accounted for that way."""
    if any("/" in name for name in weighted):
        return None  # nested models: names repeat across them; the reload maps them
    raw: io.BufferedReader | None = None
    file: h5py.File | None = None
    try:
        if whole_model:
            check_zip(path)
            raw = open(path, "rb")  # noqa: SIM115  (closed by WrittenKerasFile, or below)
            with zipfile.ZipFile(raw) as archive:
                config = json.loads(archive.read(CONFIG_MEMBER))
                member = archive.getinfo(WEIGHTS_MEMBER)
            if member.compress_type != zipfile.ZIP_STORED or not _config_matches(config, model, known_classes):
                raw.close()
                return None
            file = h5py.File(_StoredMember(raw, _data_offset(raw, member), member.file_size), "r")
        else:
            file = h5py.File(path, "r")
        groups = _named_groups(file)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        _close(file, raw)
        raise CheckpointError(f"{path}: the file just written cannot be read back: {exc}.") from exc
    if groups is None or set(groups) != set(weighted):
        _close(file, raw)
        return None
    return WrittenKerasFile(path, raw, file, groups)


def _close(file: h5py.File | None, raw: io.BufferedReader | None) -> None:
    if file is not None:
        file.close()  # before the file under it: h5py reads through it until closed
    if raw is not None:
        raw.close()


class _StoredMember(io.RawIOBase):
    """An uncompressed zip member read in place: h5py reads it as a file without the archive
    being extracted or copied (zipfile's own member reader re-reads from the start on every
    backward seek, which HDF5 does all the time)."""

    def __init__(self, file: io.BufferedReader, start: int, size: int):
        super().__init__()
        self._file, self._start, self._size, self._position = file, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._position))
        if count == 0:
            return 0
        self._file.seek(self._start + self._position)
        got = self._file.readinto(memoryview(buffer)[:count]) or 0
        self._position += got
        return got


def _data_offset(file: io.BufferedReader, member: zipfile.ZipInfo) -> int:
    """Where a member's bytes begin: after its local header (30 bytes, then its own name and
    extra field, whose lengths may differ from the central directory's)."""
    file.seek(member.header_offset)
    header = file.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise ValueError(f"no local header for {member.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return member.header_offset + 30 + name_length + extra_length


def _named_groups(file: h5py.File) -> dict[str, h5py.Group] | None:
    """Layer name -> its `vars` group, for every group holding variables; None when one has no
    stored name or a name repeats."""
    from transfer.sources.keras_files import vars_groups  # the package `sources` imports the adapters

    found: dict[str, h5py.Group] = {}
    for _, group in vars_groups(file):
        name = group.attrs.get("name")
        if not isinstance(name, str) or name in found:
            return None
        found[name] = group
    return found


def _config_matches(config: dict[str, Any], model: Any, known_classes: set[str]) -> bool:
    """The archive's architecture is the model's, layer for layer (names and classes), and
    holds no class that a safe-mode load could refuse (a Lambda, a class neither Keras' nor
    this package's); otherwise the caller reloads the archive, which says why it fails."""
    layers = config.get("config", {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return False  # a subclassed model: no layer list to compare
    described = [(entry.get("config", {}).get("name"), entry.get("class_name")) for entry in layers]
    if described != [(layer.name, type(layer).__name__) for layer in model.layers]:
        return False
    return all(_safely_loadable(entry, known_classes) for entry in layers)


def _safely_loadable(entry: dict[str, Any], known_classes: set[str]) -> bool:
    module = str(entry.get("module") or "")
    name = entry.get("class_name")
    if name == "Lambda":
        return False
    if not (module.startswith("keras.") or name in known_classes or entry.get("registered_name") in known_classes):
        return False
    inner = entry.get("config", {}).get("layers")
    return all(_safely_loadable(e, known_classes) for e in inner) if isinstance(inner, list) else True


class WrittenStateDict:
    """A torch state dict just written, opened lazily (memory-mapped, or safetensors slices):
    every key of the module's own state dict present with its shape and dtype, and no other (what
    a strict `load_state_dict` demands), each layer's tensors read in the module's order."""

    how = "tensors read back from the file, memory-mapped"

    def __init__(self, path: Path, entries: dict[str, Any], layer_keys: dict[str, list[str]]):
        self.path, self._entries, self._layer_keys = path, entries, layer_keys

    def read(self, name: str) -> list[np.ndarray]:
        from transfer.sources.torch_files import materialize

        arrays = []
        for key in self._layer_keys[name]:
            tensor = materialize(self._entries[key])
            arrays.append(tensor.float().numpy() if str(tensor.dtype) == "torch.bfloat16" else tensor.numpy())
        return arrays

    def close(self) -> None:
        self._entries = {}

    def __enter__(self) -> WrittenStateDict:  # noqa: PYI034  (Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_written_state(path: Path, state: dict[str, Any], layer_keys: dict[str, list[str]],
                       description: str) -> WrittenStateDict:
    """`state`: the module's own state dict; `layer_keys`: each weighted layer's keys, in the
    order its adapter reads them. Raises `CheckpointError` when the file does not fit the module."""
    from transfer.sources.torch_files import open_state_file, tensor_dtype, tensor_shape

    entries = open_state_file(path)
    missing, unexpected = sorted(set(state) - set(entries)), sorted(set(entries) - set(state))
    misfit = [key for key in state if key in entries
              and (tuple(tensor_shape(entries[key])) != tuple(state[key].shape)
                   or tensor_dtype(entries[key]) != str(state[key].dtype).removeprefix("torch."))]
    if missing or unexpected or misfit:
        raise CheckpointError(f"{path}: does not fit {description}: missing keys {missing[:5]}, unexpected keys "
                              f"{unexpected[:5]}, other shape or dtype {misfit[:5]}.")
    return WrittenStateDict(path, entries, layer_keys)
