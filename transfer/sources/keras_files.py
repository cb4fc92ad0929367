"""Keras weight files read lazily with h5py: the legacy HDF5 layout (`*_notop.h5`, full-model
`.h5` saves) and Keras 3 `.weights.h5`. Only the tensors of mapped layers are ever read."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from transfer import kinds
from transfer.adapter import ReadOnlyWeights
from transfer.buffers import Allocate, aligned_empty
from transfer.errors import CheckpointError
from transfer.kinds import LayerSpec
from transfer.layers import TensorSpec

# What h5py raises on damaged files, besides OSError: broken attributes, links and headers.
H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError, UnicodeDecodeError)


def open_h5(path: Path) -> h5py.File:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    try:
        return h5py.File(path, "r")
    except H5_ERRORS as exc:
        raise CheckpointError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}.") from exc


def _chunked_attr(group: h5py.Group, name: str) -> list[str]:
    """Keras splits long attributes over `name0`, `name1`, ... when they exceed HDF5 limits."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, index = [], 0
        while f"{name}{index}" in group.attrs:
            values.extend(group.attrs[f"{name}{index}"])
            index += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def is_legacy_h5(file: h5py.File, path: Path) -> bool:
    try:
        root = file.get("model_weights", file)
        return "layer_names" in root.attrs or "layer_names0" in root.attrs
    except H5_ERRORS as exc:
        file.close()
        raise CheckpointError(f"{path}: unreadable HDF5 structure (truncated or corrupt?): {exc}.") from exc


def _short_weight_name(layer: str, weight: str) -> str:
    """`block1_conv1/kernel:0` -> `kernel`; Keras 1's `block1_conv1_W_1:0` -> `W`."""
    base = weight.rsplit("/", 1)[-1].split(":", 1)[0]
    if base.startswith(layer + "_"):
        base = re.sub(r"_\d+$", "", base[len(layer) + 1:])
    return base


class _H5Source(ReadOnlyWeights):
    framework = "keras"

    def __init__(self, path: Path, description: str, preprocessing: str | None,
                 epsilon: tuple[float, str] | None = None, file: h5py.File | None = None):
        self.epsilon = epsilon  # (value, where it comes from): files do not store it
        self.path = path
        self.description = description
        self.preprocessing = preprocessing
        self._file = file if file is not None else open_h5(path)
        self._datasets: dict[str, list[h5py.Dataset]] = {}
        self._specs: dict[str, LayerSpec] = {}

    def _add(self, name: str, short_names: list[str], datasets: list[h5py.Dataset]) -> None:
        shapes = [tuple(int(d) for d in ds.shape) for ds in datasets]
        kind = kinds.keras_file_kind(short_names, shapes)
        self._datasets[name] = datasets
        self._specs[name] = LayerSpec(
            name=name, framework="keras", kind=kind,
            tensors=tuple(TensorSpec(n, s, str(ds.dtype)) for n, s, ds in zip(short_names, shapes, datasets)),
            epsilon=self.epsilon[0] if self.epsilon and kind.carries_epsilon else None,
            epsilon_origin=self.epsilon[1] if self.epsilon else "not stored in Keras weight files",
            kind_from_file=True,
        )

    def layers(self) -> dict[str, LayerSpec]:
        return self._specs

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        try:
            return [_read_into(ds, spec.shape, allocate or aligned_empty)
                    for ds, spec in zip(self._datasets[name], self._specs[name].tensors)]
        except H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: cannot read the tensors of layer '{name}' "
                                  f"(truncated or corrupt file?): {exc}.") from exc

    def view(self, name: str) -> list[np.ndarray]:
        """A streamed transfer's check pass: the tensors stored whole, uncompressed and in
        this machine's byte order are mapped from the file's pages (no copy, nothing
        allocated); the rest is read."""
        try:
            datasets, specs = self._datasets[name], self._specs[name].tensors
            mapped = [self._mapped(ds) for ds in datasets]
            return [m if m is not None else _read_into(ds, spec.shape, aligned_empty)
                    for m, ds, spec in zip(mapped, datasets, specs)]
        except H5_ERRORS as exc:
            raise CheckpointError(f"{self.path}: cannot read the tensors of layer '{name}' "
                                  f"(truncated or corrupt file?): {exc}.") from exc

    def _mapped(self, dataset: h5py.Dataset) -> np.ndarray | None:
        """The dataset's bytes mapped through the file h5py holds open (not reopened by name:
        the file may have been replaced since), or None where they cannot be: stored in
        chunks or filtered, in another byte order, or in another file (an external link).
        A file cut short after this check would fault on access, as any mapped file does."""
        offset = dataset.id.get_offset()
        plain = (dataset.chunks is None and offset is not None and dataset.dtype.isnative and dataset.size
                 and dataset.shape and self._file.driver == "sec2" and dataset.file.id == self._file.id)
        if not plain:
            return None
        handle = self._file.id.get_vfd_handle()
        end, size = offset + dataset.size * dataset.dtype.itemsize, os.fstat(handle).st_size
        if end > size:
            raise CheckpointError(f"{self.path}: dataset '{dataset.name}' reaches byte {end:,} of a file of "
                                  f"{size:,} bytes (truncated or corrupt file?).")
        with os.fdopen(os.dup(handle), "rb") as file:  # the map keeps its own reference to the file
            return np.memmap(file, dtype=dataset.dtype, mode="r", offset=offset, shape=tuple(dataset.shape))

    def close(self) -> None:
        self._file.close()


def _read_into(dataset: h5py.Dataset, shape: tuple[int, ...], allocate: Allocate) -> np.ndarray:
    """A dataset (of the `shape` listed when the file was opened) read whole into new memory
    from `allocate` (`transfer.buffers`): the target's own, where it offers it, which it then
    keeps without a copy. In this machine's byte order (HDF5 converts on the way), through
    h5py's low-level read: the high-level `read_direct` builds selections for every call,
    about a tenth of a small transfer's time (2026-12-02)."""
    out = allocate(shape, dataset.dtype.newbyteorder("="))
    if out.size:
        if tuple(dataset.shape) != tuple(shape):  # the file changed since it was listed
            raise ValueError(f"dataset '{dataset.name}' now holds shape {dataset.shape}, listed as {shape}")
        dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    return out


def split_nested(layer: str, weight_names: list[str]) -> list[tuple[str, list[str]]]:
    """A layer group's weights by the layer that owns them. A model nested as a layer (Keras 2's
    `Sequential([VGG16(...), Flatten(), Dense(...)])`) keeps all its weights in the outer
    layer's group, named by its inner layers (`block1_conv1/kernel`): those become layers
    `vgg16/block1_conv1`, ... Two or more inner prefixes are needed to tell a nested model from
    a layer whose weights carry another scope name."""
    inner: dict[str, list[str]] = {}
    for name in weight_names:
        relative = name[len(layer) + 1:] if name.startswith(layer + "/") else name
        inner.setdefault(relative.rpartition("/")[0], []).append(name)
    if len(inner) < 2 or "" in inner:
        return [(layer, weight_names)]
    return [(f"{layer}/{prefix}", names) for prefix, names in inner.items()]


class LegacyH5Source(_H5Source):
    """Keras' legacy HDF5 weights: root attribute `layer_names`, one group per layer with
    attribute `weight_names`; full-model saves nest this under `model_weights/`. Inner layers
    of a nested model are named `outer/inner`."""

    def __init__(self, path: Path, preprocessing: str | None = None,
                 epsilon: tuple[float, str] | None = None, file: h5py.File | None = None):
        super().__init__(path, f"Keras legacy HDF5 weights {path}", preprocessing, epsilon, file)
        try:
            root = self._file.get("model_weights", self._file)
            for layer in _chunked_attr(root, "layer_names"):
                group = root[layer]
                for name, weight_names in split_nested(layer, _chunked_attr(group, "weight_names")):
                    if weight_names:
                        self._add(name, [_short_weight_name(layer, w) for w in weight_names],
                                  [group[w] for w in weight_names])
        except H5_ERRORS as exc:
            self.close()
            raise CheckpointError(f"{path}: not laid out like a Keras legacy weights file: {exc}.") from exc


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def vars_groups(file: h5py.File) -> list[tuple[str, h5py.Group]]:
    """(layer path, its `vars` group) for every group of a Keras 3 weights file that holds
    variables; the optimizer's are not layers'."""
    found: list[tuple[str, h5py.Group]] = []

    def visit(group_path: str, item: Any) -> None:
        if (isinstance(item, h5py.Group) and group_path.endswith("/vars") and len(item)
                and not group_path.startswith("optimizer/")):
            found.append((group_path[: -len("/vars")], item))

    file.visititems(visit)
    return found


class KerasV3WeightsSource(_H5Source):
    """A Keras 3 `.weights.h5` read without its model: layers are the groups holding `vars/`,
    named by their path with the `layers/` levels dropped (`layers/conv2d_3` -> `conv2d_3`,
    `block1/layers/conv2d` -> `block1/conv2d`). Keras names them by a per-class counter,
    not by the layer's name; the optimizer's variables are not layers."""

    def __init__(self, path: Path, preprocessing: str | None = None,
                 epsilon: tuple[float, str] | None = None, file: h5py.File | None = None):
        super().__init__(path, f"Keras 3 weights file {path}", preprocessing, epsilon, file)
        try:
            found = vars_groups(self._file)
            if not found:
                raise CheckpointError(f"{path}: no '.../vars' groups: not a Keras 3 weights file.")
            for group_path, vars_group in sorted(found, key=lambda f: _natural_key(f[0])):
                name = "/".join(p for p in group_path.split("/") if p != "layers")
                keys = sorted(vars_group.keys(), key=int)
                self._add(name, [f"vars/{k}" for k in keys], [vars_group[k] for k in keys])
        except H5_ERRORS as exc:
            self.close()
            raise CheckpointError(f"{path}: unreadable Keras 3 weights file: {exc}.") from exc


class KerasShardedWeightsSource(_H5Source):
    """Keras 3 sharded weights (`model.save_weights("m.weights.json", max_shard_size=...)`):
    a JSON `weight_map` from each `/.../vars` group to the shard files holding its variables,
    each shard laid out like a `.weights.h5`. Layers are named as for `KerasV3WeightsSource`;
    shards are opened once and read lazily; shard names must stay in the index's folder."""

    def __init__(self, path: Path, preprocessing: str | None = None,
                 epsilon: tuple[float, str] | None = None):
        import json

        try:
            weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map must be a mapping")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: not a Keras sharded-weights index: {exc}.") from exc
        folder = path.parent.resolve()
        names = sorted({shard for shards in weight_map.values() for shard in _listed(shards, path)})
        for shard in names:
            if folder not in (folder / shard).resolve().parents:
                raise CheckpointError(f"{path}: refused: shard '{shard}' lies outside the index's folder.")
        if not names:
            raise CheckpointError(f"{path}: the index lists no shard.")
        self._shards = {name: open_h5(folder / name) for name in names}
        super().__init__(path, f"Keras 3 sharded weights {path}", preprocessing, epsilon,
                         file=self._shards[names[0]])
        try:
            for group_path in sorted(weight_map, key=_natural_key):
                inner = group_path.strip("/")
                if not inner.endswith("vars") or inner.startswith("optimizer/"):
                    continue
                found = {}
                for shard in _listed(weight_map[group_path], path):
                    group = self._shards[shard].get(inner)
                    if group is not None:
                        found.update({key: group[key] for key in group})
                if found:
                    keys = sorted(found, key=int)
                    name = "/".join(p for p in inner[: -len("/vars")].split("/") if p != "layers")
                    self._add(name, [f"vars/{k}" for k in keys], [found[k] for k in keys])
        except H5_ERRORS as exc:
            self.close()
            raise CheckpointError(f"{path}: unreadable Keras sharded weights: {exc}.") from exc

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()


def _listed(shards: Any, index: Path) -> list[str]:
    if isinstance(shards, str):
        return [shards]
    if isinstance(shards, list) and all(isinstance(s, str) for s in shards):
        return shards
    raise CheckpointError(f"{index}: a weight_map entry must name shard files; received {shards!r}.")
