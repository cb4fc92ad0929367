"""Checkpoints the tests make themselves, in the real formats, from seeded random models.

No test touches the network: every "pretrained" model here is built with `weights=None` and
filled with seeded random values (biases and BatchNorm statistics included, so a tensor sent
to the wrong place changes the numbers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

# Frameworks are imported inside the functions that need them, so a test imports only what it
# tests; conftest imports `transfer` first, which makes any later import order safe.


def randomize_keras(model: Any, seed: int) -> Any:
    """He-scaled kernels, small random biases, BatchNorm statistics of varied scale."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape, name = tuple(weight.shape), weight.name
            if name in ("kernel", "depthwise_kernel") or len(shape) >= 2:
                fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
                values.append(rng.normal(0, np.sqrt(2.0 / fan_in), shape))
            elif name == "moving_variance":
                values.append(rng.uniform(1e-4, 2.0, shape))  # small variances expose epsilon bugs
            elif name == "gamma":
                values.append(rng.uniform(0.5, 1.5, shape))
            else:
                values.append(rng.normal(0, 0.1, shape))
        if values:
            layer.set_weights([v.astype("float32") for v in values])
    return model


def randomize_torch(module: Any, seed: int) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.ConvTranspose2d)):
                fan_in = sub.weight[0].numel()
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if sub.bias is not None:
                    sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator) * 0.1)
            elif isinstance(sub, torch.nn.modules.batchnorm._BatchNorm):
                sub.weight.copy_(torch.rand(sub.weight.shape, generator=generator) + 0.5)
                sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator) * 0.1)
                sub.running_mean.copy_(torch.randn(sub.running_mean.shape, generator=generator) * 0.1)
                sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=generator) * 2 + 1e-4)
                sub.num_batches_tracked.fill_(1000)
            elif isinstance(sub, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                sub.weight.copy_(torch.rand(sub.weight.shape, generator=generator) + 0.5)
                sub.bias.copy_(torch.randn(sub.bias.shape, generator=generator) * 0.1)
            for name, parameter in sub.named_parameters(recurse=False):
                if name not in ("weight", "bias"):  # ConvNeXt's layer scale (1e-6 at init: it would hide its block)
                    parameter.copy_(torch.rand(parameter.shape, generator=generator) + 0.5)
    return module.eval()


def keras_vgg16(include_top: bool = False, seed: int = 0, **kwargs: Any) -> Any:
    import keras

    return randomize_keras(keras.applications.VGG16(weights=None, include_top=include_top, **kwargs), seed)


def torchvision_vgg16(batchnorm: bool, seed: int = 0) -> Any:
    import torch
    import torchvision

    torch.manual_seed(seed)
    builder = torchvision.models.vgg16_bn if batchnorm else torchvision.models.vgg16
    return randomize_torch(builder(weights=None), seed)


def write_legacy_h5(model: Any, path: Path, style: str = "keras2") -> Path:
    """Keras' legacy weights layout, as in `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`:
    root attrs `layer_names`, `backend`, `keras_version`; a group per layer (weightless ones
    too) with attr `weight_names`. `keras1` names weights `block1_conv1_W_1:0` like the 2016
    file; `keras2` names them `block1_conv1/kernel:0` in nested groups."""
    short = {"kernel": "W", "bias": "b"}
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        file.attrs["backend"] = b"tensorflow"
        file.attrs["keras_version"] = b"2.2.4" if style == "keras2" else b"1.1.0"
        for layer in model.layers:
            group = file.create_group(layer.name)
            names = []
            # a nested model (ConvNeXt's stem) keeps its layers' weights in its own group, named
            # by the inner layer (`stem_conv/kernel:0`), as tf.keras wrote them
            owners = [(inner.name, inner) for inner in layer.layers] if hasattr(layer, "layers") else [(layer.name, layer)]
            for owner_name, owner in owners:
                for weight in owner.weights:
                    if style == "keras2":
                        name = f"{owner_name}/{weight.name}:0"
                    else:
                        name = f"{owner_name}_{short.get(weight.name, weight.name)}_1:0"
                    group.create_dataset(name, data=np.asarray(weight))
                    names.append(name.encode())
            group.attrs["weight_names"] = names
    return path


def torch_state_dict_without_counters(module: Any) -> dict[str, Any]:
    """Like torchvision's 2017 `vgg16_bn-6c64b313.pth`: no `num_batches_tracked` keys."""
    return {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


def max_rel_diff(a: Any, b: Any) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def tiny_keras(seed: int) -> Any:
    """conv -> BatchNorm -> conv -> Flatten -> dense on 8x8x3, every tensor random (seeded)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, name="c1"),
                              layers.BatchNormalization(name="bn"), layers.Conv2D(5, 3, name="c2"),
                              layers.Flatten(name="flat"), layers.Dense(3, name="fc")], name=f"tiny{seed}")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.uniform(0.1, 1.0, w.shape).astype("float32") for w in layer.weights])
    return model


def tiny_torch(seed: int) -> Any:
    """The same network in torch, BatchNorm statistics and counter set."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential()
    model.add_module("c1", torch.nn.Conv2d(3, 4, 3))
    model.add_module("bn", torch.nn.BatchNorm2d(4))
    model.add_module("c2", torch.nn.Conv2d(4, 5, 3))
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("fc", torch.nn.Linear(5 * 4 * 4, 3))
    with torch.no_grad():
        for tensor in [*model.parameters(), model.bn.running_mean]:
            tensor.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.1, 2)
        model.bn.num_batches_tracked.fill_(7 + seed)
    return model.eval()


def raising_factory(seed: int) -> Any:
    """A user's `--target-factory` with a bug of its own (exit 8, not 1)."""
    raise ValueError(f"no decoder for seed {seed}")
