"""ONNX graphs written by torch.onnx.export, as a source: every layer kind grouped from the
node that consumes its initializers, PyTorch layouts kept (Gemm/MatMul transposed where ONNX
stores (in, out)), BatchNorm's epsilon from the node, and BatchNorm folded into the
convolutions said in the report. Proven against the exporting torch module."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import transfer
from helpers.checkpoints import max_rel_diff, tiny_keras, tiny_torch
from transfer.errors import CheckpointError, MappingError

pytest.importorskip("onnx", reason="pip install onnx (in the test extra)")


def export(model: Any, path: Path, fold: bool) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter announces its own deprecation
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                          do_constant_folding=fold, training=torch.onnx.TrainingMode.EVAL)
    return path


def spec(path: Path, target: str, layers: dict) -> dict:
    return {"format": 1, "source": {"framework": "torch", "weights": str(path)},
            "target": {"framework": target, "model": "live"}, "layers": layers}


def test_unfolded_export_into_torch_gives_the_module_back(tmp_path: Path) -> None:
    import torch

    source = tiny_torch(1)
    path = export(source, tmp_path / "tiny.onnx", fold=False)
    layers = {"c1": "c1", "bn": "bn", "c2": "c2", "fc": "fc"}
    model, report = transfer.transfer_weights(spec(path, "torch", layers), target=tiny_torch(2), strict=True, verify=True)
    assert report.ok and [t.kind for t in report.transferred] == ["conv2d", "batchnorm", "conv2d", "dense"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_unfolded_export_into_keras_is_proven_per_layer(tmp_path: Path) -> None:
    import torch

    source = tiny_torch(1)
    path = export(source, tmp_path / "tiny.onnx", fold=False)
    layers = {"c1": "c1", "bn": {"target": "bn", "epsilon": "rescale"}, "c2": "c2", "fc": "fc"}
    model, report = transfer.transfer_weights(spec(path, "keras", layers), target=tiny_keras(2), verify=True)
    assert report.ok and {c.method for c in report.verification[0].layers} >= {"conv2d on a probe, torch vs keras"}
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    with torch.no_grad():
        expected = source(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert max_rel_diff(np.asarray(model(x)), expected) <= 1e-4  # the whole network, Flatten order included


def test_folded_batchnorm_is_said_and_the_folded_convs_compute_conv_plus_bn(tmp_path: Path) -> None:
    import torch

    source = tiny_torch(1)
    path = export(source, tmp_path / "folded.onnx", fold=True)
    with pytest.raises(MappingError, match="no BatchNormalization node: exported with BatchNorm folded"):
        transfer.transfer_weights(spec(path, "torch", {"c1": "c1", "bn": "bn"}), target=tiny_torch(2))
    plain = torch.nn.Sequential()
    plain.add_module("c1", torch.nn.Conv2d(3, 4, 3))
    plain.add_module("c2", torch.nn.Conv2d(4, 5, 3))
    plain.add_module("flat", torch.nn.Flatten())
    plain.add_module("fc", torch.nn.Linear(80, 3))
    model, report = transfer.transfer_weights(spec(path, "torch", {"c1": "c1", "c2": "c2", "fc": "fc"}),
                                              target=plain, strict=True)
    assert "folded into the convolutions" in report.source
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert max_rel_diff(model(x), source(x)) <= 1e-5


def test_matmul_and_gemm_without_transb_are_transposed(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1, w2, b2 = (rng.normal(size=s).astype("float32") for s in ((6, 4), (4, 3), (3,)))  # (in, out)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="/proj/MatMul"),
         helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], name="/head/Gemm", transB=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph), str(path))
    from transfer.sources.onnx_files import OnnxSource

    source = OnnxSource(path)
    assert list(source.layers()) == ["proj", "head"]
    assert np.array_equal(source.read("proj")[0], w1.T) and np.array_equal(source.read("head")[0], w2.T)
    assert source.layers()["head"].shapes == [[3, 4], [3]]


def test_a_damaged_onnx_file_is_exit_5(tmp_path: Path) -> None:
    path = export(tiny_torch(1), tmp_path / "tiny.onnx", fold=False)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=f"{cut}: not a readable ONNX model"):
        transfer.transfer_weights(spec(cut, "torch", {"c1": "c1"}), target=tiny_torch(2))


def test_verify_runs_the_onnx_graph_where_onnxruntime_is_installed(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    path = export(tiny_torch(1), tmp_path / "tiny.onnx", fold=False)
    layers = {"c1": "c1", "bn": {"target": "bn", "epsilon": "rescale"}, "c2": "c2", "fc": "fc"}
    _, report = transfer.transfer_weights(spec(path, "keras", layers), target=tiny_keras(2), verify=True)
    stack = report.verification[0].stack
    assert stack is not None and stack.target == "fc" and stack.ok and stack.rel_diff <= 1e-4
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    _, report = transfer.transfer_weights(spec(path, "keras", layers), target=tiny_keras(2), verify=True)
    assert report.verification[0].stack is None and "onnxruntime is not installed" in report.verification[0].stack_note
