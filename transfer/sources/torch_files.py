"""torch state-dict files: `.pth`/`.pt` through `torch.load(weights_only=True)`, memory-mapped
where the format allows, `.safetensors`, and `.npz` (a NumPy archive of a state dict, read
without unpickling). A layer is a module path (`features.0`)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from transfer import _frameworks, kinds
from transfer.adapter import ReadOnlyWeights
from transfer.archive import check_zip
from transfer.buffers import Allocate
from transfer.errors import CheckpointError
from transfer.formats import FOLDER_MEMBERS, NUMPY_ARCHIVE, SAFETENSORS, SAFETENSORS_INDEX, detect
from transfer.kinds import LayerSpec
from transfer.layers import TORCH_IGNORED, TensorSpec, torch_sort_key


def _split_key(key: str) -> tuple[str, str]:
    module, _, tensor = key.rpartition(".")
    return (module or "(root)"), tensor


class StateDictSource(ReadOnlyWeights):
    """Layers of a state dict, grouped by module path; `num_batches_tracked` is ignored."""

    framework = "torch"

    def __init__(self, path: Path, tensors: dict[str, Any], epsilon: float, epsilon_origin: str,
                 preprocessing: str | None = None, description: str | None = None):
        self.path = path
        self.description = description or f"torch state dict {path}"
        self.preprocessing = preprocessing
        self._tensors = tensors  # key -> lazily materialised tensor (mmap or safetensors slice)
        self._keys: dict[str, dict[str, str]] = {}
        shapes: dict[str, dict[str, tuple[int, ...]]] = {}
        dtypes: dict[str, str] = {}
        # an attention's out_proj (or timm's qkv and proj) joins its layer
        merged = kinds.torch_file_merges({key: tuple(tensor_shape(t)) for key, t in tensors.items()})
        for key, tensor in tensors.items():
            module, name = merged.get(key) or _split_key(key)
            if name in TORCH_IGNORED:
                continue
            self._keys.setdefault(module, {})[name] = key
            shapes.setdefault(module, {})[name] = tuple(int(d) for d in tensor_shape(tensor))
            dtypes[key] = tensor_dtype(tensor)
        self._specs: dict[str, LayerSpec] = {}
        for module, names in self._keys.items():
            ordered = sorted(names, key=torch_sort_key)
            self._keys[module] = {n: names[n] for n in ordered}
            kind = kinds.torch_file_kind(shapes[module])
            self._specs[module] = LayerSpec(
                name=module, framework="torch", kind=kind,
                tensors=tuple(TensorSpec(n, shapes[module][n], dtypes[names[n]]) for n in ordered),
                epsilon=epsilon if kind.carries_epsilon else None,
                epsilon_origin=epsilon_origin if kind.carries_epsilon else "",
                kind_from_file=True,
            )

    def layers(self) -> dict[str, LayerSpec]:
        return self._specs

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        torch = _frameworks.torch()
        arrays = []
        for key in self._keys[name].values():
            try:
                tensor = materialize(self._tensors[key])
            except Exception as exc:  # safetensors/mmap raise several types on corrupt data
                raise CheckpointError(f"{self.path}: cannot read tensor '{key}' of layer "
                                      f"'{name}' (truncated or corrupt file?): {exc}.") from exc
            if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
                tensor = tensor.float()
            arrays.append(tensor.detach().cpu().numpy())
        return arrays

    @property
    def tensors(self) -> dict[str, Any]:
        """Every entry of the state dict, lazily loaded (num_batches_tracked included)."""
        return self._tensors

    def close(self) -> None:
        self._tensors = {}


def tensor_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(tensor.get_shape()) if hasattr(tensor, "get_shape") else tuple(tensor.shape)


def tensor_dtype(tensor: Any) -> str:
    dtype = tensor.get_dtype() if hasattr(tensor, "get_dtype") else str(tensor.dtype)
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
             "I64": "int64", "I32": "int32"}
    return names.get(dtype, dtype.removeprefix("torch."))


def load_torch_file(path: Path) -> dict[str, Any]:
    """State dict of a `.pth`/`.pt`, never unpickling anything but tensors and containers."""
    torch = _frameworks.torch()
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    mmap = zipfile.is_zipfile(path)  # the legacy (pre-1.6) format cannot be memory-mapped
    if mmap:
        check_zip(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises a dozen types on damaged files; every one means "unreadable"
        raise CheckpointError(f"{path}: {_load_failure(exc)}") from exc
    return _state_dict_of(loaded, path)


def _load_failure(exc: Exception) -> str:
    """torch.load's failure in our words: a refused global is named without torch's advice
    to turn the safety off; anything else is a damaged file."""
    message = str(exc)
    if "Weights only load failed" in message:
        found = re.search(r"GLOBAL ([\w.]+)", message)
        asked = f"the Python object '{found.group(1)}'" if found else "a Python object"
        return (f"refused: the checkpoint's pickle asks for {asked}, which is neither a tensor nor "
                "a plain container (unpickling it could run code; a truncated file can look like "
                "this too). Nothing was loaded.")
    return f"not a readable torch checkpoint (truncated or corrupt?): {first_line(exc)}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _state_dict_of(loaded: Any, path: Path) -> dict[str, Any]:
    torch = _frameworks.torch()
    if isinstance(loaded, dict) and loaded and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return dict(loaded)
    if isinstance(loaded, dict):
        nested = [k for k in ("state_dict", "model", "model_state_dict") if isinstance(loaded.get(k), dict)]
        if len(nested) == 1:
            return _state_dict_of(loaded[nested[0]], path)
    raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors), "
                          f"received {type(loaded).__name__}"
                          f"{' with keys ' + str(list(loaded)[:8]) if isinstance(loaded, dict) else ''}.")


def open_safetensors(path: Path) -> dict[str, Any]:
    """Lazy slices of a `.safetensors` file: shapes come from its header, data on demand."""
    _frameworks.torch()
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    try:
        handle = safe_open(str(path), framework="pt")
        # safetensors stores keys sorted as text; natural order puts features.2 before features.10
        keys = sorted(handle.keys(), key=_natural)
        return {key: LazySafetensor(handle, key) for key in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}.") from exc




def open_sharded_safetensors(index: Path) -> dict[str, Any]:
    """A sharded safetensors checkpoint (Hugging Face's `*.safetensors.index.json`: a
    `weight_map` from tensor name to shard file). Each shard is opened once and read lazily,
    so memory is bounded by the largest tensor, as for one file. Shard names must stay inside
    the index's folder."""
    import json

    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError("weight_map must map tensor names to shard file names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index}: not a safetensors shard index: {first_line(exc)}.") from exc
    folder = index.parent.resolve()
    shards: dict[str, dict[str, Any]] = {}
    for shard in sorted(set(weight_map.values())):
        path = (folder / shard).resolve()
        if folder not in path.parents:
            raise CheckpointError(f"{index}: refused: shard '{shard}' lies outside the index's folder.")
        shards[shard] = open_safetensors(path)
    tensors = {}
    for key, shard in weight_map.items():
        if key not in shards[shard]:
            raise CheckpointError(f"{index}: tensor '{key}' is listed in shard '{shard}', which does not hold it.")
        tensors[key] = shards[shard][key]
    return dict(sorted(tensors.items(), key=lambda item: _natural(item[0])))


def open_state_file(path: Path) -> dict[str, Any]:
    """Any torch-side weights file by its name: `.safetensors`, a shard index (or a folder
    holding one, or `model.safetensors`), else a `torch.save` file."""
    if path.is_dir():
        for name in FOLDER_MEMBERS:
            if (path / name).is_file():
                return open_state_file(path / name)
        raise CheckpointError(f"{path}: a folder without {', '.join(FOLDER_MEMBERS[:-1])} or {FOLDER_MEMBERS[-1]}.")
    fmt = detect(path)
    if fmt is SAFETENSORS_INDEX:
        return open_sharded_safetensors(path)
    if fmt is SAFETENSORS:
        return open_safetensors(path)
    if fmt is NUMPY_ARCHIVE:
        return open_numpy_archive(path)
    return load_torch_file(path)


def _natural(key: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


def open_numpy_archive(path: Path) -> dict[str, Any]:
    """Lazy members of a `.npz`: each member's `.npy` header gives its shape and dtype, its data
    is read on demand. Never unpickles: an object array is refused when read, naming its key."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    check_zip(path)
    try:
        archive = np.load(path, allow_pickle=False)
        entries = {key: LazyNumpyArray(path, archive, key) for key in sorted(archive.files, key=_natural)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable NumPy archive: {exc}.") from exc
    if not entries:
        raise CheckpointError(f"{path}: a NumPy archive with no arrays.")
    return entries


class LazyNumpyArray:
    """One member of an open `.npz`: shape and dtype from its `.npy` header (no data read)."""

    def __init__(self, path: Path, archive: Any, key: str):
        self._path, self._archive, self._key = path, archive, key
        try:
            with archive.zip.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                self._shape, _, dtype = reader(member)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise CheckpointError(f"{path}: member '{key}' has no readable array header: {exc}.") from exc
        if dtype.hasobject:
            raise CheckpointError(f"{path}: array '{key}' holds Python objects (it would need unpickling); "
                                  "refused.")
        self._dtype = dtype

    def get_shape(self) -> list[int]:
        return list(self._shape)

    def get_dtype(self) -> str:
        return str(self._dtype)

    def load(self) -> Any:
        try:
            array = self._archive[self._key]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CheckpointError(f"{self._path}: cannot read array '{self._key}' (truncated or corrupt?): "
                                  f"{exc}.") from exc
        return _frameworks.torch().from_numpy(np.ascontiguousarray(array))


class LazySafetensor:
    """One tensor of an open safetensors file: shape and dtype from the header, data on load."""

    def __init__(self, handle: Any, key: str):
        self._handle, self._key = handle, key
        self._slice = handle.get_slice(key)

    def get_shape(self) -> list[int]:
        return self._slice.get_shape()

    def get_dtype(self) -> str:
        return self._slice.get_dtype()

    def load(self) -> Any:
        return self._handle.get_tensor(self._key)


def materialize(tensor: Any) -> Any:
    """A torch tensor from a state-dict entry (mmap-backed tensor or lazy safetensors entry)."""
    return tensor.load() if isinstance(tensor, (LazySafetensor, LazyNumpyArray)) else tensor
