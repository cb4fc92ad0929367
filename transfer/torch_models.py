"""Live torch modules as adapters: list weighted modules, read and write them through the state
dict, snapshot and restore (copies), freeze by name, save and reload."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from transfer import _frameworks, kinds
from transfer.adapter import Closing, Runnable, Snapshot
from transfer.buffers import Allocate, aligned_copy
from transfer.errors import CheckpointError, IncompatibleWeightsError
from transfer.formats import SAFETENSORS, output_format
from transfer.kinds import LayerSpec
from transfer.layers import TORCH_IGNORED, TensorSpec, torch_sort_key
from transfer.output import atomic_write
from transfer.written import WrittenStateDict, open_written_state


def own_tensors(module: Any, counters: bool = False) -> dict[str, Any]:
    """A module's own parameters and buffers (not its children's), canonical order; the
    `num_batches_tracked` counter only with `counters`."""
    found = dict(module.named_parameters(recurse=False))
    found.update((n, b) for n, b in module.named_buffers(recurse=False)
                 if b is not None and (counters or n not in TORCH_IGNORED))
    return dict(sorted(found.items(), key=lambda item: torch_sort_key(item[0])))


def layer_tensors(module: Any, counters: bool = False) -> dict[str, Any]:
    """A layer's tensors: a module's own, or, for a separable conv written as a module of two
    convs, both children's (`dw.weight`, `pw.weight`, `pw.bias`), depthwise first; an attention
    module's own with its output projection's (`in_proj_weight`, ..., `out_proj.weight`)."""
    torch = _frameworks.torch()
    children = kinds.torch_separable_children(module, torch)
    if children is None:
        tensors = own_tensors(module, counters)
        merged = kinds.torch_merged_children(module, torch)
        if not merged:
            return tensors
        tensors.update((f"{child}.{name}", tensor) for child in merged
                       for name, tensor in own_tensors(module.get_submodule(child), counters).items())
        return dict(sorted(tensors.items(), key=lambda item: torch_sort_key(item[0])))
    return {f"{child}.{name}": tensor for child in children
            for name, tensor in own_tensors(module.get_submodule(child), counters).items()}


def layer_specs(module: Any) -> dict[str, LayerSpec]:
    """Every module that owns weights, by module path, in registration order; a separable conv
    pair is one layer (its module), not two."""
    torch = _frameworks.torch()
    specs: dict[str, LayerSpec] = {}
    inside_pair: set[str] = set()
    for name, sub in module.named_modules():
        if name in inside_pair:
            continue
        children = kinds.torch_separable_children(sub, torch) or kinds.torch_merged_children(sub, torch)
        if children:
            inside_pair.update(f"{name}.{child}" if name else child for child in children)
        tensors = layer_tensors(sub)
        if not tensors:
            continue
        kind = kinds.torch_module_kind(sub, torch)
        specs[name or "(root)"] = LayerSpec(
            name=name or "(root)", framework="torch", kind=kind,
            tensors=tuple(TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                          for n, t in tensors.items()),
            epsilon=float(sub.eps) if kind.carries_epsilon else None,
            epsilon_origin="the torch module" if kind.carries_epsilon else "",
            groups=kind.torch_groups(sub), class_name=type(sub).__name__,
        )
    return specs


def load_state_file(path: Path) -> dict[str, Any]:
    """A written `.pth`/`.pt`/`.safetensors` state dict, read safely (tensors only)."""
    from transfer.sources.torch_files import materialize, open_state_file

    entries = open_state_file(path)
    return {key: materialize(value) for key, value in entries.items()}


class TorchModuleWeights(Closing):
    """Reads and writes the weights of a live `torch.nn.Module` by module path."""

    framework = "torch"
    memory = None  # `assign` copies into the module's parameters

    def __init__(self, module: Any, description: str | None = None, path: Path | None = None,
                 preprocessing: str | None = None):
        self.model = module
        self.description = description or f"torch module {type(module).__name__}"
        self.path = path
        self.preprocessing = preprocessing
        self._specs: dict[str, LayerSpec] | None = None

    def layers(self) -> dict[str, LayerSpec]:
        if self._specs is None:
            self._specs = layer_specs(self.model)
        return self._specs

    def _module(self, name: str) -> Any:
        return self.model if name == "(root)" else self.model.get_submodule(name)

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        """Copies (aligned, `transfer.buffers`): a caller may hold them while the module changes."""
        return [aligned_copy(t.detach().cpu().numpy()) for t in layer_tensors(self._module(name)).values()]

    def view(self, name: str) -> list[np.ndarray]:
        return self.read(name)

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None:
        """Load the updates through `load_state_dict(strict=False)`, and check that every key
        we sent was taken (strict accounting without requiring the untouched ones)."""
        torch = _frameworks.torch()
        state: dict[str, Any] = {}
        for name, arrays in updates.items():
            prefix = "" if name == "(root)" else f"{name}."
            for spec, array in zip(self.layers()[name].tensors, arrays):
                contiguous = np.ascontiguousarray(array)
                # torch refuses to wrap read-only memory (a file-backed or reshaped view): copy it
                state[prefix + spec.name] = torch.from_numpy(contiguous if contiguous.flags.writeable
                                                             else contiguous.copy())
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise IncompatibleWeightsError(
                f"{self.description} did not accept the keys {sorted(result.unexpected_keys)}.")

    def snapshot(self, names: Iterable[str], spill_above: int | None = None) -> Snapshot:
        """Clones of every parameter and buffer of the named modules (BatchNorm's counter
        included), and every parameter's `requires_grad`."""
        snapshot = Snapshot([(p, bool(p.requires_grad)) for p in self.model.parameters()], spill_above)
        for name in names:
            copies = [t.detach().clone() for t in layer_tensors(self._module(name), True).values()]
            snapshot.put(name, copies, sum(t.nbytes for t in copies))
        return snapshot

    def restore(self, snapshot: Snapshot) -> None:
        torch = _frameworks.torch()
        with torch.no_grad():
            for name in snapshot.names():
                for live, saved in zip(layer_tensors(self._module(name), True).values(), snapshot.get(name)):
                    live.copy_(saved)
        for parameter, requires_grad in snapshot.flags:
            parameter.requires_grad_(requires_grad)

    def freeze(self, names: list[str]) -> None:
        for name in names:
            for tensor in layer_tensors(self._module(name)).values():
                if isinstance(tensor, _frameworks.torch().nn.Parameter):  # buffers never train
                    tensor.requires_grad_(False)

    def save(self, path: Path, check: Callable[[Path], None] | None = None) -> None:
        """`.safetensors` or `.pth`/`.pt` (a state dict), written atomically."""
        fmt, suffix = output_format(path, self.framework)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        if fmt is SAFETENSORS:
            from safetensors.torch import save_file

            atomic_write(path, suffix, lambda temporary: save_file(state, str(temporary)), check)
            return
        torch = _frameworks.torch()

        def write(temporary: Path) -> None:
            # A file object, not a path: torch names the zip's inner folder after a path's
            # stem, which would put our random temporary name into the bytes.
            with open(temporary, "wb") as file:
                torch.save(state, file)

        atomic_write(path, suffix, write, check)

    def written(self, path: Path) -> WrittenStateDict:
        """The state dict `save` just wrote, opened lazily and checked key by key against the
        module's (as a strict load would), without copying the module."""
        layer_keys = {name: [("" if name == "(root)" else f"{name}.") + key
                             for key in layer_tensors(self._module(name))] for name in self.layers()}
        return open_written_state(path, self.model.state_dict(), layer_keys, self.description)

    def reload(self, path: Path) -> TorchModuleWeights:
        """A copy of the module holding the state dict read back from `path` (strictly)."""
        clone = copy.deepcopy(self.model)
        try:
            clone.load_state_dict(load_state_file(path))
        except RuntimeError as exc:  # missing/unexpected keys or shapes: the file does not fit
            raise CheckpointError(f"{path}: does not fit {self.description}: "
                                  f"{str(exc).splitlines()[0]}") from exc
        return TorchModuleWeights(clone, f"{self.description}, reloaded from {path.name}", path=path)

    def runnable(self) -> Runnable:
        return self.model, ""
