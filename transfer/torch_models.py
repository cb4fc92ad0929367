"""Live torch modules: list weighted modules, read and write them through the state dict."""

from __future__ import annotations

from typing import Any

import numpy as np

from transfer import _frameworks
from transfer.errors import IncompatibleWeightsError
from transfer.layers import TORCH_IGNORED, Kind, LayerSpec, TensorSpec, torch_sort_key


def module_kind(module: Any) -> Kind:
    nn = _frameworks.torch().nn
    if isinstance(module, nn.ConvTranspose2d):
        return "conv2d_transpose"
    if isinstance(module, nn.Conv2d):
        if module.groups == 1:
            return "conv2d"
        if module.groups == module.in_channels:
            return "depthwise_conv2d"
        return "other"  # grouped convolutions have no Keras Conv2D counterpart here
    if isinstance(module, nn.Linear):
        return "dense"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batchnorm"
    return "other"


def _own_tensors(module: Any) -> dict[str, Any]:
    found = dict(module.named_parameters(recurse=False))
    found.update((n, b) for n, b in module.named_buffers(recurse=False)
                 if b is not None and n not in TORCH_IGNORED)
    return dict(sorted(found.items(), key=lambda item: torch_sort_key(item[0])))


def layer_specs(module: Any) -> dict[str, LayerSpec]:
    specs: dict[str, LayerSpec] = {}
    for name, sub in module.named_modules():
        tensors = _own_tensors(sub)
        if not tensors:
            continue
        kind = module_kind(sub)
        specs[name or "(root)"] = LayerSpec(
            name=name or "(root)", framework="torch", kind=kind,
            tensors=tuple(TensorSpec(n, tuple(t.shape), str(t.dtype).removeprefix("torch."))
                          for n, t in tensors.items()),
            epsilon=float(sub.eps) if kind == "batchnorm" else None,
            epsilon_origin="the torch module" if kind == "batchnorm" else "",
        )
    return specs


class TorchModuleWeights:
    """Reads and writes the weights of a live `torch.nn.Module` by module path."""

    framework = "torch"

    def __init__(self, module: Any, description: str | None = None):
        self.model = module
        self.description = description or f"torch module {type(module).__name__}"
        self._specs: dict[str, LayerSpec] | None = None

    def layers(self) -> dict[str, LayerSpec]:
        if self._specs is None:
            self._specs = layer_specs(self.model)
        return self._specs

    def _module(self, name: str) -> Any:
        return self.model if name == "(root)" else self.model.get_submodule(name)

    def read(self, name: str) -> list[np.ndarray]:
        return [t.detach().cpu().numpy() for t in _own_tensors(self._module(name)).values()]

    def assign(self, updates: dict[str, list[np.ndarray]]) -> None:
        """Load the updates through `load_state_dict(strict=False)`, and check that every key
        we sent was taken (strict accounting without requiring the untouched ones)."""
        torch = _frameworks.torch()
        state: dict[str, Any] = {}
        for name, arrays in updates.items():
            prefix = "" if name == "(root)" else f"{name}."
            for spec, array in zip(self.layers()[name].tensors, arrays):
                state[prefix + spec.name] = torch.from_numpy(np.ascontiguousarray(array))
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise IncompatibleWeightsError(
                f"{self.description} did not accept the keys {sorted(result.unexpected_keys)}.")

    def freeze(self, names: list[str]) -> None:
        for name in names:
            for parameter in self._module(name).parameters(recurse=False):
                parameter.requires_grad_(False)
