"""ONNX graphs as a source, read with the `onnx` package (no runtime needed for weights).

A weighted layer is a node whose weights are initializers: Conv and ConvTranspose (weight,
bias), Gemm and MatMul (weight, bias), BatchNormalization (scale, offset, mean, variance, with
the node's epsilon). ONNX keeps PyTorch's layouts (Conv OIHW, Gemm with transB=1 is
(out, in)), so the source presents itself as a torch one; a Gemm with transB=0 and a MatMul
store (in, out) and are transposed when read. A layer is named after its weight initializer
(`features.0.weight` -> `features.0`), else after its node (`/features/features.0/Conv` ->
`features.0`), which is what torch.onnx.export writes. The whole protobuf is loaded (the format
offers no lazy read).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from transfer import kinds
from transfer.adapter import ReadOnlyWeights
from transfer.buffers import Allocate
from transfer.errors import CheckpointError, FrameworkError
from transfer.flatten_order import HWC, Order
from transfer.kinds import LayerSpec
from transfer.layers import TensorSpec

TORCH_NAMES = ("weight", "bias", "running_mean", "running_var")


class OnnxSource(ReadOnlyWeights):
    framework = "torch"

    def __init__(self, path: Path, preprocessing: str | None = None):
        self.path = path
        self._folder = path.parent
        self.preprocessing = preprocessing
        loaded = _load(path)
        graph = loaded.graph
        check_external_data(path, graph)
        initializers = {tensor.name: tensor for tensor in graph.initializer}
        self._arrays: dict[str, list[Any]] = {}  # layer -> [(initializer, transpose?)]
        self._outputs: dict[str, str] = {}  # layer -> the node output holding its result
        self._specs: dict[str, LayerSpec] = {}
        self._nodes: dict[str, Any] = {}  # layer -> its node
        ops = set()
        for node in graph.node:
            ops.add(node.op_type)
            found = _weights_of(node, initializers, path)
            if found is None:
                continue
            kind, inputs, epsilon = found
            name = _layer_name(node, inputs[0][0].name, self._specs)
            self._arrays[name] = inputs
            self._outputs[name] = node.output[0]
            self._nodes[name] = node
            self._specs[name] = LayerSpec(
                name=name, framework="torch", kind=kind,
                tensors=tuple(TensorSpec(TORCH_NAMES[i], _shape(t, transpose), _dtype(t))
                              for i, (t, transpose) in enumerate(inputs)),
                epsilon=epsilon, epsilon_origin=f"the ONNX node {node.name or node.op_type}" if epsilon else "")
        self._graph, self._opsets = graph, list(loaded.opset_import)
        self.runnable_factory = lambda: _runnable(path, self._outputs)
        folded = "Conv" in ops and "BatchNormalization" not in ops
        self.description = (f"ONNX graph {path}" + (" (no BatchNormalization node: exported with BatchNorm "
                                                     "folded into the convolutions?)" if folded else ""))

    def layers(self) -> dict[str, LayerSpec]:
        return self._specs

    def dense_input_order(self, name: str, hwc: HWC | None, features: int) -> Order:
        """How the graph orders a dense layer's input: the nodes between the map and the Gemm,
        run on an index-coded map (`transfer.sources.onnx_flatten`)."""
        from transfer.sources.onnx_flatten import onnx_dense_order

        return onnx_dense_order(self._graph, self._opsets, self._nodes[name], hwc, features)

    def read(self, name: str, allocate: Allocate | None = None) -> list[np.ndarray]:
        from onnx import numpy_helper

        arrays = []
        for tensor, transpose in self._arrays[name]:
            try:  # external data lives beside the graph, whatever the working directory
                array = numpy_helper.to_array(tensor, base_dir=str(self._folder))
            except Exception as exc:
                raise CheckpointError(f"{self.path}: cannot read initializer '{tensor.name}' of layer "
                                      f"'{name}': {type(exc).__name__}: {exc}") from exc
            arrays.append(np.ascontiguousarray(array.T) if transpose else array)
        return arrays


class OnnxGraph:
    """The ONNX graph, run with onnxruntime, as the source model of the stack check: the output
    of any weighted layer's node, on an NHWC probe (transposed to the graph's NCHW)."""

    def __init__(self, path: Path, outputs: dict[str, str]):
        self.path, self.layer_outputs = path, outputs

    @property
    def layer_order(self) -> list[str]:
        return list(self.layer_outputs)

    def input_shape(self) -> list[int | None]:
        """(N, C, H, W) of the graph's input; None where the export made an axis dynamic."""
        graph = _load(self.path).graph
        initializers = {t.name for t in graph.initializer}
        first = next(i for i in graph.input if i.name not in initializers)
        return [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]

    def outputs(self, names: list[str], probe: np.ndarray) -> list[np.ndarray]:
        import onnxruntime
        from onnx import TensorProto, helper

        model = _load(self.path)
        check_external_data(self.path, model.graph)
        if any(_external_location(t) is not None for t in model.graph.initializer):
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, str(self.path.parent))
        graph = model.graph
        wanted = [self.layer_outputs[name] for name in names]
        known = {o.name for o in graph.output}
        graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in wanted if o not in known)
        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        initializers = {t.name for t in graph.initializer}
        feed = next(i.name for i in graph.input if i.name not in initializers)
        results = session.run(wanted, {feed: np.ascontiguousarray(probe.transpose(0, 3, 1, 2))})
        return [r.transpose(0, 2, 3, 1) if r.ndim == 4 else r for r in results]


def _external_location(tensor: Any) -> str | None:
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    return next((entry.value for entry in tensor.external_data if entry.key == "location"), "")


def check_external_data(path: Path, graph: Any) -> None:
    """Every initializer stored outside the graph must name a file inside the graph's own folder
    (`model.onnx.data`, as torch's exporter writes it): an absolute path, `..` or a link out of
    the folder is refused before anything is read."""
    folder = path.parent.resolve()
    for tensor in graph.initializer:
        location = _external_location(tensor)
        if location is None:
            continue
        relative = Path(location)
        if not location or relative.is_absolute() or ".." in relative.parts:
            raise CheckpointError(f"{path}: initializer '{tensor.name}' keeps its data at '{location}', outside the "
                                  "graph's folder; only files beside the graph are read.")
        resolved = (folder / relative).resolve()
        if not resolved.is_relative_to(folder):
            raise CheckpointError(f"{path}: initializer '{tensor.name}' keeps its data in '{location}', a link to "
                                  f"{resolved}, outside the graph's folder; only files beside the graph are read.")
        if not resolved.is_file():
            raise CheckpointError(f"{path}: initializer '{tensor.name}' keeps its data in '{location}', which is "
                                  f"not a file beside the graph (torch writes it as {path.name}.data: copy it "
                                  "along with the graph).")


def _runnable(path: Path, outputs: dict[str, str]) -> tuple[Any, str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return None, "onnxruntime is not installed: each layer is checked on its own (pip install onnxruntime)"
    return OnnxGraph(path, outputs), ""


def _load(path: Path) -> Any:
    if importlib.util.find_spec("onnx") is None:
        raise FrameworkError("reading ONNX files needs the Python package 'onnx' (pip install onnx); "
                             "the weights are read without a runtime, and --verify runs the graph with "
                             "onnxruntime where it is installed.")
    import onnx

    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: a damaged file
        raise CheckpointError(f"{path}: not a readable ONNX model (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _weights_of(node: Any, initializers: dict[str, Any],
                path: Path) -> tuple[kinds.LayerKind, list[Any], float | None] | None:
    """(kind, [(initializer, transpose)], epsilon) of a weighted node; None for any other."""
    stored = [initializers.get(name) for name in node.input[1:]]
    if not stored or stored[0] is None:
        return None  # no weight, or one computed at run time: not a layer to move
    present = [(t, False) for t in stored if t is not None]
    op = node.op_type
    kind = kinds.onnx_node_kind(op, lambda name, default: _attribute(node, name, default),
                                [tuple(int(d) for d in t.dims) for t, _ in present])
    if kind is None:
        return None
    if op == "Gemm":  # ONNX stores a Gemm's B as (in, out) unless transB
        scaled = _attribute(node, "alpha", 1.0) != 1.0 or _attribute(node, "beta", 1.0) != 1.0
        if _attribute(node, "transA", 0) or scaled:
            raise CheckpointError(f"{path}: Gemm node '{node.name}' has transA, alpha or beta set: not a plain "
                                  "dense layer, so its weights are not moved.")
        return kind, [(stored[0], not _attribute(node, "transB", 0))] + present[1:], None
    if op == "MatMul":
        return kind, [(stored[0], True)], None
    if kind is kinds.BATCHNORM:
        # ONNX stores epsilon as float32: 1e-5 reads back as 9.9999997e-06; take the shortest
        # decimal that float32 value stands for, which is what the exporter was given
        epsilon = float(np.format_float_positional(np.float32(_attribute(node, "epsilon", 1e-5)), unique=True))
        return kind, present, epsilon
    return kind, present, None


def _layer_name(node: Any, weight: str, taken: dict[str, Any]) -> str:
    if weight.endswith(".weight"):
        name = weight[: -len(".weight")]
    else:
        parts = [part for part in node.name.split("/") if part]
        name = parts[-2] if len(parts) >= 2 else (node.name or weight)
    unique, count = name, 1
    while unique in taken:  # a module called twice: each call is its own layer
        count += 1
        unique = f"{name}#{count}"
    return unique


def _shape(tensor: Any, transpose: bool) -> tuple[int, ...]:
    dims = tuple(int(d) for d in tensor.dims)
    return dims[::-1] if transpose else dims


def _dtype(tensor: Any) -> str:
    from onnx import helper

    return str(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)))
