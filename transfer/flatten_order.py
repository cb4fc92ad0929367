"""Where each input of a dense layer comes from in the feature map flattened before it,
established from the model itself, never assumed.

torch flattens an NCHW map in C, H, W order and Keras' Flatten in H, W, C order, but a model
may permute, transpose or reshape before flattening (face detectors and older classifiers do).
The order of a side is read from its code: the Keras graph between the map and the Dense layer
(Flatten, Permute, Reshape, ...) and the torch.fx trace between the map and the Linear module
(`permute`, `flatten`, `view`, ...) are run on an index-coded map, and the dense layer's input
then says, for each of its positions, which element of the map it holds. A side that cannot be
read this way (a weights file with no model, a subclassed Keras model, an untraceable forward)
is `NotEstablished`; a mapping's `flatten:` hint may then declare it, and the report calls it
unproven until the stack check covers it.

`FlattenOrder.positions[i]` is the H, W, C-order flat index of the map element at input `i`.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

HWC = tuple[int, int, int]


@dataclass(frozen=True)
class FlattenOrder:
    """One side's dense input as positions of the (H, W, C) map flattened before it."""

    hwc: HWC
    positions_bytes: bytes  # int64 positions; bytes keep the record hashable and comparable
    how: str  # what established (or declared) it, for the report
    established: bool  # read from the model; False: declared in the mapping (unproven)

    @staticmethod
    def of(hwc: HWC, positions: np.ndarray, how: str, established: bool = True) -> FlattenOrder:
        return FlattenOrder(tuple(int(d) for d in hwc), np.asarray(positions, np.int64).tobytes(),  # type: ignore[arg-type]
                            how, established)

    @staticmethod
    def standard(hwc: HWC, framework: str, how: str, established: bool) -> FlattenOrder:
        """A plain flatten of the map: torch's of NCHW (C, H, W order), Keras' Flatten (H, W, C)."""
        height, width, channels = hwc
        index = np.arange(height * width * channels).reshape(height, width, channels)
        ordered = index.transpose(2, 0, 1) if framework == "torch" else index
        return FlattenOrder.of(hwc, ordered.reshape(-1), how, established)

    @property
    def positions(self) -> np.ndarray:
        return np.frombuffer(self.positions_bytes, np.int64)

    @property
    def size(self) -> int:
        return prod(self.hwc)

    def describe(self) -> str:
        height, width, channels = self.hwc
        return f"{height}x{width}x{channels} map: {self.how}"


@dataclass(frozen=True)
class NotEstablished:
    """Why a side's order could not be read from a model."""

    reason: str


Order = FlattenOrder | None | NotEstablished  # None: the dense layer reads a vector, not a map


def row_permutation(source: FlattenOrder | None, target: FlattenOrder | None, features: int) -> np.ndarray | None:
    """Index array `p` such that the target's input `i` is the source's input `p[i]`; None when
    both read the same order (no permutation)."""
    source_positions = source.positions if source is not None else np.arange(features)
    target_positions = target.positions if target is not None else np.arange(features)
    if source_positions.size != features or target_positions.size != features:
        raise ValueError(f"the dense layer reads {features} inputs, but the flattened map has "
                         f"{source_positions.size} (source) and {target_positions.size} (target) elements")
    if np.array_equal(source_positions, target_positions):
        return None
    inverse = np.empty_like(source_positions)
    inverse[source_positions] = np.arange(features)
    return inverse[target_positions]


def permutation(values: np.ndarray, size: int) -> np.ndarray | None:
    """The values as int64 if they are exactly a permutation of 0..size-1, else None."""
    flat = np.asarray(values, np.float64).reshape(-1)
    if flat.size != size or not np.array_equal(flat, np.round(flat)):
        return None
    as_int = flat.astype(np.int64)
    if as_int.min(initial=0) < 0 or as_int.max(initial=-1) >= size or np.unique(as_int).size != size:
        return None
    return as_int


# ---- Keras: the functional graph between the map and the Dense layer ----------------------

_KERAS_REARRANGING = ("Flatten", "Permute", "Reshape")
# elementwise at inference: they commute with any reordering of the map's elements
_KERAS_TRANSPARENT = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                      "GaussianDropout", "AlphaDropout", "ActivityRegularization", "ReLU", "LeakyReLU", "ELU",
                      "Identity")
_ELEMENTWISE_ACTIVATIONS = ("linear", "relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh",
                            "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu", "mish", "softplus", "softsign",
                            "exponential")


def _keras_class(layer: Any, names: tuple[str, ...], keras: Any) -> bool:
    return isinstance(layer, tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n)))


def _keras_transparent(layer: Any, keras: Any) -> bool:
    if _keras_class(layer, _KERAS_TRANSPARENT, keras):
        return True
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        return name in _ELEMENTWISE_ACTIVATIONS
    return False


def _history(tensor: Any) -> tuple[Any, Any] | None:
    """(the layer that produced `tensor`, that call's input tensors) in a functional graph."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    layer, node_index = history[0], history[1]
    nodes = getattr(layer, "_inbound_nodes", [])
    if node_index >= len(nodes):
        return None
    return layer, list(nodes[node_index].input_tensors)


def keras_order(layer: Any, keras: Any) -> Order:
    """The Dense layer's input order, read from the functional graph."""
    try:
        dense_input = layer.input
    except (AttributeError, ValueError):  # called several times, or a subclassed model's layer
        return NotEstablished(f"the Keras layer '{layer.name}' has no single symbolic input (a subclassed "
                              "model, or a layer called more than once)")
    chain: list[Any] = []
    tensor = dense_input
    while True:
        found = _history(tensor)
        if found is None:
            return NotEstablished(f"the Keras graph in front of '{layer.name}' cannot be followed")
        producer, inputs = found
        if len(inputs) == 1 and _keras_class(producer, _KERAS_REARRANGING, keras):
            chain.append(producer)
        elif not (len(inputs) == 1 and _keras_transparent(producer, keras)):
            break
        tensor = inputs[0]
    if not chain:
        return None  # the Dense layer reads its input's last axis as it is
    shape = tuple(tensor.shape[1:])
    if None in shape:
        return NotEstablished(f"the map flattened before '{layer.name}' has an unknown size {shape} "
                              "(build the model with a fixed input size)")
    if len(shape) not in (1, 3):
        return NotEstablished(f"'{layer.name}' reads a flattened {len(shape)}-D tensor {shape}; only "
                              "images (H, W, C) are understood")
    channels_first = getattr(producer, "data_format", "channels_last") == "channels_first"
    own = tuple(int(d) for d in shape)
    size = prod(own)
    value = np.arange(size, dtype=np.float64).reshape(1, *own).astype(np.float32 if size < 2**24 else np.float64)
    for step in reversed(chain):
        value = step(value)
    result = permutation(np.asarray(keras.ops.convert_to_numpy(value)), size)
    if result is None:
        return NotEstablished(f"the layers between the map and '{layer.name}' do not only reorder it")
    if len(own) == 1:  # a vector reshaped and flattened back
        if np.array_equal(result, np.arange(size)):
            return None
        return NotEstablished(f"the layers in front of '{layer.name}' reorder a vector")
    if channels_first:  # the map is (C, H, W): express its indices in H, W, C order
        channels, height, width = own
        hwc: HWC = (height, width, channels)
        to_hwc = np.arange(size).reshape(height, width, channels).transpose(2, 0, 1).reshape(-1)
        result = to_hwc[result]
    else:
        hwc = (own[0], own[1], own[2])
    steps = ", ".join(type(s).__name__ + _keras_step_args(s) for s in reversed(chain))
    return FlattenOrder.of(hwc, result, f"read from the Keras graph (output of '{producer.name}', then {steps})")


def _keras_step_args(layer: Any) -> str:
    dims = getattr(layer, "dims", None) or getattr(layer, "target_shape", None)
    return f"({', '.join(map(str, dims))})" if dims else ""


# ---- torch: the fx trace between the map and the Linear module ------------------------------

_TORCH_METHODS = ("permute", "transpose", "flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze",
                  "movedim")
_TORCH_TRANSPARENT_METHODS = ("relu", "sigmoid", "tanh", "clone")
_TORCH_SIZE_METHODS = ("size", "dim")


def _torch_tables(torch: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]:
    nn, functional = torch.nn, torch.nn.functional
    rearranging_functions = (torch.flatten, torch.permute, torch.transpose, torch.reshape, torch.squeeze,
                             torch.unsqueeze, torch.movedim)
    transparent_functions = (functional.relu, torch.relu, functional.dropout, functional.gelu, functional.silu,
                             torch.sigmoid, torch.tanh, functional.relu6, functional.leaky_relu, functional.hardswish,
                             functional.elu)
    rearranging_modules = (nn.Flatten, nn.Unflatten)
    transparent_modules = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
                           nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                           nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.SELU, nn.CELU, nn.Softplus)
    return rearranging_functions, transparent_functions, rearranging_modules, transparent_modules


def _trace(model: Any, linear_name: str, torch: Any) -> Any:
    """fx graph of `model` with every module off the path to the Linear kept whole (a leaf):
    only the code around the Linear is traced, so control flow elsewhere does not matter."""
    ancestors = {""} | {".".join(linear_name.split(".")[:i]) for i in range(1, linear_name.count(".") + 2)}

    class PathTracer(torch.fx.Tracer):
        def is_leaf_module(self, module: Any, qualified_name: str) -> bool:
            return qualified_name not in ancestors or super().is_leaf_module(module, qualified_name)

    return PathTracer().trace(model)


def torch_order(model: Any, linear_name: str, hwc: HWC | None, features: int, torch: Any) -> Order:
    """The Linear module's input order, read from the torch.fx trace of the model's code. The map
    in front of it is taken as NCHW, torch's convention for images; its (H, W, C) comes from the
    other side (`hwc`), or is a 1x1 map of `features` channels when the other side reads a vector."""
    rearranging_functions, transparent_functions, rearranging_modules, transparent_modules = _torch_tables(torch)
    try:
        graph = _trace(model, linear_name, torch)
    except Exception as exc:  # noqa: BLE001  (fx raises many types on code it cannot follow: say why)
        return NotEstablished(f"torch.fx cannot trace {type(model).__name__}'s forward ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else ''})")
    calls = [n for n in graph.nodes if n.op == "call_module" and n.target == linear_name]
    if len(calls) != 1:
        return NotEstablished(f"the module '{linear_name}' is called {len(calls)} times in the forward")
    modules = dict(model.named_modules())
    chain: list[Any] = []
    passthrough: set[Any] = set()
    node = calls[0].args[0]
    while True:
        if not hasattr(node, "op"):
            return NotEstablished(f"the input of '{linear_name}' is not a traced tensor")
        module = modules.get(node.target) if node.op == "call_module" else None
        if (module is not None and isinstance(module, rearranging_modules)) or \
                (node.op == "call_method" and node.target in _TORCH_METHODS) or \
                (node.op == "call_function" and node.target in rearranging_functions):
            chain.append(node)
        elif (module is not None and isinstance(module, transparent_modules)) \
                or (node.op == "call_method" and node.target in _TORCH_TRANSPARENT_METHODS) \
                or (node.op == "call_function" and node.target in transparent_functions):
            passthrough.add(node)  # elementwise: the reorder is the same with or without it
            chain.append(node)
        else:
            break
        node = node.args[0]
    if not any(step not in passthrough for step in chain):
        return None  # the Linear reads its input's last axis as it is
    height, width, channels = hwc if hwc is not None else (1, 1, features)
    size = height * width * channels
    env: dict[Any, Any] = {node: torch.arange(size, dtype=torch.float64).reshape(1, channels, height, width)}
    try:
        for step in reversed(chain):
            env[step] = env[step.args[0]] if step in passthrough else _run_node(step, env, modules)
    except Exception as exc:  # noqa: BLE001  (the user's reshapes may not fit the other side's map: say so)
        return NotEstablished(f"the code between the map and '{linear_name}' does not run on a "
                              f"{channels}x{height}x{width} map ({type(exc).__name__}: {str(exc)[:160]})")
    result = permutation(env[chain[0]].numpy(), size)
    if result is None:
        return NotEstablished(f"the code between the map and '{linear_name}' does not only reorder a "
                              f"{channels}x{height}x{width} map into {features} inputs")
    # positions in the map's own (C, H, W) order -> H, W, C order
    to_hwc = np.arange(size).reshape(height, width, channels).transpose(2, 0, 1).reshape(-1)
    steps = ", ".join(_describe_node(n, modules) for n in reversed(chain) if n not in passthrough)
    where = f"output of '{node.target}'" if node.op == "call_module" else f"'{node.name}'"
    return FlattenOrder.of((height, width, channels), to_hwc[result],
                           f"read from the torch.fx trace ({where}, taken as NCHW, then {steps})")


def _value(arg: Any, env: dict[Any, Any], modules: dict[str, Any]) -> Any:
    """An argument of a traced call: a constant, a value computed in `env`, or a size of one."""
    if isinstance(arg, (list, tuple)):
        return type(arg)(_value(a, env, modules) for a in arg)
    if not hasattr(arg, "op"):
        return arg
    if arg in env:
        return env[arg]
    if arg.op == "call_method" and arg.target in _TORCH_SIZE_METHODS:
        return _run_node(arg, env, modules)
    if arg.op == "call_function" and getattr(arg.target, "__name__", "") == "getitem":
        return _run_node(arg, env, modules)
    if arg.op == "call_function" and getattr(arg.target, "__name__", "") == "getattr":
        return _run_node(arg, env, modules)
    raise ValueError(f"'{arg.name}' depends on more than the flattened map")


def _run_node(node: Any, env: dict[Any, Any], modules: dict[str, Any]) -> Any:
    args = [_value(a, env, modules) for a in node.args]
    kwargs = {k: _value(v, env, modules) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_module":
        return modules[node.target](*args, **kwargs)
    raise ValueError(f"cannot evaluate the traced node '{node.name}' ({node.op})")


def _describe_node(node: Any, modules: dict[str, Any]) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    constants = [a for a in node.args[1:] if isinstance(a, (int, tuple, list))]
    return f"{name}({', '.join(map(str, constants))})" if constants else str(name)
